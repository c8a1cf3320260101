// rtcprobe: the browser's getStats() -> the core's `stats` observation (docs/browser.md#the-stats-mapping).
//
// Pure: no DOM, no WebRTC, no clock. It takes the two RTCStatsReports (or anything iterable over
// stat dictionaries: a Map, an array) and returns the `sample` object of the observation codec,
// in SI units (seconds, bytes, fractions 0..1). Browsers already report jitter and round-trip
// times in seconds and fractionLost as 0..1, so nothing is rescaled; what is done here is choosing
// entries, summing counters, and dropping values the codec would refuse.
//
//   publisher  outbound-rtp        packetsSent, bytesSent                  -> audioOut / videoOut
//   publisher  remote-inbound-rtp  roundTripTime, jitter, fractionLost,
//                                  packetsLost, packetsReceived            -> remoteRtt, remoteJitter, ...
//   publisher  selected pair       availableOutgoingBitrate                -> videoOut (else audioOut).availableBps
//   subscriber inbound-rtp         packetsReceived, packetsLost,
//                                  bytesReceived, jitter                   -> audioIn / videoIn
//   subscriber selected pair       currentRoundTripTime                    -> candidatePairRtt
//   subscriber local/remote-candidate                                      -> iceCandidates, selectedPair
//
// Twilio Video's preflight reads the candidates and the selected pair from the receiving peer
// connection; so do we. Several streams of one kind: counters are summed, gauges take the worst.

/** Counters the codec accepts: non-negative integers no larger than JavaScript counts exactly. */
const MAX_COUNTER = Number.MAX_SAFE_INTEGER;
const CANDIDATE_TYPES = ['host', 'srflx', 'prflx', 'relay'];
const PROTOCOLS = ['udp', 'tcp'];
const RELAY_PROTOCOLS = ['udp', 'tcp', 'tls'];

/** The stat dictionaries of a report: an RTCStatsReport or Map (values), an array, or a plain object. */
export function statsList(report) {
  if (report == null) return [];
  if (Array.isArray(report)) return report;
  if (typeof report.values === 'function') return Array.from(report.values());
  return Object.values(report);
}

function isNumber(x) {
  return typeof x === 'number' && Number.isFinite(x);
}

/** A gauge the codec accepts (finite, >= 0, <= high), else null. */
function gauge(x, high = Infinity) {
  return isNumber(x) && x >= 0 && x <= high ? x : null;
}

/** A cumulative counter as a non-negative integer (a negative loss count, from duplicates, is 0). */
function counter(x) {
  if (!isNumber(x)) return 0;
  return Math.min(MAX_COUNTER, Math.max(0, Math.round(x)));
}

function sum(stats, key) {
  return counter(stats.reduce((acc, s) => acc + (isNumber(s[key]) ? s[key] : 0), 0));
}

function worst(values, high = Infinity) {
  const ok = values.map((v) => gauge(v, high)).filter((v) => v !== null);
  return ok.length ? Math.max(...ok) : null;
}

function entries(list, type, kind) {
  return list.filter((s) => s && s.type === type && (s.kind ?? s.mediaType) === kind);
}

/** The selected candidate pair of a report: the transport's selectedCandidatePairId (the
 *  standard), else a pair flagged `selected` (Firefox), else null. */
export function selectedCandidatePair(list) {
  const pairs = list.filter((s) => s && s.type === 'candidate-pair');
  const ids = list.filter((s) => s && s.type === 'transport' && s.selectedCandidatePairId)
    .map((s) => s.selectedCandidatePairId);
  return pairs.find((p) => ids.includes(p.id)) ?? pairs.find((p) => p.selected === true) ?? null;
}

/** The publisher's view of its sent `kind` stream(s); null when it sends none. */
export function outbound(publisher, kind, availableBps = null) {
  const sent = entries(publisher, 'outbound-rtp', kind);
  if (!sent.length) return null;
  const remote = entries(publisher, 'remote-inbound-rtp', kind);
  const lost = remote.filter((r) => isNumber(r.packetsLost));
  return {
    packetsSent: sum(sent, 'packetsSent'),
    bytesSent: sum(sent, 'bytesSent'),
    remoteRtt: worst(remote.map((r) => r.roundTripTime)),
    remoteJitter: worst(remote.map((r) => r.jitter)),
    remoteFractionLost: worst(remote.map((r) => r.fractionLost), 1),
    remotePacketsLost: lost.length ? sum(lost, 'packetsLost') : null,
    availableBps: gauge(availableBps),
  };
}

/** The subscriber's view of its received `kind` stream(s); null before there is one. */
export function inbound(subscriber, kind) {
  const got = entries(subscriber, 'inbound-rtp', kind);
  if (!got.length) return null;
  return {
    packetsReceived: sum(got, 'packetsReceived'),
    packetsLost: sum(got, 'packetsLost'),
    bytesReceived: sum(got, 'bytesReceived'),
    jitter: worst(got.map((s) => s.jitter)),
  };
}

function pick(stat, keys, type) {
  for (const key of keys) {
    if (key in stat && typeof stat[key] === type) return stat[key];
  }
  return undefined;
}

/** One candidate in the report's iceCandidateStats shape, or null when the browser hides a field
 *  the shape requires (an mDNS-obfuscated address, say): a candidate is left out, never invented. */
export function candidateStats(stat) {
  const c = {
    transportId: pick(stat, ['transportId'], 'string'),
    candidateType: pick(stat, ['candidateType'], 'string'),
    port: pick(stat, ['port', 'portNumber'], 'number'),
    address: pick(stat, ['address', 'ip', 'ipAddress'], 'string'),
    priority: pick(stat, ['priority'], 'number'),
    protocol: pick(stat, ['protocol', 'transport'], 'string'),
    url: pick(stat, ['url'], 'string') ?? null,
    relayProtocol: pick(stat, ['relayProtocol'], 'string') ?? null,
  };
  if (c.transportId === undefined || c.address === undefined) return null;
  if (!CANDIDATE_TYPES.includes(c.candidateType)) return null;
  if (!Number.isInteger(c.port) || c.port < 0 || c.port > 65535) return null;
  if (!Number.isInteger(c.priority) || c.priority < 0 || c.priority > 2 ** 32 - 1) return null;
  c.protocol = typeof c.protocol === 'string' ? c.protocol.toLowerCase() : c.protocol;
  if (!PROTOCOLS.includes(c.protocol)) return null;
  if (c.relayProtocol !== null) {
    c.relayProtocol = c.relayProtocol.toLowerCase();
    if (!RELAY_PROTOCOLS.includes(c.relayProtocol)) c.relayProtocol = null;
  }
  return c;
}

/** Every local and remote candidate of a report, in the report's shape. */
export function candidates(list) {
  return list.filter((s) => s && (s.type === 'local-candidate' || s.type === 'remote-candidate'))
    .map(candidateStats)
    .filter((c) => c !== null);
}

/** The selected pair's two candidates in the report's shape, or null. */
export function selectedPair(list) {
  const pair = selectedCandidatePair(list);
  if (pair === null) return null;
  const byId = (id) => list.find((s) => s && s.id === id);
  const local = byId(pair.localCandidateId);
  const remote = byId(pair.remoteCandidateId);
  const localCandidate = local ? candidateStats(local) : null;
  const remoteCandidate = remote ? candidateStats(remote) : null;
  return localCandidate && remoteCandidate ? { localCandidate, remoteCandidate } : null;
}

/**
 * The `sample` of a `stats` observation from one getStats() round over both peer connections.
 * `publisher` and `subscriber` are their reports (RTCStatsReport, Map or array of stat dicts).
 */
export function mapStats(publisher, subscriber) {
  const pub = statsList(publisher);
  const sub = statsList(subscriber);
  const pubPair = selectedCandidatePair(pub);
  const available = pubPair ? gauge(pubPair.availableOutgoingBitrate) : null;
  const videoOut = outbound(pub, 'video', available);
  // The estimate covers the whole transport: it goes with video, the stream it limits, when sent.
  const audioOut = outbound(pub, 'audio', videoOut === null ? available : null);
  const subPair = selectedCandidatePair(sub);
  return {
    audioOut,
    videoOut,
    audioIn: inbound(sub, 'audio'),
    videoIn: inbound(sub, 'video'),
    candidatePairRtt: subPair ? gauge(subPair.currentRoundTripTime) : null,
    iceCandidates: candidates(sub),
    selectedPair: selectedPair(sub),
    // Sender and receiver are this page's own peer connections (Twilio's topology): every round
    // trip crosses the access link twice; the core halves it for the network-quality scorer.
    loopback: true,
  };
}

/** Whether media of `kind` has arrived at the subscriber (packets for audio, a decoded frame for video). */
export function mediaArrived(subscriber, kind) {
  return entries(statsList(subscriber), 'inbound-rtp', kind).some((s) =>
    kind === 'video' ? isNumber(s.framesDecoded) && s.framesDecoded > 0 : isNumber(s.packetsReceived) && s.packetsReceived > 0);
}
