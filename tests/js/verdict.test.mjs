// Grading a report for people (static/verdict.js): thresholds, units, advice.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { grade, metrics, overall, recommendations, verdict, worse } from '../../rtcprobe/server/static/verdict.js';

test('thresholds: excellent below the first limit, poor from the third on', () => {
  assert.equal(grade('rtt', 99.9), 'excellent');
  assert.equal(grade('rtt', 100), 'good');
  assert.equal(grade('rtt', 250), 'fair');
  assert.equal(grade('rtt', 399), 'fair');
  assert.equal(grade('rtt', 400), 'poor');
  assert.equal(grade('jitter', 4.9), 'excellent');
  assert.equal(grade('jitter', 10), 'fair');
  assert.equal(grade('loss', 0), 'excellent');
  assert.equal(grade('loss', 1), 'good');
  assert.equal(grade('loss', 8), 'poor');
});

test('bandwidth: more is better', () => {
  assert.equal(grade('bandwidth', 1001), 'excellent');
  assert.equal(grade('bandwidth', 1000), 'good');
  assert.equal(grade('bandwidth', 501), 'good');
  assert.equal(grade('bandwidth', 500), 'fair');
  assert.equal(grade('bandwidth', 150), 'poor');
});

test('bandwidth is the sender\'s estimate when the report has one, else the bitrate received', () => {
  const r = {
    bitrate: { incoming: { average: 420 } },
    networkQuality: { level: 5, stats: { audio: { sendStats: { bandwidth: { available: null } } },
      video: { sendStats: { bandwidth: { available: 3605538 } } } } },
  };
  assert.equal(metrics(r).bandwidth, 3605.538);
  assert.equal(verdict('udp', { ...r, stats: { rtt: { average: 1 }, jitter: { average: 0 }, packetLoss: { average: 0 } } })
    .metrics.bandwidth.grade, 'excellent');
  assert.equal(metrics({ ...r, networkQuality: { level: 5, stats: { level: 5 } } }).bandwidth, 420);
  assert.equal(metrics({}).bandwidth, null);
});

test('not measured is not excellent', () => {
  assert.equal(grade('rtt', null), null);
  assert.equal(grade('rtt', NaN), null);
  assert.equal(worse(null, 'fair'), 'fair');
  assert.equal(worse('good', null), 'good');
  assert.equal(worse('good', 'poor'), 'poor');
});

const report = (jitterSeconds) => ({
  stats: { rtt: { average: 40 }, jitter: { average: jitterSeconds }, packetLoss: { average: 0.5 } },
  bitrate: { incoming: { average: 1500 }, outgoing: { average: 1600 } },
  selectedIceCandidatePairStats: { localCandidate: { candidateType: 'prflx' }, remoteCandidate: { candidateType: 'relay' } },
  networkQuality: { level: 5 },
});

test('jitter is graded in ms: the report\'s seconds are converted first', () => {
  // 20 ms of jitter is fair. Compared in the report's unit (0.02) it would pass as excellent,
  // which is what Twilio's diagnostics app did.
  assert.equal(metrics(report(0.02)).jitter, 20);
  const v = verdict('udp', report(0.02));
  assert.equal(v.metrics.jitter.grade, 'fair');
  assert.equal(v.grade, 'fair');
  assert.equal(verdict('udp', report(0.002)).grade, 'excellent');
});

test('a verdict: graded metrics, relayed, level; a failed test is failed whatever its stats', () => {
  const v = verdict('tcp', report(0.001));
  assert.equal(v.ok, true);
  assert.equal(v.relayed, true);
  assert.equal(v.level, 5);
  assert.deepEqual(v.metrics.rtt, { value: 40, grade: 'excellent' });
  const failed = { ...report(0.001), error: { code: 53405, name: 'MediaConnectionError', message: 'ICE failed' } };
  const f = verdict('udp', failed);
  assert.equal(f.grade, 'failed');
  assert.equal(f.ok, false);
  assert.equal(f.error.code, 53405);
  assert.equal(f.metrics.rtt.grade, null);
  assert.equal(verdict('udp', null, { code: 53001, name: 'x', message: 'gone' }).grade, 'failed');
});

test('the overall verdict is the best transport\'s: calls use what passes', () => {
  const ok = verdict('tcp', report(0.001));
  const bad = verdict('udp', null, { code: 53405, name: 'MediaConnectionError', message: 'ICE failed' });
  assert.equal(overall([bad, ok]), 'excellent');
  assert.equal(overall([bad]), 'failed');
  assert.equal(overall([verdict('udp', report(0.02)), ok]), 'excellent');
});

test('advice in plain words: UDP blocked, nothing passes, a bad token, a good network', () => {
  const ok = verdict('tcp', report(0.001));
  const udpFailed = verdict('udp', null, { code: 53405, name: 'MediaConnectionError', message: 'ICE failed' });
  assert.match(recommendations([udpFailed, ok])[0], /blocks UDP/);
  assert.match(recommendations([udpFailed])[0], /No media could get through/);
  const token = verdict('udp', null, { code: 20104, name: 'AccessTokenExpiredError', message: 'expired' });
  assert.match(recommendations([token])[0], /refused by the test server/);
  const gone = verdict('udp', null, { code: 53001, name: 'x', message: 'gone' });
  assert.match(recommendations([gone])[0], /could not keep a connection/);
  assert.deepEqual(recommendations([ok]), ['Your network looks ready for video calls.']);
  const slow = verdict(null, { ...report(0.001), stats: { ...report(0.001).stats, rtt: { average: 420 } } });
  assert.match(recommendations([slow]).join(' '), /Delay is high \(420 ms/);
  const thin = verdict('udp', { ...report(0.001), bitrate: { incoming: { average: 120 } } });
  assert.match(recommendations([thin]).join(' '), /Bandwidth is low \(about 120 kbps/);
});
