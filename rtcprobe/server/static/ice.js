// rtcprobe: ICE server and URL helpers of rtcprobe.js (pure: no DOM, no WebRTC).

/** The TURN transports a test can be limited to (`runPreflight(token, {transport})`). */
export const TRANSPORTS = ['udp', 'tcp', 'tls'];

/**
 * The transport a TURN URL reaches its server over (RFC 7065): `turns:` is TLS, `turn:` is UDP
 * unless `?transport=tcp`. null for anything that is not a TURN URL (a STUN URL, say).
 */
export function turnTransport(url) {
  if (typeof url !== 'string') return null;
  const m = /^(turns?):([^?]*)(\?(.*))?$/i.exec(url.trim());
  if (!m) return null;
  if (m[1].toLowerCase() === 'turns') return 'tls';
  const params = new URLSearchParams(m[4] ?? '');
  return (params.get('transport') ?? 'udp').toLowerCase() === 'tcp' ? 'tcp' : 'udp';
}

/** The distinct TURN transports of a list of RTCIceServer dicts, in TRANSPORTS order. */
export function transportsOf(iceServers) {
  const seen = new Set();
  for (const server of iceServers ?? []) {
    for (const url of [].concat(server.urls ?? [])) {
      const t = turnTransport(url);
      if (t) seen.add(t);
    }
  }
  return TRANSPORTS.filter((t) => seen.has(t));
}

/**
 * The ICE servers with only the TURN URLs of `transport` (STUN URLs are dropped too: a test of one
 * transport gathers relay candidates of that transport and nothing else). Without `transport`
 * the list is returned as given. Servers left with no URL are left out.
 */
export function filterIceServers(iceServers, transport) {
  const servers = (iceServers ?? []).map((s) => ({ ...s, urls: [].concat(s.urls ?? []) }));
  if (transport == null) return servers;
  return servers
    .map((s) => ({ ...s, urls: s.urls.filter((url) => turnTransport(url) === transport) }))
    .filter((s) => s.urls.length > 0);
}

/**
 * The signaling WebSocket URL. `url` may be the WebSocket URL itself (`ws://host:port/signaling`)
 * or the server's HTTP address (`https://probe.example.com`, which becomes
 * `wss://probe.example.com/signaling`); without it, the server at `base` (the URL rtcprobe.js was
 * loaded from) is used.
 */
export function signalingUrl(url, base) {
  const u = new URL(url ?? '/signaling', base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError(`url must be a ws:, wss:, http: or https: URL, got ${u.protocol}`);
  }
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/signaling';
  u.hash = '';
  return u.href;
}
