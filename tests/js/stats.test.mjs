// The getStats() -> `stats` observation mapping (rtcprobe/server/static/stats.js), on stats
// Chromium produced for Twilio's two-peer-connection loopback (fixtures/) and on hand-made
// reports for the edges a browser may show.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  candidateStats, inbound, mapStats, mediaArrived, outbound, selectedCandidatePair, statsList,
} from '../../rtcprobe/server/static/stats.js';

const fixture = (name) => JSON.parse(readFileSync(new URL(`fixtures/${name}`, import.meta.url), 'utf8'));
const host = fixture('chrome-host-loopback.json');
const turn = fixture('chrome-turn-tcp-loopback.json');

const CODEC_KEYS = ['audioIn', 'audioOut', 'candidatePairRtt', 'iceCandidates', 'loopback', 'selectedPair', 'videoIn', 'videoOut'];

test('a Chromium loopback maps to the codec sample, counters per kind, SI units', () => {
  const s = mapStats(host.publisher, host.subscriber);
  assert.deepEqual(Object.keys(s).sort(), CODEC_KEYS);
  assert.deepEqual(s.audioOut, {
    packetsSent: 300, bytesSent: 24211, remoteRtt: 0.004761, remoteJitter: 0.0009159999999999999,
    remoteFractionLost: 0, remotePacketsLost: 0,
    availableBps: null, // the transport's estimate goes with video
  });
  assert.equal(s.videoOut.packetsSent, 286);
  assert.equal(s.videoOut.bytesSent, 194159);
  assert.equal(s.videoOut.remoteRtt, 0.001);
  assert.equal(s.videoOut.availableBps, 1294153); // the publisher's selected pair
  assert.deepEqual(s.audioIn, { packetsReceived: 300, packetsLost: 0, bytesReceived: 24211, jitter: 0 });
  assert.deepEqual(s.videoIn, { packetsReceived: 286, packetsLost: 0, bytesReceived: 194159, jitter: 0 });
  assert.equal(s.candidatePairRtt, 0.001); // the subscriber's selected pair, seconds
  assert.equal(s.loopback, true);
});

test('candidates and the selected pair come from the subscriber, in the report shape', () => {
  const s = mapStats(host.publisher, host.subscriber);
  assert.equal(s.iceCandidates.length, 4);
  for (const c of s.iceCandidates) {
    assert.deepEqual(Object.keys(c).sort(),
      ['address', 'candidateType', 'port', 'priority', 'protocol', 'relayProtocol', 'transportId', 'url']);
  }
  assert.deepEqual(s.selectedPair.localCandidate, {
    transportId: 'T01', candidateType: 'host', port: 55413, address: 'fd00::2', priority: 2113942271,
    protocol: 'udp', url: null, relayProtocol: null,
  });
  assert.equal(s.selectedPair.remoteCandidate.port, 60079);
});

test('through TURN over TCP: the receiver selected the sender\'s relay candidate', () => {
  const s = mapStats(turn.publisher, turn.subscriber);
  assert.equal(s.selectedPair.remoteCandidate.candidateType, 'relay');
  assert.equal(s.selectedPair.localCandidate.candidateType, 'prflx');
  const relay = s.iceCandidates.find((c) => c.candidateType === 'relay' && c.relayProtocol !== null);
  assert.equal(relay.relayProtocol, 'tcp');
  assert.match(relay.url, /^turn:127\.0\.0\.1:\d+\?transport=tcp$/);
  // The host TCP candidates Chromium lists with port 9 (active TCP) are kept as reported.
  assert.ok(s.iceCandidates.some((c) => c.protocol === 'tcp' && c.port === 9));
  assert.equal(s.candidatePairRtt, 0.001);
});

test('no stats yet: every stream null, no candidates, still a loopback sample', () => {
  assert.deepEqual(mapStats([], new Map()), {
    audioOut: null, videoOut: null, audioIn: null, videoIn: null, candidatePairRtt: null,
    iceCandidates: [], selectedPair: null, loopback: true,
  });
});

test('several streams of a kind: counters summed, gauges the worst', () => {
  const pub = [
    { type: 'outbound-rtp', kind: 'video', packetsSent: 10, bytesSent: 1000 },
    { type: 'outbound-rtp', kind: 'video', packetsSent: 5, bytesSent: 500 },
    { type: 'remote-inbound-rtp', kind: 'video', roundTripTime: 0.02, jitter: 0.001, fractionLost: 0.1, packetsLost: 2, packetsReceived: 8 },
    { type: 'remote-inbound-rtp', kind: 'video', roundTripTime: 0.05, jitter: 0.004, fractionLost: 0.0, packetsLost: 1, packetsReceived: 4 },
  ];
  const v = outbound(pub, 'video');
  assert.equal(v.packetsSent, 15);
  assert.equal(v.bytesSent, 1500);
  assert.equal(v.remoteRtt, 0.05);
  assert.equal(v.remoteJitter, 0.004);
  assert.equal(v.remoteFractionLost, 0.1);
  assert.equal(v.remotePacketsLost, 3);
  assert.equal(outbound(pub, 'audio'), null);
});

test('values the codec would refuse are dropped or floored, never passed on', () => {
  const pub = [
    { type: 'outbound-rtp', kind: 'audio', packetsSent: 'many', bytesSent: -5 },
    { type: 'remote-inbound-rtp', kind: 'audio', roundTripTime: NaN, jitter: -1, fractionLost: 1.5, packetsLost: -3 },
  ];
  assert.deepEqual(outbound(pub, 'audio'), {
    packetsSent: 0, bytesSent: 0, remoteRtt: null, remoteJitter: null, remoteFractionLost: null,
    remotePacketsLost: 0, availableBps: null,
  });
  const sub = [
    { type: 'inbound-rtp', kind: 'audio', packetsReceived: 2 ** 60, packetsLost: -4, bytesReceived: 12.7, jitter: Infinity },
  ];
  assert.deepEqual(inbound(sub, 'audio'), {
    packetsReceived: Number.MAX_SAFE_INTEGER, packetsLost: 0, bytesReceived: 13, jitter: null,
  });
});

test('the selected pair: the transport\'s id first, Firefox\'s `selected` flag otherwise', () => {
  const a = { type: 'candidate-pair', id: 'A', currentRoundTripTime: 0.01 };
  const b = { type: 'candidate-pair', id: 'B', currentRoundTripTime: 0.02, selected: true };
  assert.equal(selectedCandidatePair([a, b, { type: 'transport', selectedCandidatePairId: 'A' }]), a);
  assert.equal(selectedCandidatePair([a, b]), b);
  assert.equal(selectedCandidatePair([a]), null);
  // No selected pair: no candidate-pair rtt (the core then falls back to the receiver reports).
  assert.equal(mapStats([], [a]).candidatePairRtt, null);
});

test('a candidate missing a field of the report shape is left out, not invented', () => {
  const ok = { type: 'local-candidate', id: 'x', transportId: 'T', candidateType: 'host', port: 5000, address: '10.0.0.1', priority: 1, protocol: 'UDP' };
  assert.equal(candidateStats(ok).protocol, 'udp');
  assert.equal(candidateStats({ ...ok, address: undefined }), null); // hidden behind mDNS
  assert.equal(candidateStats({ ...ok, port: 70000 }), null);
  assert.equal(candidateStats({ ...ok, candidateType: 'weird' }), null);
  assert.equal(candidateStats({ ...ok, priority: -1 }), null);
  // Older names (ip, portNumber, transport) are read as twilio-video.js reads them.
  const old = { type: 'local-candidate', transportId: 'T', candidateType: 'relay', portNumber: 1, ip: '1.2.3.4', priority: 2, transport: 'udp', relayProtocol: 'TLS' };
  assert.deepEqual(candidateStats(old), {
    transportId: 'T', candidateType: 'relay', port: 1, address: '1.2.3.4', priority: 2, protocol: 'udp', url: null, relayProtocol: 'tls',
  });
  // A pair whose candidate is dropped is no selected pair.
  const sub = [
    { type: 'transport', selectedCandidatePairId: 'P' },
    { type: 'candidate-pair', id: 'P', localCandidateId: 'L', remoteCandidateId: 'R' },
    { ...ok, id: 'L' },
    { ...ok, id: 'R', type: 'remote-candidate', address: undefined },
  ];
  assert.equal(mapStats([], sub).selectedPair, null);
  assert.equal(mapStats([], sub).iceCandidates.length, 1);
});

test('statsList reads a Map, an array or a plain object', () => {
  const s = { type: 'inbound-rtp' };
  assert.deepEqual(statsList(new Map([['a', s]])), [s]);
  assert.deepEqual(statsList([s]), [s]);
  assert.deepEqual(statsList({ a: s }), [s]);
  assert.deepEqual(statsList(null), []);
});

test('mediaArrived: a packet for audio, a decoded frame for video', () => {
  const sub = [
    { type: 'inbound-rtp', kind: 'audio', packetsReceived: 1 },
    { type: 'inbound-rtp', kind: 'video', packetsReceived: 40, framesDecoded: 0 },
  ];
  assert.equal(mediaArrived(sub, 'audio'), true);
  assert.equal(mediaArrived(sub, 'video'), false);
  assert.equal(mediaArrived(host.subscriber, 'video'), true);
  assert.equal(mediaArrived([], 'audio'), false);
});
