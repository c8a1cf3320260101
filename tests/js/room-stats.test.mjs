// The getStats() -> room sample link mapping (rtcprobe/server/static/room-stats.js), on stats
// Chromium produced (fixtures/: the publisher's and subscriber's reports of one loopback, read
// together as one peer connection that sends and receives) and on hand-made reports for the edges.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { demandOf, mapLink, received, sent } from '../../rtcprobe/server/static/room-stats.js';

const fixture = (name) => JSON.parse(readFileSync(new URL(`fixtures/${name}`, import.meta.url), 'utf8'));
const host = fixture('chrome-host-loopback.json');
const both = [...host.publisher, ...host.subscriber.filter((s) => s.type === 'inbound-rtp')];

const LINK_KEYS = ['audioOut', 'inbound', 'inboundIncludesUplink', 'remote', 'rtt', 'server', 'videoOut'];
const OUT_KEYS = ['availableBps', 'bytesSent', 'packetsSent', 'remoteFractionLost', 'remoteJitter', 'remotePacketsLost', 'remoteRtt'];

test('a Chromium peer connection maps to one link of the wire shape, SI units', () => {
  const link = mapLink(both, { remote: 'bob' });
  assert.deepEqual(Object.keys(link).sort(), LINK_KEYS);
  assert.equal(link.remote, 'bob');
  assert.equal(link.server, false);
  assert.equal(link.inboundIncludesUplink, true);
  assert.deepEqual(Object.keys(link.audioOut).sort(), OUT_KEYS);
  assert.deepEqual(link.audioOut, {
    packetsSent: 300, bytesSent: 24211, remoteRtt: 0.004761, remoteJitter: 0.0009159999999999999,
    remoteFractionLost: 0, remotePacketsLost: 0, availableBps: null,
  });
  assert.equal(link.videoOut.packetsSent, 286);
  assert.equal(link.videoOut.availableBps, 1294153); // the selected pair's estimate goes with video
  assert.equal(link.rtt, 0.001); // the selected pair's currentRoundTripTime, seconds
  const byKind = Object.fromEntries(link.inbound.map((s) => [s.kind, s]));
  assert.deepEqual(byKind.audio, { kind: 'audio', source: null, packetsReceived: 300, packetsLost: 0, bytesReceived: 24211, jitter: 0 });
  assert.deepEqual(byKind.video, { kind: 'video', source: null, packetsReceived: 286, packetsLost: 0, bytesReceived: 194159, jitter: 0 });
  assert.equal(link.inbound.length, 2);
  assert.doesNotThrow(() => JSON.stringify(link));
});

test('a link that only receives has no outbound; one that only sends has no inbound', () => {
  const recvOnly = mapLink(host.subscriber, { remote: 'bob' });
  assert.equal(recvOnly.audioOut, null);
  assert.equal(recvOnly.videoOut, null);
  assert.equal(recvOnly.inbound.length, 2);
  const sendOnly = mapLink(host.publisher, { remote: 'bob' });
  assert.deepEqual(sendOnly.inbound, []);
  assert.ok(sendOnly.audioOut && sendOnly.videoOut);
  assert.deepEqual(mapLink(new Map(), { remote: 'x' }), {
    remote: 'x', server: false, rtt: null, audioOut: null, videoOut: null, inbound: [], inboundIncludesUplink: true,
  });
});

test('streams of one kind are summed, gauges take the worst, lost counts keep their sign', () => {
  const list = [
    { id: 'o1', type: 'outbound-rtp', kind: 'video', packetsSent: 10, bytesSent: 1000 },
    { id: 'o2', type: 'outbound-rtp', kind: 'video', packetsSent: 5, bytesSent: 400.4 },
    { id: 'r1', type: 'remote-inbound-rtp', kind: 'video', localId: 'o1', roundTripTime: 0.02, jitter: 0.001, fractionLost: 0.1, packetsLost: 3 },
    { id: 'r2', type: 'remote-inbound-rtp', kind: 'video', localId: 'o2', roundTripTime: 0.05, jitter: NaN, fractionLost: 1.5, packetsLost: -4 },
    { id: 'r3', type: 'remote-inbound-rtp', kind: 'video', localId: 'gone', roundTripTime: 9 },
    { id: 'i1', type: 'inbound-rtp', kind: 'audio', packetsReceived: 7, packetsLost: -2, bytesReceived: 70, jitter: 0.003 },
    { id: 'i2', type: 'inbound-rtp', kind: 'audio', packetsReceived: 3, packetsLost: 0, bytesReceived: 30, jitter: -1 },
    { id: 'i3', type: 'inbound-rtp', kind: 'data' },
  ];
  assert.deepEqual(sent(list, 'video'), {
    packetsSent: 15, bytesSent: 1400, remoteRtt: 0.05, remoteJitter: 0.001, remoteFractionLost: 0.1,
    remotePacketsLost: -1, availableBps: null,
  });
  assert.equal(sent(list, 'audio'), null);
  assert.deepEqual(received(list), [
    { kind: 'audio', source: null, packetsReceived: 10, packetsLost: -2, bytesReceived: 100, jitter: 0.003 },
  ]);
});

test('without a video stream the estimate goes with audio; no pair, no rtt', () => {
  const list = [
    { id: 't', type: 'transport', selectedCandidatePairId: 'p' },
    { id: 'p', type: 'candidate-pair', availableOutgoingBitrate: 300000, currentRoundTripTime: 0.03 },
    { id: 'o', type: 'outbound-rtp', kind: 'audio', packetsSent: 1, bytesSent: 2 },
  ];
  const link = mapLink(list, { remote: 'bob' });
  assert.equal(link.audioOut.availableBps, 300000);
  assert.equal(link.rtt, 0.03);
  assert.equal(mapLink(list.slice(2), { remote: 'bob' }).rtt, null);
});

test('a server link names each received stream\'s source by its mid, unknown ones null', () => {
  const list = [
    { id: 'a1', type: 'inbound-rtp', kind: 'audio', mid: '0', packetsReceived: 5, packetsLost: 1, bytesReceived: 50 },
    { id: 'v1', type: 'inbound-rtp', kind: 'video', mid: '1', packetsReceived: 6, packetsLost: 0, bytesReceived: 60 },
    { id: 'v2', type: 'inbound-rtp', kind: 'video', mid: '2', packetsReceived: 4, packetsLost: 0, bytesReceived: 40 },
    { id: 'v3', type: 'inbound-rtp', kind: 'video', mid: '3', packetsReceived: 1, packetsLost: 0, bytesReceived: 10 },
  ];
  const link = mapLink(list, { remote: 'sfu', server: true, sourceByMid: new Map([['0', 'ann'], ['1', 'ann'], ['2', 'ben']]),
    inboundIncludesUplink: false });
  assert.equal(link.server, true);
  assert.equal(link.inboundIncludesUplink, false);
  assert.deepEqual(link.inbound.map((s) => [s.kind, s.source, s.packetsReceived]),
    [['audio', 'ann', 5], ['video', 'ann', 6], ['video', 'ben', 4], ['video', null, 1]]);
  // on a peer link the sources are the remote's, whatever the map says
  assert.ok(mapLink(list, { remote: 'bob', sourceByMid: { 0: 'ann' } }).inbound.every((s) => s.source === null));
  assert.throws(() => mapLink(list, {}), TypeError);
});

test('the demand comes from the transceivers; a received video is taken to be the size sent', () => {
  assert.deepEqual(demandOf([]), { audioSend: false, audioRecv: false, videoSend: null, videoRecv: null });
  assert.deepEqual(demandOf([
    { kind: 'audio', sending: true, receiving: true },
    { kind: 'video', sending: true, receiving: true, video: { width: 320, height: 240, fps: 15 } },
  ]), { audioSend: true, audioRecv: true, videoSend: { width: 320, height: 240, fps: 15 },
    videoRecv: { width: 320, height: 240, fps: 15 } });
  assert.deepEqual(demandOf([{ kind: 'video', sending: false, receiving: true }]),
    { audioSend: false, audioRecv: false, videoSend: null, videoRecv: { width: 640, height: 480, fps: 30 } });
  assert.deepEqual(demandOf([{ kind: 'video', sending: true, receiving: false, video: { width: 0, fps: NaN } }]).videoSend,
    { width: 640, height: 480, fps: 30 });
});
