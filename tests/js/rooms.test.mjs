// rooms.js (connect(), Room, participants) with a scripted WebSocket and a fake peer connection:
// the hello, the join, samples of the monitored peer connections, levels and participant events,
// the relay and the endings. The real thing runs in Chromium: tests/test_browser_rooms.py.
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
    queueMicrotask(() => { this.readyState = FakeWebSocket.OPEN; this.onopen?.(); });
  }

  send(text) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('not open');
    this.sent.push(JSON.parse(text));
  }

  close(code) {
    this.readyState = FakeWebSocket.CLOSED;
    this.closedWith = code;
  }

  receive(obj) {
    this.onmessage?.({ data: JSON.stringify(obj) });
  }

  drop(code = 1006) {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason: '', wasClean: code !== 1006 });
  }

  of(type) {
    return this.sent.filter((m) => m.type === type);
  }
}

/** A peer connection sending audio and 320x240@15 video to its remote and receiving the same. */
class FakePeerConnection {
  constructor() {
    this.connectionState = 'connected';
    this.signalingState = 'stable';
    this.packets = 100;
  }

  getTransceivers() {
    const track = (kind) => ({ kind, getSettings: () => (kind === 'video' ? { width: 320, height: 240, frameRate: 15 } : {}) });
    return ['audio', 'video'].map((kind, i) => ({
      mid: String(i), currentDirection: 'sendrecv', sender: { track: track(kind) }, receiver: { track: { kind } },
    }));
  }

  async getStats() {
    const n = this.packets;
    return new Map([
      ['o', { id: 'o', type: 'outbound-rtp', kind: 'audio', packetsSent: n, bytesSent: n * 100 }],
      ['r', { id: 'r', type: 'remote-inbound-rtp', kind: 'audio', localId: 'o', roundTripTime: 0.04, fractionLost: 0.01, packetsLost: 1 }],
      ['i', { id: 'i', type: 'inbound-rtp', kind: 'video', mid: '1', packetsReceived: n, packetsLost: 2, bytesReceived: n * 900, jitter: 0.004 }],
    ]);
  }
}

let rooms;

beforeEach(async () => {
  sockets.length = 0;
  globalThis.WebSocket = FakeWebSocket;
  rooms = await import('../../rtcprobe/server/static/rooms.js');
});

afterEach(() => {
  for (const ws of sockets) ws.onclose = null;
  delete globalThis.WebSocket;
});

const tick = () => new Promise((r) => setTimeout(r, 0));

/** connect() answered by the scripted server: iced, joined (with bob there), a first push. */
async function joined(options = {}, participants = [{ identity: 'bob', state: 'connected' }]) {
  const pending = rooms.connect('T', { url: 'ws://127.0.0.1:9/signaling', networkQuality: { local: 3, remote: 1 }, ...options });
  await tick();
  const ws = sockets.at(-1);
  ws.receive({ type: 'iced', ice_servers: [{ urls: ['turn:127.0.0.1:3478'], username: 'u', credential: 'c' }] });
  ws.receive({ type: 'joined', room: 'standup', identity: 'alice', reconnected: false, networkQuality: { local: 3, remote: 1 },
    participants, sampleInterval: 0.2, minSampleInterval: 0.2 });
  return { room: await pending, ws };
}

test('connect() sends the room hello and resolves with the joined room', async () => {
  const demand = { audioSend: true, audioRecv: false, videoSend: null, videoRecv: null };
  const { room, ws } = await joined({ name: 'standup', demand });
  assert.deepEqual(ws.sent[0], { type: 'ice', preflight: false, token: 'T', version: 2, region: 'gll',
    room: { networkQuality: { local: 3, remote: 1 }, name: 'standup', demand } });
  assert.ok(room instanceof rooms.Room);
  assert.equal(room.name, 'standup');
  assert.equal(room.state, 'connected');
  assert.equal(room.localParticipant.identity, 'alice');
  assert.deepEqual([...room.participants.keys()], ['bob']);
  assert.ok(room.participants.get('bob') instanceof rooms.RemoteParticipant);
  assert.equal(room.participants.get('bob').networkQualityLevel, null);
  assert.deepEqual(room.iceServers, [{ urls: ['turn:127.0.0.1:3478'], username: 'u', credential: 'c' }]);
  assert.equal(room.sampleInterval, 200); // the server's, in ms
  room.disconnect();
  assert.deepEqual(ws.sent.at(-1), { type: 'bye' });
  assert.equal(room.state, 'disconnected');
});

test('levels go to the participant they are about; the event fires when the level changed', async () => {
  const { room, ws } = await joined();
  const seen = [];
  room.localParticipant.on('networkQualityLevelChanged', (level, stats) => seen.push(['me', level, stats.level]));
  room.participants.get('bob').on('networkQualityLevelChanged', (level) => seen.push(['bob', level]));
  const stats = { level: 4, audio: { send: 4, recv: 5, sendStats: null, recvStats: null }, video: null };
  ws.receive({ type: 'network-quality', updates: [
    { identity: 'alice', local: true, level: 4, levelChanged: true, stats },
    { identity: 'bob', local: false, level: 2, levelChanged: true, stats: { level: 2, audio: null, video: null } },
    { identity: 'nobody', local: false, level: 1, levelChanged: true, stats: null },
  ] });
  ws.receive({ type: 'network-quality', updates: [
    { identity: 'alice', local: true, level: 4, levelChanged: false, stats: { ...stats, audio: null } },
    { identity: 'bob', local: false, level: 'x' },
  ] });
  assert.deepEqual(seen, [['me', 4, 4], ['bob', 2]]);
  assert.equal(room.localParticipant.networkQualityLevel, 4);
  assert.equal(room.localParticipant.networkQualityStats.audio, null); // refreshed without an event
  assert.equal(room.participants.get('bob').networkQualityLevel, 2);
  room.disconnect();
});

test('participant events keep room.participants up to date', async () => {
  const { room, ws } = await joined();
  const seen = [];
  for (const e of ['participantConnected', 'participantDisconnected', 'participantReconnecting', 'participantReconnected']) {
    room.on(e, (p) => seen.push([e, p.identity, p.state]));
  }
  ws.receive({ type: 'participant-connected', identity: 'carol' });
  ws.receive({ type: 'participant-reconnecting', identity: 'bob' });
  ws.receive({ type: 'participant-reconnected', identity: 'bob' });
  ws.receive({ type: 'participant-disconnected', identity: 'bob', reason: 'left' });
  ws.receive({ type: 'participant-disconnected', identity: 'nobody' });
  assert.deepEqual(seen, [
    ['participantConnected', 'carol', 'connected'], ['participantReconnecting', 'bob', 'reconnecting'],
    ['participantReconnected', 'bob', 'connected'], ['participantDisconnected', 'bob', 'disconnected'],
  ]);
  assert.deepEqual([...room.participants.keys()], ['carol']);
  room.disconnect();
});

test('monitored peer connections are sampled into nq-sample links; the demand is read from them once', async () => {
  const { room, ws } = await joined({ sampleInterval: 200 });
  const pc = new FakePeerConnection();
  room.monitor(pc, 'bob');
  assert.throws(() => room.monitor(pc, 'bob'), /monitored already/);
  assert.throws(() => room.monitor(new FakePeerConnection(), 'alice'), RangeError);
  assert.throws(() => room.monitor({}, 'carol'), TypeError);
  await new Promise((r) => setTimeout(r, 450));
  pc.connectionState = 'closed';
  await new Promise((r) => setTimeout(r, 250));
  room.disconnect();
  const samples = ws.of('nq-sample').map((m) => m.sample);
  assert.ok(samples.length >= 3, JSON.stringify(samples));
  const [first, second] = samples;
  assert.equal(first.links.length, 1);
  const link = first.links[0];
  assert.equal(link.remote, 'bob');
  assert.equal(link.server, false);
  assert.deepEqual(link.audioOut, { packetsSent: 100, bytesSent: 10000, remoteRtt: 0.04, remoteJitter: null,
    remoteFractionLost: 0.01, remotePacketsLost: 1, availableBps: null });
  assert.deepEqual(link.inbound, [{ kind: 'video', source: null, packetsReceived: 100, packetsLost: 2,
    bytesReceived: 90000, jitter: 0.004 }]);
  assert.deepEqual(first.demand, { audioSend: true, audioRecv: true, videoSend: { width: 320, height: 240, fps: 15 },
    videoRecv: { width: 320, height: 240, fps: 15 } });
  assert.equal(second.demand, null); // unchanged: not sent again
  assert.deepEqual(samples.at(-1).links, []); // closed: dropped by itself
});

test('a server link names the sources of its received streams by transceiver', async () => {
  const { room, ws } = await joined({ sampleInterval: 200 });
  room.monitor(new FakePeerConnection(), null, { sourceOf: (t) => (t.mid === '1' ? 'bob' : null), inboundIncludesUplink: false });
  await new Promise((r) => setTimeout(r, 250));
  room.disconnect();
  const [link] = ws.of('nq-sample')[0].sample.links;
  assert.equal(link.remote, 'sfu');
  assert.equal(link.server, true);
  assert.equal(link.inboundIncludesUplink, false);
  assert.equal(link.inbound[0].source, 'bob');
});

test('signal() relays through the server; signals and room-errors come back as events', async () => {
  const { room, ws } = await joined();
  const got = [];
  room.on('signal', (from, data) => got.push(['signal', from, data]));
  room.on('error', (info) => got.push(['error', info.reason]));
  room.signal('bob', { description: { type: 'offer', sdp: 'v=0' } });
  assert.deepEqual(ws.sent.at(-1), { type: 'signal', to: 'bob', data: { description: { type: 'offer', sdp: 'v=0' } } });
  assert.throws(() => room.signal('bob', 'text'), TypeError);
  ws.receive({ type: 'signal', from: 'bob', data: { candidate: null } });
  ws.receive({ type: 'room-error', code: 53003, reason: 'too-frequent', message: '...' });
  assert.deepEqual(got, [['signal', 'bob', { candidate: null }], ['error', 'too-frequent']]);
  assert.equal(room.errors.length, 1);
  room.disconnect();
});

test('the server closing the room emits disconnected with its error', async () => {
  const { room, ws } = await joined();
  const ended = new Promise((resolve) => room.on('disconnected', (r, error) => resolve([r, error])));
  ws.receive({ type: 'error', code: 53205, message: 'replaced' });
  ws.drop(1008);
  const [r, error] = await ended;
  assert.equal(r, room);
  assert.ok(error instanceof rooms.RoomConnectError);
  assert.equal(error.code, 53205);
  assert.equal(error.name, 'ParticipantDuplicateIdentityError');
  assert.equal(room.state, 'disconnected');
});

test('connect() rejects with the server\'s code, or 53000 when nobody answers', async () => {
  const refused = rooms.connect('T', { url: 'ws://127.0.0.1:9/signaling' });
  await tick();
  sockets.at(-1).receive({ type: 'error', code: 20101, message: 'the token grants room r1' });
  await assert.rejects(refused, (e) => e instanceof rooms.RoomConnectError && e.code === 20101 && e.name === 'AccessTokenInvalidError');
  const unreachable = rooms.connect('T', { url: 'ws://127.0.0.1:9/signaling' });
  await tick();
  sockets.at(-1).drop(1006);
  await assert.rejects(unreachable, (e) => e.code === 53000);
  await assert.rejects(rooms.connect('T', { url: 'ws://127.0.0.1:9/signaling', timeout: 30 }), (e) => e.code === 53000);
  await assert.rejects(rooms.connect('', {}), TypeError);
  await assert.rejects(rooms.connect('T', { url: 'ftp://x', sampleInterval: 5 }), RangeError);
});
