// TURN transports, the per-transport ICE server filter and the signaling URL (static/ice.js).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { filterIceServers, signalingUrl, transportsOf, turnTransport } from '../../rtcprobe/server/static/ice.js';

test('the transport of a TURN URL (RFC 7065)', () => {
  assert.equal(turnTransport('turn:127.0.0.1:3478'), 'udp');
  assert.equal(turnTransport('turn:127.0.0.1:3478?transport=udp'), 'udp');
  assert.equal(turnTransport('turn:127.0.0.1:3478?transport=tcp'), 'tcp');
  assert.equal(turnTransport('TURN:host?transport=TCP'), 'tcp');
  assert.equal(turnTransport('turns:host:5349?transport=tcp'), 'tls');
  assert.equal(turnTransport('turns:host:443'), 'tls');
  assert.equal(turnTransport('stun:host:3478'), null);
  assert.equal(turnTransport(42), null);
});

const servers = [{
  urls: ['turn:t:3478?transport=udp', 'turn:t:3478?transport=tcp', 'turns:t:5349?transport=tcp'],
  username: 'u', credential: 'c',
}, { urls: 'stun:s:3478' }];

test('the transports a server hands out, in a fixed order, once each', () => {
  assert.deepEqual(transportsOf(servers), ['udp', 'tcp', 'tls']);
  assert.deepEqual(transportsOf([{ urls: ['turns:a', 'turn:b?transport=tcp', 'turns:c'] }]), ['tcp', 'tls']);
  assert.deepEqual(transportsOf([]), []);
});

test('one transport keeps only its TURN URLs, and its credentials', () => {
  assert.deepEqual(filterIceServers(servers, 'tcp'), [{ urls: ['turn:t:3478?transport=tcp'], username: 'u', credential: 'c' }]);
  assert.deepEqual(filterIceServers(servers, 'tls')[0].urls, ['turns:t:5349?transport=tcp']);
  assert.deepEqual(filterIceServers([{ urls: ['turn:x?transport=tcp'] }], 'udp'), []);
  // No transport: every server as given (a string `urls` becomes a list).
  assert.deepEqual(filterIceServers(servers, null)[1].urls, ['stun:s:3478']);
  assert.deepEqual(filterIceServers([], 'udp'), []);
  // The input is not modified.
  assert.equal(servers[0].urls.length, 3);
});

test('the signaling URL: given, derived from an http(s) address, or the script\'s server', () => {
  const base = 'https://probe.example.com/rtcprobe.js';
  assert.equal(signalingUrl(undefined, base), 'wss://probe.example.com/signaling');
  assert.equal(signalingUrl(undefined, 'http://127.0.0.1:8765/rtcprobe.js'), 'ws://127.0.0.1:8765/signaling');
  assert.equal(signalingUrl('ws://10.0.0.1:9000/signaling', base), 'ws://10.0.0.1:9000/signaling');
  assert.equal(signalingUrl('https://other.example.com', base), 'wss://other.example.com/signaling');
  assert.equal(signalingUrl('http://other.example.com:81/custom#frag', base), 'ws://other.example.com:81/custom');
  assert.throws(() => signalingUrl('ftp://x/', base), TypeError);
});
