// rtcprobe: grading a preflight report for people (docs/browser.md#how-the-page-grades). Pure.
//
// The thresholds are those of Twilio's open-source video diagnostics app (rtt 100/250/400 ms,
// jitter 5/10/30 ms, loss 1/3/8 %, bitrate 1000/500/150 kbps), graded on the report's averages
// as that app does, with one correction: the report carries jitter in seconds and the app compared
// it with millisecond thresholds (so every jitter passed); here it is converted to ms first.
// A value the report does not have is "not measured", never "excellent".
//
// Bandwidth: that app graded the throughput of a separate bitrate test. A preflight sends a
// synthetic stream whose bitrate is set by its encoder's ramp-up and its simple picture, not by
// the network, so the delivered bitrate would grade a perfect network "fair". The grade is on the
// sender's bandwidth estimate at the end of the test instead (the browser's congestion
// controller, as the report's networkQuality stats carry it), and on the delivered bitrate only
// when the report has no estimate.

export const GRADES = ['excellent', 'good', 'fair', 'poor'];

export const THRESHOLDS = {
  rtt: { label: 'Round-trip time', unit: 'ms', limits: [100, 250, 400], higherIsBetter: false },
  jitter: { label: 'Jitter', unit: 'ms', limits: [5, 10, 30], higherIsBetter: false },
  loss: { label: 'Packet loss', unit: '%', limits: [1, 3, 8], higherIsBetter: false },
  bandwidth: { label: 'Bandwidth', unit: 'kbps', limits: [1000, 500, 150], higherIsBetter: true },
};

/** The grade of `value` against a metric's three limits: excellent below the first (above, for
 *  a metric where more is better), good below the second, fair below the third, else poor. */
export function grade(metric, value) {
  const t = THRESHOLDS[metric];
  if (typeof value !== 'number' || !Number.isFinite(value)) return null;
  const [good, fair, poor] = t.limits;
  if (t.higherIsBetter) {
    if (value > good) return 'excellent';
    if (value > fair) return 'good';
    if (value > poor) return 'fair';
    return 'poor';
  }
  if (value < good) return 'excellent';
  if (value < fair) return 'good';
  if (value < poor) return 'fair';
  return 'poor';
}

/** The worse of two grades (null, "not measured", never wins). */
export function worse(a, b) {
  if (a === null) return b;
  if (b === null) return a;
  return GRADES.indexOf(a) >= GRADES.indexOf(b) ? a : b;
}

/** The sender's bandwidth estimate at the end of the test, kbps (the largest over its media), or
 *  null when the report has none. */
export function estimatedKbps(report) {
  const media = report?.networkQuality?.stats ?? {};
  const bps = ['audio', 'video'].map((m) => media?.[m]?.sendStats?.bandwidth?.available)
    .filter((v) => typeof v === 'number' && Number.isFinite(v));
  return bps.length ? Math.max(...bps) / 1000 : null;
}

/** The report's averages in the page's units: rtt ms, jitter ms (the report has seconds), loss %,
 *  bandwidth kbps (the estimate, else the average bitrate received). null where the report has none. */
export function metrics(report) {
  const avg = (stat) => (stat && typeof stat.average === 'number' ? stat.average : null);
  const stats = report?.stats ?? null;
  const jitter = avg(stats?.jitter);
  return {
    rtt: avg(stats?.rtt),
    jitter: jitter === null ? null : jitter * 1000,
    loss: avg(stats?.packetLoss),
    bandwidth: estimatedKbps(report) ?? avg(report?.bitrate?.incoming),
  };
}

/** What one test says: `{transport, ok, grade, metrics: {name: {value, grade}}, error, relayed}`. */
export function verdict(transport, report, error = null) {
  const ok = !error && !report?.error;
  const values = metrics(report);
  const graded = {};
  let overall = null;
  for (const name of Object.keys(THRESHOLDS)) {
    const g = ok ? grade(name, values[name]) : null;
    graded[name] = { value: values[name], grade: g };
    overall = worse(overall, g);
  }
  const pair = report?.selectedIceCandidatePairStats;
  const relayed = Boolean(pair && [pair.localCandidate, pair.remoteCandidate].some((c) => c?.candidateType === 'relay'));
  const err = error ?? report?.error ?? null;
  return {
    transport,
    ok,
    grade: ok ? (overall ?? 'excellent') : 'failed',
    metrics: graded,
    relayed,
    level: report?.networkQuality?.level ?? null,
    error: err && { code: err.code, name: err.name, message: err.message },
  };
}

/** The verdict over every transport tested: the best transport decides whether calls work. */
export function overall(verdicts) {
  const passed = verdicts.filter((v) => v.ok);
  if (!passed.length) return 'failed';
  return passed.map((v) => v.grade).reduce((a, b) => (GRADES.indexOf(a) <= GRADES.indexOf(b) ? a : b));
}

const TRANSPORT_NAMES = { udp: 'UDP', tcp: 'TCP', tls: 'TLS (port 443 style)' };

export function transportName(transport) {
  return transport === null || transport === undefined ? 'Direct (no TURN)' : TRANSPORT_NAMES[transport] ?? transport;
}

/** Plain-words advice for the verdicts, most important first. */
export function recommendations(verdicts) {
  const out = [];
  const failed = verdicts.filter((v) => !v.ok);
  const passed = verdicts.filter((v) => v.ok);
  const codes = new Set(failed.map((v) => v.error?.code));
  if ([20101, 20103, 20104, 20105, 20107].some((c) => codes.has(c))) {
    out.push('The test link was refused by the test server (its access token is invalid or has expired). '
      + 'Open the test again from the site that sent you here to get a fresh link.');
    return out;
  }
  if ([53000, 53001, 53002].some((c) => codes.has(c)) && !passed.length) {
    out.push('Your browser could not keep a connection to the test server. Check that you are online; '
      + 'a firewall, proxy or VPN may be blocking WebSocket connections.');
    return out;
  }
  if (failed.length && !passed.length) {
    out.push('No media could get through from your network, over any connection type. A firewall is '
      + 'probably blocking it: ask your network administrator to allow UDP port 3478 and TCP ports '
      + '3478, 5349 and 443 to the TURN server, or try another network (a phone hotspot, say).');
    return out;
  }
  const udp = verdicts.find((v) => v.transport === 'udp');
  if (udp && !udp.ok && passed.length) {
    out.push(`Your network blocks UDP, which calls prefer; they will still connect over ${passed.map((v) => transportName(v.transport)).join(' and ')}, `
      + 'with a little more delay and less resilience. If you can, ask your network administrator to allow UDP port 3478.');
  } else if (failed.length) {
    out.push(`Media did not get through over ${failed.map((v) => transportName(v.transport)).join(' and ')}; `
      + 'calls will use the connection types that passed.');
  }
  const best = passed.reduce((a, b) => (a && GRADES.indexOf(a.grade) <= GRADES.indexOf(b.grade) ? a : b), null);
  if (best) {
    const m = best.metrics;
    const bad = (name) => m[name].grade === 'fair' || m[name].grade === 'poor';
    if (bad('rtt')) {
      out.push(`Delay is high (${Math.round(m.rtt.value)} ms round trip): conversations may feel slow and people may talk over each other. `
        + 'A wired connection, or sitting closer to your Wi-Fi router, helps; so does turning off a VPN.');
    }
    if (bad('jitter')) {
      out.push(`Packets arrive unevenly (jitter ${m.jitter.value.toFixed(1)} ms), which makes audio choppy. `
        + 'This usually comes from a busy or weak Wi-Fi: move closer to the router or use a cable.');
    }
    if (bad('loss')) {
      out.push(`Some packets are lost (${m.loss.value.toFixed(1)} %): expect frozen video and gaps in audio. `
        + 'Pause downloads, streaming and backups on your network, and move closer to the router.');
    }
    if (bad('bandwidth')) {
      out.push(`Bandwidth is low (about ${Math.round(m.bandwidth.value)} kbps): video will be blurry or turned off. `
        + 'Close other apps and tabs that use the network, or turn off your own video in calls.');
    }
    if (!out.length) out.push('Your network looks ready for video calls.');
  }
  return out;
}
