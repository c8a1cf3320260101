// rtcprobe.js: Twilio Video's runPreflight() for rtcprobe servers (docs/browser.md), and its
// Network Quality API for calls: connect() (rooms.js, docs/network-quality-calls.md).
//
//   import { runPreflight } from 'https://probe.example.com/rtcprobe.js';
//   const preflightTest = runPreflight(token);
//   preflightTest.on('progress', (name) => ...);
//   preflightTest.on('completed', (report) => ...);
//   preflightTest.on('failed', (error, report) => ...);
//
// An ES module without dependencies or build step; `rtcprobe.global.js` puts the same API on
// `window.rtcprobe` for a plain <script> tag.
//
// Theory of operation
// -------------------
// The test runs in Twilio's topology: two peer connections in this page, the sender relay-only
// when the server hands out TURN, connected to each other with trickle ICE, so the synthetic media
// goes page -> TURN -> page. What the steps mean, when they time out and what the report says is
// decided by rtcprobe's core, which runs in the server on the signaling WebSocket ("core mode",
// docs/signaling.md): this module performs the core's actions (acquire media, open the peer
// connections, sample stats, tear down) and reports what it observes, stamped with its own clock
// (performance.now(), ms); the server sends back the core's events (progress, network quality,
// completed/failed with the report), which are emitted here as they come. So the report a
// browser gets is the one the core builds for every other client.
//
// One exception: when there is no core to ask — the WebSocket cannot be opened, or closes before
// the test ended, or the server answers with a protocol error — this module emits `failed` itself
// (53000, 53001 or the server's code; 99000 if stop() was asked) with a minimal partial report it
// kept from the events it saw (docs/browser.md#when-the-server-is-gone).

import { Emitter } from './emitter.js';
import { filterIceServers, signalingUrl, TRANSPORTS } from './ice.js';
import { mapStats, mediaArrived } from './stats.js';

export const PROTOCOL_VERSION = 2;
export const CODEC_VERSION = 1;

/** How long stop() waits for the core's `failed` before ending the test itself. */
const STOP_GRACE_MS = 800;
/** How often the subscriber is polled for its first media. */
const MEDIA_POLL_MS = 50;

/** The error codes this module may raise itself (the rest come from the core). */
const ERRORS = {
  53000: ['SignalingConnectionError', 'Signaling connection error: could not reach the signaling server'],
  53001: ['SignalingConnectionDisconnectedError', 'Signaling connection disconnected'],
  53405: ['MediaConnectionError', 'Media connection failed or media never started'],
  99000: ['PreflightStoppedError', 'The preflight test was stopped before it completed'],
  20101: ['AccessTokenInvalidError', 'Invalid Access Token'],
  20103: ['AccessTokenIssuerInvalidError', 'Invalid Access Token issuer/subject'],
  20104: ['AccessTokenExpiredError', 'Access Token expired or expiration date invalid'],
  20105: ['AccessTokenNotYetValidError', 'Access Token not yet valid'],
  20107: ['AccessTokenSignatureInvalidError', 'Invalid Access Token signature'],
};

/** The error of a `failed` event: `code`, `name` and `message`, as Twilio's TwilioError has them. */
export class PreflightError extends Error {
  constructor(code, name, message) {
    const known = ERRORS[code];
    super(message ?? (known ? known[1] : `Error ${code}`));
    this.code = code;
    this.name = name ?? (known ? known[0] : 'PreflightError');
  }

  static of(code, message) {
    return new PreflightError(code, undefined, message);
  }
}

function now() {
  return performance.now();
}

// --- synthetic media (no permission prompt) ------------------------------------------------

/** A 2D canvas of `width`x`height` captured at `fps`, painted green with a random 50x50
 *  rectangle per frame (the pattern of Twilio's synthetic video). A timer paints rather than
 *  requestAnimationFrame, which stops altogether in a hidden tab. */
function syntheticVideo({ width, height, fps }) {
  const canvas = Object.assign(document.createElement('canvas'), { width, height });
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = 'green';
  ctx.fillRect(0, 0, width, height);
  const paint = () => {
    const [r, g, b] = [0, 0, 0].map(() => Math.round(Math.random() * 255));
    ctx.fillStyle = `rgba(${r}, ${g}, ${b}, ${Math.random().toFixed(3)})`;
    ctx.fillRect(Math.random() * width, Math.random() * height, 50, 50);
  };
  paint();
  const timer = setInterval(paint, 1000 / fps);
  const track = canvas.captureStream(fps).getVideoTracks()[0];
  return { track, stop: () => { clearInterval(timer); track.stop(); } };
}

/** A WebAudio oscillator's tone as an audio track. */
function syntheticAudio() {
  const Context = globalThis.AudioContext ?? globalThis.webkitAudioContext;
  const context = new Context();
  const oscillator = context.createOscillator();
  const destination = context.createMediaStreamDestination();
  oscillator.connect(destination);
  oscillator.start();
  // Without a user gesture the context may start suspended; resuming is allowed to fail.
  context.resume?.().catch(() => {});
  const track = destination.stream.getAudioTracks()[0];
  return {
    track,
    stop: () => {
      track.stop();
      try { oscillator.stop(); } catch { /* already stopped */ }
      context.close?.().catch(() => {});
    },
  };
}

function acquireMedia(media) {
  const parts = [];
  try {
    if (media.audio) parts.push(syntheticAudio());
    if (media.video) parts.push(syntheticVideo(media.video));
  } catch (err) {
    parts.forEach((p) => p.stop());
    throw err;
  }
  return { tracks: parts.map((p) => p.track), stop: () => parts.forEach((p) => p.stop()) };
}

// --- options -------------------------------------------------------------------------------

const DEFAULT_VIDEO = { width: 640, height: 480, fps: 30 };

function checkOptions(token, options) {
  if (typeof token !== 'string' || token === '') throw new TypeError('token must be a non-empty string');
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
  const {
    url, duration = 10000, region = 'gll', transport, audio = true, video = true,
    networkQualityVerbosity = 1, receiverRelayOnly = false,
  } = options;
  if (typeof duration !== 'number' || !Number.isFinite(duration) || duration <= 0) {
    throw new RangeError(`duration must be a positive number of milliseconds, got ${duration}`);
  }
  if (typeof region !== 'string' || region === '') throw new TypeError('region must be a non-empty string');
  if (transport != null && !TRANSPORTS.includes(transport)) {
    throw new RangeError(`transport must be one of ${TRANSPORTS.join(', ')}, got ${transport}`);
  }
  if (![1, 2, 3].includes(networkQualityVerbosity)) throw new RangeError('networkQualityVerbosity must be 1, 2 or 3');
  if (typeof receiverRelayOnly !== 'boolean') throw new TypeError('receiverRelayOnly must be true or false');
  let videoSpec = null;
  if (video === true) videoSpec = { ...DEFAULT_VIDEO };
  else if (video && typeof video === 'object') videoSpec = { ...DEFAULT_VIDEO, ...video };
  else if (video !== false && video !== null) throw new TypeError('video must be true, false or {width, height, fps}');
  if (!audio && !videoSpec) throw new RangeError('a test needs audio, video or both');
  return {
    url: signalingUrl(url, import.meta.url), duration, region, transport: transport ?? null,
    media: { audio: Boolean(audio), video: videoSpec }, verbosity: networkQualityVerbosity, receiverRelayOnly,
  };
}

// --- the test --------------------------------------------------------------------------------

/**
 * One preflight test: returned by {@link runPreflight}. Events: `progress(name)`,
 * `completed(report)`, `failed(error, report)`, and rtcprobe's own
 * `networkQualityLevelChanged(level, stats)` and `sampleRecorded(index, total, level)`.
 */
export class PreflightTest extends Emitter {
  #token;
  #options;
  #t0 = now();
  #epoch0 = performance.timeOrigin + this.#t0;
  #ws = null;
  #helloSent = false;
  #lastNow = 0;
  #ended = false;
  #stopAt = null;
  #stopTimer = null;
  #media = null;
  #mediaAt = null;
  #mediaError = null;
  #icedAt = null;
  #iceServers = null;
  #waitingForIced = false;
  #peers = null;
  #level = null;
  #progress = [];
  #report = null;

  constructor(token, options = {}) {
    super();
    this.#options = checkOptions(token, options);
    this.#token = token;
    // Started on the next task: listeners attached right after runPreflight() see every event.
    setTimeout(() => this.#start(), 0);
  }

  /** The latest network quality level (0..5), or null before the first stats sample. */
  get networkQualityLevel() {
    return this.#level;
  }

  /** The report once the test has ended (completed or failed), else null. */
  get report() {
    return this.#report;
  }

  /** The signaling URL this test connects to. */
  get url() {
    return this.#options.url;
  }

  /** Stop the test now: `failed` follows with code 99000 and the partial report. */
  stop() {
    if (this.#ended || this.#stopAt !== null) return;
    this.#stopAt = now();
    this.#teardown(); // effective at once: no more media, whatever the core answers
    if (this.#helloSent && this.#ws?.readyState === WebSocket.OPEN) this.#observe({ kind: 'stopRequested' }, this.#stopAt);
    // With no socket yet, #onOpen sends the stop right after the hello.
    this.#stopTimer = setTimeout(() => this.#endLocally(99000), STOP_GRACE_MS);
  }

  // --- signaling ------------------------------------------------------------------------------

  #start() {
    if (this.#ended) return;
    // Media first, as Twilio's preflight does: the core asks for it once the socket is up, and
    // gets it with the time it was really acquired.
    if (this.#stopAt === null) {
      try {
        this.#media = acquireMedia(this.#options.media);
      } catch (err) {
        this.#mediaError = err;
      }
      this.#mediaAt = now();
    }
    let ws;
    try {
      ws = new WebSocket(this.#options.url);
    } catch (err) {
      this.#endLocally(53000, `cannot open the signaling WebSocket: ${err.message}`);
      return;
    }
    this.#ws = ws;
    ws.onopen = () => this.#onOpen();
    ws.onmessage = (e) => this.#onMessage(e.data);
    ws.onclose = (e) => this.#onClose(e);
    ws.onerror = () => {}; // onclose follows, with what there is to say
  }

  #send(message) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(message));
  }

  #onOpen() {
    if (this.#ended) return;
    const o = this.#options;
    this.#send({
      type: 'ice', preflight: true, token: this.#token, version: PROTOCOL_VERSION, region: o.region, now: now(),
      core: { start: this.#t0, epoch: this.#epoch0, duration: o.duration, media: o.media, verbosity: o.verbosity },
    });
    this.#helloSent = true;
    if (this.#stopAt !== null) this.#observe({ kind: 'stopRequested' }, now());
  }

  /** One observation to the core; `at` is when it was seen. Observations go out in the order they
   *  are made and their times never decrease (the core refuses that): one seen earlier than the
   *  last one sent (stats that took a while) is stamped with that last time. */
  #observe(observation, at = now()) {
    if (this.#ended) return;
    const stamp = Math.max(at, this.#lastNow);
    this.#lastNow = stamp;
    this.#send({ type: 'observe', now: stamp, observation: { v: CODEC_VERSION, ...observation } });
  }

  #onMessage(data) {
    if (this.#ended) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return; // not ours to judge: the server speaks JSON
    }
    switch (msg?.type) {
      case 'iced':
        this.#icedAt = now();
        this.#iceServers = msg.ice_servers ?? [];
        if (this.#waitingForIced) {
          this.#waitingForIced = false;
          this.#answerConnectSignaling();
        }
        break;
      case 'action':
        this.#onAction(msg.action ?? {});
        break;
      case 'event':
        this.#onEvent(msg.event ?? {});
        break;
      case 'error':
        // The server refused the session outright (a protocol error, "server busy", a v1 server):
        // there is no core to end the test, so it ends here with the server's code.
        this.#endLocally(Number.isInteger(msg.code) ? msg.code : 53000, msg.message);
        break;
      default:
        break; // unknown types are ignored, as the protocol says
    }
  }

  #onClose(event) {
    if (this.#ended) return;
    if (this.#stopAt !== null) {
      this.#endLocally(99000);
    } else if (!this.#helloSent) {
      this.#endLocally(53000, `could not connect to the signaling server at ${this.#options.url}`
        + ' (unreachable, or this page\'s origin is not allowed there)');
    } else {
      const why = event.reason ? `: ${event.reason}` : '';
      this.#endLocally(53001, `the signaling connection closed before the test ended (code ${event.code}${why})`);
    }
  }

  // --- the core's actions --------------------------------------------------------------------

  #onAction(action) {
    if (this.#stopAt !== null) return; // stopped: the core hears nothing more but the stop
    switch (action.kind) {
      case 'acquireMedia':
        if (this.#mediaError) {
          this.#observe({ kind: 'transportError', code: 53405,
            message: `could not make the synthetic media: ${this.#mediaError.message}` });
        } else if (this.#media) {
          this.#observe({ kind: 'mediaAcquired', kinds: this.#media.tracks.map((t) => t.kind) }, this.#mediaAt);
        }
        break;
      case 'connectSignaling':
        if (this.#icedAt === null) this.#waitingForIced = true;
        else this.#answerConnectSignaling();
        break;
      case 'openPeerConnections':
        this.#openPeerConnections(action.iceServers ?? [], Boolean(action.relayOnly)).catch((err) => {
          this.#observe({ kind: 'transportError', code: 53405, message: `could not connect the peer connections: ${err.message}` });
        });
        break;
      case 'sampleStats':
        this.#sampleStats();
        break;
      case 'tearDown':
        this.#teardown();
        break;
      default:
        break;
    }
  }

  #answerConnectSignaling() {
    this.#observe({ kind: 'signalingConnected' }, this.#icedAt);
  }

  async #openPeerConnections(iceServers, relayOnly) {
    const servers = filterIceServers(iceServers, this.#options.transport);
    if (this.#options.transport && servers.length === 0) {
      this.#observe({ kind: 'transportError', code: 53405,
        message: `the server handed out no TURN URL over ${this.#options.transport}` });
      return;
    }
    if (!this.#media || this.#stopAt !== null) return;
    const sender = new RTCPeerConnection({ iceServers: servers, iceTransportPolicy: relayOnly ? 'relay' : 'all', bundlePolicy: 'max-bundle' });
    // The receiver is unrestricted, as Twilio's; relay-only too on request (network emulation:
    // then every packet crosses the TURN server's link both ways).
    const receiverConfig = { iceServers: servers, bundlePolicy: 'max-bundle' };
    if (relayOnly && this.#options.receiverRelayOnly) receiverConfig.iceTransportPolicy = 'relay';
    const receiver = new RTCPeerConnection(receiverConfig);
    const peers = { sender, receiver, timers: [], elements: [], started: new Set(), closed: false };
    this.#peers = peers;
    const forward = (to) => (e) => {
      if (e.candidate && !peers.closed) to.addIceCandidate(e.candidate).catch(() => {});
    };
    sender.addEventListener('icecandidate', forward(receiver));
    receiver.addEventListener('icecandidate', forward(sender));
    this.#watchGathering(sender, relayOnly);
    this.#watch(sender, 'publisher');
    this.#watch(receiver, 'subscriber');
    receiver.addEventListener('track', (e) => this.#onTrack(e.track));
    for (const track of this.#media.tracks) sender.addTransceiver(track, { direction: 'sendonly' });

    const offer = await sender.createOffer();
    await sender.setLocalDescription(offer);
    this.#watchDtls(sender, 'publisher'); // its transport exists from here on
    await receiver.setRemoteDescription(offer);
    const answer = await receiver.createAnswer();
    await receiver.setLocalDescription(answer);
    this.#watchDtls(receiver, 'subscriber');
    await sender.setRemoteDescription(answer);
    if (!peers.closed) this.#pollMedia();
  }

  /** The sender's gathering: when it ends with no candidate at all, nothing can connect, and the
   *  core hears why at once (the TURN errors the browser saw) instead of at its step timeout. */
  #watchGathering(pc, relayOnly) {
    let gathered = 0;
    const errors = [];
    pc.addEventListener('icecandidate', (e) => { if (e.candidate) gathered += 1; });
    pc.addEventListener('icecandidateerror', (e) => {
      if (errors.length < 5) errors.push(`${e.url ?? '?'}: ${e.errorCode} ${e.errorText ?? ''}`.trim());
    });
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState !== 'complete' || gathered > 0 || this.#peers?.closed) return;
      const what = relayOnly ? 'no relay candidate: the TURN server could not be reached' : 'no ICE candidate';
      const why = errors.length ? ` (${errors.join('; ')})` : '';
      this.#observe({ kind: 'transportError', code: 53405, message: `the sender gathered ${what}${why}` });
    });
  }

  /** ICE and connection states of one peer connection, as they change. */
  #watch(pc, role) {
    pc.addEventListener('iceconnectionstatechange', () => {
      if (!this.#peers?.closed) this.#observe({ kind: 'iceStateChanged', role, state: pc.iceConnectionState });
    });
    if ('connectionState' in pc) {
      pc.addEventListener('connectionstatechange', () => {
        if (!this.#peers?.closed) this.#observe({ kind: 'connectionStateChanged', role, state: pc.connectionState });
      });
    } else if (role === 'publisher') {
      this.#observe({ kind: 'stepUnobservable', name: 'peerConnectionConnected' }); // Firefox
    }
  }

  /** DTLS states through RTCDtlsTransport, where the browser has it (Safari has not). */
  #watchDtls(pc, role) {
    if (this.#peers?.closed) return;
    const transceiver = pc.getTransceivers()[0];
    const dtls = transceiver?.sender?.transport ?? transceiver?.receiver?.transport ?? null;
    if (typeof RTCDtlsTransport === 'undefined' || !dtls) {
      if (role === 'publisher') this.#observe({ kind: 'stepUnobservable', name: 'dtlsConnected' });
      return;
    }
    let last = 'new';
    const report = () => {
      if (this.#peers?.closed || dtls.state === last) return;
      last = dtls.state;
      this.#observe({ kind: 'dtlsStateChanged', role, state: dtls.state });
    };
    dtls.addEventListener('statechange', report);
    report(); // it may have moved on while the descriptions were being set
  }

  #onTrack(track) {
    const peers = this.#peers;
    if (!peers || peers.closed) return;
    this.#observe({ kind: 'trackSubscribed', media: track.kind });
    if (track.kind === 'video') {
      // A playing element's first frame, as Twilio's preflight waits for it; the stats poll
      // (framesDecoded) stands in where an element cannot play.
      const el = Object.assign(document.createElement('video'), { autoplay: true, muted: true, playsInline: true });
      el.srcObject = new MediaStream([track]);
      el.addEventListener('loadeddata', () => this.#started('video'), { once: true });
      el.play?.()?.catch(() => {});
      peers.elements.push(el);
    }
  }

  #started(kind) {
    const peers = this.#peers;
    if (!peers || peers.closed || peers.started.has(kind)) return;
    peers.started.add(kind);
    this.#observe({ kind: 'mediaStarted', media: kind });
  }

  #pollMedia() {
    const peers = this.#peers;
    const kinds = this.#media.tracks.map((t) => t.kind);
    const poll = async () => {
      if (peers.closed) return;
      if (kinds.every((k) => peers.started.has(k))) {
        clearInterval(timer);
        return;
      }
      const report = await peers.receiver.getStats().catch(() => null);
      if (report === null || peers.closed) return;
      for (const kind of kinds) if (mediaArrived(report, kind)) this.#started(kind);
    };
    const timer = setInterval(poll, MEDIA_POLL_MS);
    peers.timers.push(timer);
  }

  async #sampleStats() {
    const peers = this.#peers;
    if (!peers || peers.closed) return;
    let reports;
    try {
      reports = await Promise.all([peers.sender.getStats(), peers.receiver.getStats()]);
    } catch {
      return; // closed meanwhile: the core counts the missing sample against its timer
    }
    const at = now();
    if (peers.closed) return;
    this.#observe({ kind: 'stats', sample: mapStats(reports[0], reports[1]) }, at);
  }

  #teardown() {
    const peers = this.#peers;
    if (peers && !peers.closed) {
      peers.closed = true;
      peers.timers.forEach((t) => clearInterval(t));
      peers.elements.forEach((el) => { el.srcObject = null; });
      peers.sender.close();
      peers.receiver.close();
    }
    if (this.#media) {
      this.#media.stop();
      this.#media = null;
    }
  }

  // --- the core's events -----------------------------------------------------------------------

  #onEvent(event) {
    switch (event.kind) {
      case 'progress':
        this.#progress.push({ name: event.name, duration: event.duration });
        this.emit('progress', event.name);
        break;
      case 'networkQualityLevelChanged':
        this.#level = event.level;
        this.emit('networkQualityLevelChanged', event.level, event.stats);
        break;
      case 'sampleRecorded':
        this.emit('sampleRecorded', event.index, event.total, event.level);
        break;
      case 'completed':
        this.#finish();
        this.#report = event.report;
        this.emit('completed', event.report);
        break;
      case 'failed': {
        this.#finish();
        const e = event.error ?? {};
        this.#report = event.report;
        this.emit('failed', new PreflightError(e.code, e.name, e.message), event.report);
        break;
      }
      default:
        break;
    }
  }

  /** The test has ended: release everything, say bye (the server closes the socket). */
  #finish() {
    this.#ended = true;
    clearTimeout(this.#stopTimer);
    this.#teardown();
    this.#send({ type: 'bye' });
  }

  /** End without the core (docs/browser.md#when-the-server-is-gone): a minimal partial report. */
  #endLocally(code, message) {
    if (this.#ended) return;
    this.#finish();
    if (this.#ws && this.#ws.readyState !== WebSocket.CLOSED) this.#ws.close(1000);
    const error = PreflightError.of(code, message);
    const end = now();
    this.#report = {
      testTiming: { start: this.#epoch0, end: this.#epoch0 + (end - this.#t0), duration: end - this.#t0 },
      networkTiming: {},
      stats: null,
      iceCandidateStats: [],
      selectedIceCandidatePairStats: null,
      progressEvents: this.#progress.slice(),
      networkQuality: this.#level === null ? null : { level: this.#level, stats: null },
      bitrate: null,
      samples: [],
      run: null,
      error: { code: error.code, name: error.name, message: error.message },
    };
    this.emit('failed', error, this.#report);
  }
}

/**
 * Run a preflight test (Twilio Video's runPreflight): `token` is an rtcprobe access token.
 * Options: `url` (the rtcprobe server: its ws(s):// signaling URL or http(s):// address; default
 * the server this script came from), `duration` (ms of stats collection, default 10000),
 * `region` (default 'gll'), `transport` ('udp', 'tcp' or 'tls': test only the TURN URLs of that
 * transport), `audio`/`video` (what to publish; video `{width, height, fps}`, default 640x480@30),
 * `networkQualityVerbosity` (1..3, of the stats carried by networkQualityLevelChanged),
 * `receiverRelayOnly` (the receiving peer connection relay-only too when the sender is: for network
 * emulation, e.g. `rtcprobe run SCENARIO --driver chromium`; default false, as Twilio's).
 */
export function runPreflight(token, options = {}) {
  return new PreflightTest(token, options);
}


// The Network Quality API for calls (docs/network-quality-calls.md#javascript-browsers).
export {
  connect, LocalParticipant, Participant, RemoteParticipant, Room, RoomConnectError,
} from './rooms.js';
