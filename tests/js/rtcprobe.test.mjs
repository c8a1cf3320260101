// rtcprobe.js's side of core mode with a scripted WebSocket (no browser, no media): the hello,
// answers to the core's actions stamped with the browser's own times, events re-emitted, and the
// endings the module decides itself (no core to ask). The real thing runs in Chromium against the
// real server: tests/test_browser_api.py.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';

const sockets = [];

class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url) {
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = [];
    sockets.push(this);
  }

  send(text) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('not open');
    this.sent.push(JSON.parse(text));
  }

  close() {
    this.readyState = FakeWebSocket.CLOSED;
  }

  // --- the test's side
  open() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.();
  }

  receive(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }

  drop(code = 1006, reason = '') {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason });
  }

  observations() {
    return this.sent.filter((m) => m.type === 'observe');
  }
}

class FakeAudioContext {
  createOscillator() {
    return { connect: () => {}, start: () => {}, stop: () => {} };
  }

  createMediaStreamDestination() {
    return { stream: { getAudioTracks: () => [{ kind: 'audio', stop: () => {} }] } };
  }

  resume() {
    return Promise.resolve();
  }

  close() {
    return Promise.resolve();
  }
}

/** A peer connection with no media: enough of the API to be set up, and its events fired by hand.
 *  `connectionState` exists only when `browser.connectionState` is set (Firefox has none). */
const browser = { connectionState: true };
const pcs = [];

class FakePeerConnection extends EventTarget {
  constructor(config) {
    super();
    this.config = config;
    this.iceConnectionState = 'new';
    this.iceGatheringState = 'new';
    if (browser.connectionState) this.connectionState = 'new';
    this.transceivers = [];
    pcs.push(this);
  }

  addTransceiver(track, init) {
    const dtls = Object.assign(new EventTarget(), { state: 'new' });
    const t = { direction: init.direction, sender: { track, transport: dtls }, receiver: { transport: dtls } };
    this.transceivers.push(t);
    return t;
  }

  getTransceivers() { return this.transceivers; }
  async createOffer() { return { type: 'offer', sdp: 'v=0' }; }
  async createAnswer() { return { type: 'answer', sdp: 'v=0' }; }
  async setLocalDescription() {}
  async setRemoteDescription() {}
  async addIceCandidate() {}
  async getStats() { return new Map(); }
  close() { this.closed = true; }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.AudioContext = FakeAudioContext;
globalThis.RTCPeerConnection = FakePeerConnection;

const { runPreflight, PreflightError } = await import('../../rtcprobe/server/static/rtcprobe.js');

const URL_ = 'ws://127.0.0.1:9/signaling';
const tick = (ms = 5) => new Promise((resolve) => setTimeout(resolve, ms));

/** A test with audio only (no canvas in Node), its socket opened. */
async function started(options = {}) {
  const t = runPreflight('tok', { url: URL_, video: false, ...options });
  const events = [];
  for (const name of ['progress', 'completed', 'failed', 'networkQualityLevelChanged', 'sampleRecorded']) {
    t.on(name, (...args) => events.push([name, ...args]));
  }
  await tick();
  return { t, events, ws: sockets.at(-1) };
}

beforeEach(() => {
  sockets.length = 0;
  pcs.length = 0;
  browser.connectionState = true;
  delete globalThis.RTCDtlsTransport;
});

afterEach(async () => {
  // End every test still running (its timers would keep Node alive): a terminal event from its core.
  for (const ws of sockets) {
    ws.receive({ type: 'event', event: { kind: 'failed', error: { code: 99000 }, report: {} } });
  }
  await tick();
});

test('the hello: protocol 2, the token, core mode with the start time and the options', async () => {
  const before = performance.now();
  const { ws } = await started({ duration: 3000, region: 'de1' });
  assert.equal(ws.url, URL_);
  ws.open();
  const [hello] = ws.sent;
  assert.equal(hello.type, 'ice');
  assert.equal(hello.version, 2);
  assert.equal(hello.token, 'tok');
  assert.equal(hello.region, 'de1');
  assert.equal(hello.preflight, true);
  assert.ok(hello.core.start >= before && hello.core.start <= hello.now);
  // The wall clock at the start, so the report's epoch times are the browser's.
  assert.ok(Math.abs(hello.core.epoch - (performance.timeOrigin + hello.core.start)) < 1);
  assert.deepEqual({ ...hello.core, start: 0, epoch: 0 }, {
    start: 0, epoch: 0, duration: 3000, media: { audio: true, video: null }, verbosity: 1,
  });
});

test('media and signaling are answered with the times they really happened', async () => {
  const { ws } = await started();
  await tick(20);
  ws.open();
  const helloNow = ws.sent[0].now;
  await tick(20);
  ws.receive({ type: 'iced', ice_servers: [], ttl: 3600, version: 2 });
  const icedAt = performance.now();
  await tick(20);
  ws.receive({ type: 'action', action: { kind: 'acquireMedia' } });
  ws.receive({ type: 'action', action: { kind: 'connectSignaling', region: 'gll' } });
  const [media, signaling] = ws.observations();
  assert.deepEqual(media.observation, { v: 1, kind: 'mediaAcquired', kinds: ['audio'] });
  assert.ok(media.now < helloNow, 'media was acquired before the socket opened');
  assert.deepEqual(signaling.observation, { v: 1, kind: 'signalingConnected' });
  assert.ok(Math.abs(signaling.now - icedAt) < 5, 'signalingConnected carries the time iced arrived');
});

test('connectSignaling before iced is answered when iced arrives', async () => {
  const { ws } = await started();
  ws.open();
  ws.receive({ type: 'action', action: { kind: 'connectSignaling' } });
  assert.equal(ws.observations().length, 0);
  ws.receive({ type: 'iced', ice_servers: [] });
  assert.equal(ws.observations()[0].observation.kind, 'signalingConnected');
});

test('the core\'s events are emitted in order; completed ends the test with bye', async () => {
  const { t, ws, events } = await started();
  ws.open();
  assert.equal(t.networkQualityLevel, null);
  const report = { testTiming: { start: 1, end: 2, duration: 1 }, progressEvents: [] };
  ws.receive({ type: 'event', event: { kind: 'progress', name: 'mediaAcquired', duration: 3 } });
  ws.receive({ type: 'event', event: { kind: 'networkQualityLevelChanged', level: 4, stats: { level: 4 } } });
  ws.receive({ type: 'event', event: { kind: 'sampleRecorded', index: 1, total: 10, level: 4 } });
  ws.receive({ type: 'event', event: { kind: 'completed', report } });
  ws.receive({ type: 'event', event: { kind: 'progress', name: 'late', duration: 9 } }); // after the end: ignored
  assert.deepEqual(events, [
    ['progress', 'mediaAcquired'],
    ['networkQualityLevelChanged', 4, { level: 4 }],
    ['sampleRecorded', 1, 10, 4],
    ['completed', report],
  ]);
  assert.equal(t.networkQualityLevel, 4);
  assert.deepEqual(t.report, report);
  assert.deepEqual(ws.sent.at(-1), { type: 'bye' });
  ws.drop(1000);
  assert.equal(events.length, 4, 'a close after the end is no failure');
});

test('failed carries an error with code, name and message, and the core\'s partial report', async () => {
  const { ws, events } = await started();
  ws.open();
  const report = { error: { code: 20104 } };
  ws.receive({ type: 'event', event: { kind: 'failed', report,
    error: { code: 20104, name: 'AccessTokenExpiredError', message: 'access token expired' } } });
  const [[name, error, got]] = events;
  assert.equal(name, 'failed');
  assert.ok(error instanceof PreflightError && error instanceof Error);
  assert.equal(error.code, 20104);
  assert.equal(error.name, 'AccessTokenExpiredError');
  assert.equal(error.message, 'access token expired');
  assert.deepEqual(got, report);
});

test('no core to ask: the socket never opens (53000), closes mid-test (53001), or the server refuses (its code)', async () => {
  let { ws, events } = await started();
  ws.drop(1006);
  assert.equal(events[0][1].code, 53000);
  assert.equal(events[0][1].name, 'SignalingConnectionError');

  ({ ws, events } = await started());
  ws.open();
  ws.receive({ type: 'event', event: { kind: 'progress', name: 'mediaAcquired', duration: 2.5 } });
  ws.drop(1001, 'server shutting down');
  const [, [name, error, report]] = events;
  assert.equal(name, 'failed');
  assert.equal(error.code, 53001);
  assert.equal(error.name, 'SignalingConnectionDisconnectedError');
  assert.match(error.message, /1001: server shutting down/);
  // The minimal report: the report's keys, the progress seen, no stats.
  assert.deepEqual(Object.keys(report).sort(), ['bitrate', 'error', 'iceCandidateStats', 'networkQuality',
    'networkTiming', 'progressEvents', 'run', 'samples', 'selectedIceCandidatePairStats', 'stats', 'testTiming']);
  assert.deepEqual(report.progressEvents, [{ name: 'mediaAcquired', duration: 2.5 }]);
  assert.equal(report.stats, null);
  assert.equal(report.error.code, 53001);
  assert.ok(report.testTiming.duration > 0 && report.testTiming.end > report.testTiming.start);

  ({ ws, events } = await started());
  ws.open();
  ws.receive({ type: 'error', code: 53000, message: 'signaling protocol version 2 is not supported' });
  assert.equal(events[0][1].code, 53000);
  assert.equal(events[0][1].message, 'signaling protocol version 2 is not supported');
});

test('stop() before the socket opens: the hello, then stopRequested; the core answers', async () => {
  const t = runPreflight('tok', { url: URL_, video: false });
  t.stop();
  await tick();
  const ws = sockets.at(-1);
  ws.open();
  assert.deepEqual(ws.sent.map((m) => m.type), ['ice', 'observe']);
  assert.equal(ws.sent[1].observation.kind, 'stopRequested');
  let failed = null;
  t.on('failed', (error) => { failed = error; });
  ws.receive({ type: 'event', event: { kind: 'failed', error: { code: 99000, name: 'PreflightStoppedError', message: 'stopped' }, report: {} } });
  assert.equal(failed.code, 99000);
});

test('stop() with a core that does not answer: failed 99000 all the same, within a second', async () => {
  const { t, ws, events } = await started();
  ws.open();
  const asked = performance.now();
  t.stop();
  t.stop(); // once is enough
  assert.equal(ws.observations().filter((m) => m.observation.kind === 'stopRequested').length, 1);
  while (!events.length && performance.now() - asked < 2000) await tick(20);
  assert.ok(performance.now() - asked < 1000);
  assert.equal(events[0][1].code, 99000);
  assert.equal(events[0][2].error.code, 99000);
});

test('observation times never decrease on the wire, whatever order they were seen in', async () => {
  const { ws } = await started();
  ws.open();
  ws.receive({ type: 'iced', ice_servers: [] });
  await tick(30);
  ws.receive({ type: 'action', action: { kind: 'openPeerConnections', iceServers: [], relayOnly: false } });
  ws.receive({ type: 'action', action: { kind: 'acquireMedia' } }); // an earlier time, sent later
  ws.receive({ type: 'action', action: { kind: 'connectSignaling' } });
  const times = ws.observations().map((m) => m.now);
  assert.ok(times.length >= 2);
  for (let i = 1; i < times.length; i++) assert.ok(times[i] >= times[i - 1], `${times}`);
});

test('a transport the server does not hand out: a media error to the core, no peer connection', async () => {
  const { ws } = await started({ transport: 'tls' });
  ws.open();
  ws.receive({ type: 'action', action: { kind: 'openPeerConnections', relayOnly: true,
    iceServers: [{ urls: ['turn:t:3478?transport=udp'], username: 'u', credential: 'c' }] } });
  const [obs] = ws.observations();
  assert.equal(obs.observation.kind, 'transportError');
  assert.equal(obs.observation.code, 53405);
  assert.match(obs.observation.message, /no TURN URL over tls/);
});

test('misuse throws at once', () => {
  assert.throws(() => runPreflight('', { url: URL_ }), TypeError);
  assert.throws(() => runPreflight('tok', { url: URL_, duration: -1 }), RangeError);
  assert.throws(() => runPreflight('tok', { url: URL_, transport: 'quic' }), RangeError);
  assert.throws(() => runPreflight('tok', { url: URL_, audio: false, video: false }), RangeError);
  assert.throws(() => runPreflight('tok', { url: 'ftp://x/' }), TypeError);
});

/** A test whose core has asked for the peer connections (`relayOnly` as given). */
async function connecting(relayOnly, options = {}) {
  const started_ = await started(options);
  const { ws } = started_;
  ws.open();
  ws.receive({ type: 'iced', ice_servers: [] });
  ws.receive({ type: 'action', action: { kind: 'openPeerConnections', relayOnly,
    iceServers: [{ urls: ['turn:t:3478'], username: 'u', credential: 'c' }] } });
  await tick(20);
  return { ...started_, kinds: () => ws.observations().map((m) => m.observation) };
}

test('the topology: a relay-only sender and an unrestricted receiver, both max-bundle', async () => {
  const { t } = await connecting(true);
  const [sender, receiver] = pcs;
  assert.equal(sender.config.iceTransportPolicy, 'relay');
  assert.equal(sender.config.bundlePolicy, 'max-bundle');
  assert.equal(receiver.config.iceTransportPolicy, undefined);
  assert.equal(receiver.config.bundlePolicy, 'max-bundle');
  assert.deepEqual(sender.config.iceServers[0].urls, ['turn:t:3478']);
  assert.deepEqual(sender.getTransceivers().map((x) => [x.direction, x.sender.track.kind]), [['sendonly', 'audio']]);
  t.stop();
  assert.ok(sender.closed && receiver.closed, 'stop() closes both at once');
  await connecting(false); // no TURN handed out: the sender may use host candidates
  assert.equal(pcs[2].config.iceTransportPolicy, 'all');
});

test('receiverRelayOnly (network emulation) makes the receiver relay-only too, only with a relay-only sender', async () => {
  assert.throws(() => runPreflight('tok', { url: URL_, receiverRelayOnly: 'yes' }), TypeError);
  await connecting(true, { receiverRelayOnly: true });
  assert.deepEqual(pcs.map((pc) => pc.config.iceTransportPolicy), ['relay', 'relay']);
  await connecting(false, { receiverRelayOnly: true }); // no TURN: nothing to relay through
  assert.deepEqual(pcs.slice(2).map((pc) => pc.config.iceTransportPolicy), ['all', undefined]);
});

test('steps a browser cannot observe are said to be unobservable, never invented', async () => {
  browser.connectionState = false; // Firefox: no connectionState
  // and no RTCDtlsTransport (Safari)
  const { kinds } = await connecting(true);
  const unobservable = kinds().filter((o) => o.kind === 'stepUnobservable').map((o) => o.name).sort();
  assert.deepEqual(unobservable, ['dtlsConnected', 'peerConnectionConnected']);
  assert.equal(kinds().filter((o) => o.kind === 'connectionStateChanged' || o.kind === 'dtlsStateChanged').length, 0);
});

test('where the browser has them, ICE, DTLS and connection states are reported as they change', async () => {
  globalThis.RTCDtlsTransport = class {};
  const { kinds } = await connecting(true);
  const [sender, receiver] = pcs;
  const dtls = sender.getTransceivers()[0].sender.transport;
  for (const state of ['connecting', 'connected']) {
    dtls.state = state;
    dtls.dispatchEvent(new Event('statechange'));
  }
  sender.iceConnectionState = 'checking';
  sender.dispatchEvent(new Event('iceconnectionstatechange'));
  receiver.connectionState = 'connected';
  receiver.dispatchEvent(new Event('connectionstatechange'));
  const seen = kinds().filter((o) => o.role);
  assert.deepEqual(seen, [
    { v: 1, kind: 'dtlsStateChanged', role: 'publisher', state: 'connecting' },
    { v: 1, kind: 'dtlsStateChanged', role: 'publisher', state: 'connected' },
    { v: 1, kind: 'iceStateChanged', role: 'publisher', state: 'checking' },
    { v: 1, kind: 'connectionStateChanged', role: 'subscriber', state: 'connected' },
  ]);
  assert.equal(kinds().filter((o) => o.kind === 'stepUnobservable').length, 0);
});

test('a sender that gathers no candidate at all is a media error at once, with the TURN errors seen', async () => {
  const { kinds } = await connecting(true);
  const [sender] = pcs;
  sender.dispatchEvent(Object.assign(new Event('icecandidateerror'),
    { url: 'turn:t:3478', errorCode: 701, errorText: 'TURN allocate request timed out' }));
  sender.iceGatheringState = 'complete';
  sender.dispatchEvent(new Event('icegatheringstatechange'));
  const [error] = kinds().filter((o) => o.kind === 'transportError');
  assert.equal(error.code, 53405);
  assert.match(error.message, /no relay candidate.*turn:t:3478: 701 TURN allocate request timed out/);
});
