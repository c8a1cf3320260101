// rooms.js: Twilio Video's Network Quality API for a browser app's own peer connections
// (docs/network-quality-calls.md#javascript-browsers; the wire: docs/signaling.md#rooms).
//
//   import { connect } from 'https://probe.example.com/rtcprobe.js';
//   const room = await connect(token, { networkQuality: { local: 1, remote: 1 } });
//   room.monitor(pc, 'bob');                       // your RTCPeerConnection to bob
//   room.localParticipant.on('networkQualityLevelChanged', (level, stats) => ...);
//   room.participants.get('bob').networkQualityLevel;
//
// The media never reaches rtcprobe: the app's peer connections go wherever the app sends them
// (peer to peer, its own SFU). About once a second this module reads each monitored peer
// connection's getStats() into one link of a room sample (room-stats.js) and sends it; the server
// attributes every impairment to the leg that caused it, scores every participant and pushes the
// levels back, which are set on the participants and emitted here.

import { Emitter } from './emitter.js';
import { signalingUrl } from './ice.js';
import { demandOf, mapLink } from './room-stats.js';

const PROTOCOL_VERSION = 2;
const CONNECT_TIMEOUT_MS = 10000;
const SENDING = ['sendrecv', 'sendonly'];
const RECEIVING = ['sendrecv', 'recvonly'];

const ERRORS = {
  53000: 'SignalingConnectionError',
  53001: 'SignalingConnectionDisconnectedError',
  53003: 'SignalingIncomingMessageInvalidError',
  53100: 'RoomNameInvalidError',
  53101: 'RoomNameTooLongError',
  53103: 'RoomCreateFailedError',
  53105: 'RoomMaxParticipantsExceededError',
  53200: 'ParticipantIdentityInvalidError',
  53201: 'ParticipantIdentityTooLongError',
  53204: 'ParticipantNotFoundError',
  53205: 'ParticipantDuplicateIdentityError',
  20101: 'AccessTokenInvalidError',
  20103: 'AccessTokenIssuerInvalidError',
  20104: 'AccessTokenExpiredError',
  20105: 'AccessTokenNotYetValidError',
  20107: 'AccessTokenSignatureInvalidError',
};

/** Why a room could not be joined, or why the server closed it: `code`, `name`, `message`. */
export class RoomConnectError extends Error {
  constructor(code, message, name) {
    super(message ?? `Error ${code}`);
    this.code = code;
    this.name = name ?? ERRORS[code] ?? 'TwilioError';
  }
}

/**
 * A participant as this client sees it: `identity`, `state` ('connected', 'reconnecting',
 * 'disconnected'), `networkQualityLevel` (0..5, null until the server said one; always null for
 * the others with remote verbosity 0) and `networkQualityStats` (Twilio's NetworkQualityStats at
 * the verbosity asked for). Event: `networkQualityLevelChanged(level, stats)`.
 */
export class Participant extends Emitter {
  constructor(identity, state = 'connected') {
    super();
    this.identity = identity;
    this.state = state;
    this.networkQualityLevel = null;
    this.networkQualityStats = null;
  }

  _update(level, stats, changed) {
    this.networkQualityLevel = level;
    this.networkQualityStats = stats;
    if (changed) this.emit('networkQualityLevelChanged', level, stats);
  }
}

/** This client (`room.localParticipant`). */
export class LocalParticipant extends Participant {}

/** Another participant (an entry of `room.participants`). */
export class RemoteParticipant extends Participant {}

function isObject(x) {
  return x !== null && typeof x === 'object' && !Array.isArray(x);
}

function closed(pc) {
  return pc.connectionState === 'closed' || pc.signalingState === 'closed';
}

/** What a peer connection's transceivers publish and subscribe to, for demandOf(). */
function transceiverSummaries(pc) {
  return pc.getTransceivers().map((t) => {
    const track = t.sender?.track ?? null;
    const direction = t.currentDirection;
    const settings = track && typeof track.getSettings === 'function' ? track.getSettings() : {};
    return {
      kind: t.receiver?.track?.kind ?? track?.kind,
      sending: SENDING.includes(direction) && track !== null,
      receiving: RECEIVING.includes(direction),
      video: { width: settings.width, height: settings.height, fps: settings.frameRate },
    };
  });
}

/**
 * A joined room (Twilio's Room). Properties: `name`, `state` ('connected', 'disconnected'),
 * `localParticipant`, `participants` (Map identity -> RemoteParticipant), `iceServers` (the
 * RTCIceServer dicts the server handed out, for the app's peer connections), `errors` (the
 * `room-error`s received). Events: `participantConnected`, `participantDisconnected`,
 * `participantReconnecting`, `participantReconnected` (participant), `signal(from, data)`,
 * `error(info)` (a message of ours the server refused; the room goes on) and
 * `disconnected(room, error)` (error null after disconnect()).
 */
export class Room extends Emitter {
  #ws;
  #monitors = new Map(); // RTCPeerConnection -> {remote, server, sourceOf, inboundIncludesUplink}
  #timer = null;
  #sampling = false;
  #demand = null; // set by the app (connect's `demand`, setDemand); null: read from the monitors
  #sentDemand = null;
  #closeError = null;
  #onPageHide = null;

  constructor(ws, iced, joined, options) {
    super();
    this.#ws = ws;
    this.name = String(joined.room ?? options.name ?? '');
    this.state = 'connected';
    this.localParticipant = new LocalParticipant(String(joined.identity));
    this.participants = new Map();
    for (const p of Array.isArray(joined.participants) ? joined.participants : []) {
      if (isObject(p) && typeof p.identity === 'string') {
        this.participants.set(p.identity, new RemoteParticipant(p.identity, p.state === 'reconnecting' ? 'reconnecting' : 'connected'));
      }
    }
    this.iceServers = (Array.isArray(iced.ice_servers) ? iced.ice_servers : []).map((s) => ({ ...s }));
    this.networkQuality = isObject(joined.networkQuality) ? { ...joined.networkQuality } : {};
    this.errors = [];
    this.samplesSent = 0;
    if (options.demand) {
      this.#demand = options.demand;
      this.#sentDemand = JSON.stringify(options.demand); // the hello carried it
    }
    const fromServer = Number(joined.sampleInterval) * 1000;
    this.sampleInterval = options.sampleInterval ?? (fromServer >= 200 && fromServer <= 10000 ? fromServer : 1000);
    ws.onmessage = (e) => this.#onMessage(e.data);
    ws.onclose = () => this.#onClose();
    this.#timer = setInterval(() => this.#sample(), this.sampleInterval);
    if (typeof globalThis.addEventListener === 'function') {
      // A tab that just vanishes reads 0 to the others for the reconnect timeout: say bye.
      this.#onPageHide = () => this.disconnect();
      globalThis.addEventListener('pagehide', this.#onPageHide);
    }
  }

  /**
   * Report `pc` in every sample from now on: one peer connection per remote end. `remote` is the
   * participant at the other end of a mesh link; without it the link goes to a media server
   * (options `serverName`, default 'sfu'; `sourceOf(transceiver)` -> the identity whose media a
   * received transceiver carries, or null; `inboundIncludesUplink`, default true). A closed peer
   * connection drops out by itself.
   */
  monitor(pc, remote = null, { serverName = 'sfu', sourceOf = null, inboundIncludesUplink = true } = {}) {
    if (!pc || typeof pc.getStats !== 'function' || typeof pc.getTransceivers !== 'function') {
      throw new TypeError('monitor() needs an RTCPeerConnection');
    }
    if (this.#monitors.has(pc)) throw new Error('this peer connection is monitored already');
    const server = remote === null || remote === undefined;
    const name = server ? serverName : remote;
    if (typeof name !== 'string' || name === '') throw new TypeError('the remote must be a non-empty string');
    if (!server && name === this.localParticipant.identity) throw new RangeError('a link cannot go to this participant itself');
    for (const m of this.#monitors.values()) {
      if (m.remote === name && m.server === server) throw new Error(`a peer connection to ${name} is monitored already`);
    }
    if (sourceOf !== null && typeof sourceOf !== 'function') throw new TypeError('sourceOf must be a function');
    this.#monitors.set(pc, { remote: name, server, sourceOf, inboundIncludesUplink: Boolean(inboundIncludesUplink) });
    return this;
  }

  /** Stop reporting `pc` (the peer connection itself is the app's: it stays open). */
  unmonitor(pc) {
    this.#monitors.delete(pc);
    return this;
  }

  /** The demand sent (what this participant publishes and subscribes to): the app's, else read
   *  from the monitored transceivers. */
  get demand() {
    if (this.#demand !== null) return this.#demand;
    return demandOf(Array.from(this.#monitors.keys()).filter((pc) => !closed(pc)).flatMap(transceiverSummaries));
  }

  /** Say what this participant publishes and subscribes to (`{audioSend, audioRecv, videoSend,
   *  videoRecv}`, videos `{width, height, fps}`); null: read it from the monitored transceivers. */
  setDemand(demand) {
    if (demand !== null && !isObject(demand)) throw new TypeError('demand must be an object or null');
    this.#demand = demand;
  }

  /** Relay `data` (a JSON object: an offer, an answer, a candidate...) to participant `to`. */
  signal(to, data) {
    if (typeof to !== 'string' || to === '') throw new TypeError('signal() needs a participant identity');
    if (!isObject(data)) throw new TypeError('signal data must be an object');
    this.#send({ type: 'signal', to, data });
  }

  /** Leave the room (the others see participantDisconnected at once); the peer connections stay open. */
  disconnect() {
    if (this.state === 'disconnected') return this;
    this.#send({ type: 'bye' });
    this.#shutdown();
    this.emit('disconnected', this, null);
    return this;
  }

  #send(message) {
    if (this.state === 'connected' && this.#ws.readyState === WebSocket.OPEN) {
      this.#ws.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  #shutdown() {
    this.state = 'disconnected';
    clearInterval(this.#timer);
    if (this.#onPageHide) globalThis.removeEventListener('pagehide', this.#onPageHide);
    this.#ws.onmessage = null;
    this.#ws.onclose = null;
    const ws = this.#ws;
    const { CLOSED } = WebSocket;
    if (ws.readyState !== CLOSED) {
      // The server closes after a bye; close here too in case it does not within a second.
      setTimeout(() => { if (ws.readyState !== CLOSED) ws.close(1000); }, 1000);
    }
    this.localParticipant.state = 'disconnected';
  }

  #onClose() {
    if (this.state === 'disconnected') return;
    this.#shutdown();
    const error = this.#closeError
      ?? new RoomConnectError(53001, 'the signaling connection closed', 'SignalingConnectionDisconnectedError');
    this.emit('disconnected', this, error);
  }

  async #sample() {
    if (this.#sampling || this.state !== 'connected') return; // a slow round: skip, never a burst
    this.#sampling = true;
    try {
      for (const pc of Array.from(this.#monitors.keys())) if (closed(pc)) this.#monitors.delete(pc);
      const entries = Array.from(this.#monitors.entries());
      const reports = await Promise.all(entries.map(([pc]) => pc.getStats().catch(() => null)));
      const links = [];
      entries.forEach(([pc, m], i) => {
        if (reports[i] === null || closed(pc)) return;
        let sourceByMid = null;
        if (m.server && m.sourceOf) {
          sourceByMid = new Map();
          for (const t of pc.getTransceivers()) {
            const source = t.mid == null ? null : m.sourceOf(t);
            if (typeof source === 'string' && source) sourceByMid.set(t.mid, source);
          }
        }
        links.push(mapLink(reports[i], { remote: m.remote, server: m.server, sourceByMid,
          inboundIncludesUplink: m.inboundIncludesUplink }));
      });
      const demand = this.demand;
      const encoded = JSON.stringify(demand);
      if (this.#send({ type: 'nq-sample', sample: { links, demand: encoded === this.#sentDemand ? null : demand } })) {
        this.#sentDemand = encoded;
        this.samplesSent += 1;
      }
    } finally {
      this.#sampling = false;
    }
  }

  #participant(identity) {
    return typeof identity === 'string' ? this.participants.get(identity) ?? null : null;
  }

  #onMessage(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      return;
    }
    if (!isObject(msg)) return;
    this._handle(msg);
  }

  /** One server message (exposed for the wrapper's tests; apps have no need of it). */
  _handle(msg) {
    const { identity } = msg;
    switch (msg.type) {
      case 'network-quality':
        for (const u of Array.isArray(msg.updates) ? msg.updates : []) {
          if (!isObject(u) || !Number.isInteger(u.level)) continue;
          const who = u.local ? this.localParticipant : this.#participant(u.identity);
          if (who) who._update(u.level, isObject(u.stats) ? u.stats : null, u.levelChanged !== false);
        }
        break;
      case 'participant-connected': {
        if (typeof identity !== 'string') break;
        const p = this.participants.get(identity) ?? new RemoteParticipant(identity);
        p.state = 'connected';
        this.participants.set(identity, p);
        this.emit('participantConnected', p);
        break;
      }
      case 'participant-disconnected': {
        const p = this.#participant(identity);
        if (!p) break;
        this.participants.delete(identity);
        p.state = 'disconnected';
        this.emit('participantDisconnected', p);
        break;
      }
      case 'participant-reconnecting':
      case 'participant-reconnected': {
        const p = this.#participant(identity);
        if (!p) break;
        const back = msg.type === 'participant-reconnected';
        p.state = back ? 'connected' : 'reconnecting';
        this.emit(back ? 'participantReconnected' : 'participantReconnecting', p);
        break;
      }
      case 'signal':
        if (typeof msg.from === 'string' && isObject(msg.data)) this.emit('signal', msg.from, msg.data);
        break;
      case 'room-error':
        if (this.errors.length < 100) this.errors.push(msg);
        this.emit('error', msg);
        break;
      case 'error':
        // The server ends the session: the close that follows reports this.
        this.#closeError = new RoomConnectError(Number.isInteger(msg.code) ? msg.code : 53000, msg.message);
        break;
      default:
        break; // unknown types are ignored, as the protocol says
    }
  }
}

function checkConnectOptions(token, options) {
  if (typeof token !== 'string' || token === '') throw new TypeError('token must be a non-empty string');
  if (!isObject(options)) throw new TypeError('options must be an object');
  const { name, networkQuality, demand, sampleInterval, region = 'gll', timeout = CONNECT_TIMEOUT_MS } = options;
  if (name != null && (typeof name !== 'string' || name === '')) throw new TypeError('name must be a non-empty string');
  if (demand != null && !isObject(demand)) throw new TypeError('demand must be an object');
  if (sampleInterval != null && !(typeof sampleInterval === 'number' && sampleInterval >= 200 && sampleInterval <= 10000)) {
    throw new RangeError('sampleInterval must be 200..10000 ms');
  }
  if (!(typeof timeout === 'number' && timeout > 0)) throw new RangeError('timeout must be a positive number of ms');
  // Twilio's option: true (the defaults) or {local, remote}; the server takes out-of-range values
  // as the defaults, as twilio-video.js does.
  const nq = {};
  if (isObject(networkQuality)) {
    for (const key of ['local', 'remote']) if (Number.isInteger(networkQuality[key])) nq[key] = networkQuality[key];
  }
  return { url: signalingUrl(options.url, import.meta.url), name: name ?? null, networkQuality: nq,
    demand: demand ?? null, sampleInterval: sampleInterval ?? null, region, timeout };
}

/**
 * Join a room (twilio-video's connect()): resolves with a {@link Room} once joined, rejects with
 * a {@link RoomConnectError} (the server's code: 20101 for a refused token, 53105 for a full
 * room...; 53000 when the server cannot be reached). Options: `url` (the rtcprobe server: ws(s)://
 * or http(s)://; default the server this script came from), `name` (default the token's room
 * grant), `networkQuality` ({local: 1..3, remote: 0..3}, default local 1, remote 0), `demand`
 * (default: read from the monitored peer connections), `sampleInterval` (ms, default the
 * server's), `region`, `timeout` (ms, default 10000).
 */
export function connect(token, options = {}) {
  let o;
  try {
    o = checkConnectOptions(token, options);
  } catch (err) {
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    let ws;
    try {
      ws = new WebSocket(o.url);
    } catch (err) {
      reject(new RoomConnectError(53000, `cannot open the signaling WebSocket: ${err.message}`));
      return;
    }
    let iced = null;
    let settled = false;
    const fail = (code, message, name) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ws.onmessage = null;
      ws.onclose = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
      reject(new RoomConnectError(code, message, name));
    };
    const timer = setTimeout(() => fail(53000, `no answer from ${o.url} within ${o.timeout} ms`,
      'SignalingConnectionTimeoutError'), o.timeout);
    ws.onopen = () => {
      const room = { networkQuality: o.networkQuality };
      if (o.name !== null) room.name = o.name;
      if (o.demand !== null) room.demand = o.demand;
      ws.send(JSON.stringify({ type: 'ice', preflight: false, token, version: PROTOCOL_VERSION, region: o.region, room }));
    };
    ws.onerror = () => {}; // onclose follows
    ws.onclose = (e) => {
      if (iced === null && !e.wasClean && e.code === 1006) {
        fail(53000, `could not connect to the signaling server at ${o.url} (unreachable, or this page's origin is not allowed there)`);
      } else {
        fail(53001, `the signaling connection closed before the room was joined (code ${e.code})`,
          'SignalingConnectionDisconnectedError');
      }
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!isObject(msg) || settled) return;
      if (msg.type === 'error') {
        fail(Number.isInteger(msg.code) ? msg.code : 53000, msg.message);
      } else if (msg.type === 'iced' && iced === null) {
        iced = msg;
      } else if (msg.type === 'joined' && iced !== null) {
        settled = true;
        clearTimeout(timer);
        resolve(new Room(ws, iced, msg, o));
      } else {
        fail(53000, `unexpected ${JSON.stringify(msg.type)} before 'joined'`);
      }
    };
  });
}
