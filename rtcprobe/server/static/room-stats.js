// rtcprobe: one browser RTCPeerConnection's getStats() -> one link of a room sample
// (docs/signaling.md#client--server-samples, docs/network-quality-calls.md#javascript-browsers).
//
// Pure: no DOM, no WebRTC, no clock. In a call one peer connection both sends and receives, to
// one remote end: another participant (a mesh) or a media server (an SFU). Its report maps to
//
//   outbound-rtp        packetsSent, bytesSent (summed per kind)          -> audioOut / videoOut
//   remote-inbound-rtp  roundTripTime, jitter, fractionLost, packetsLost  -> remoteRtt, remoteJitter, ...
//   selected pair       availableOutgoingBitrate                          -> videoOut (else audioOut).availableBps
//                       currentRoundTripTime                              -> rtt
//   inbound-rtp         packetsReceived, packetsLost, bytesReceived,
//                       jitter (summed per kind and source)               -> inbound[]
//
// Browsers report seconds, bytes and fractions 0..1 already: nothing is rescaled. Unlike the
// preflight's mapping, lost counts keep their sign (RTCP counts duplicates as negative loss, and
// the room accepts that); gauges the room would refuse are dropped to null.

import { selectedCandidatePair, statsList } from './stats.js';

const MAX_COUNTER = Number.MAX_SAFE_INTEGER;
const MEDIA = ['audio', 'video'];

function isNumber(x) {
  return typeof x === 'number' && Number.isFinite(x);
}

/** A gauge the room accepts (finite, 0..high), else null. */
function gauge(x, high = Infinity) {
  return isNumber(x) && x >= 0 && x <= high ? x : null;
}

/** A sum of counters as an integer in 0..2^53-1 (`signed`: -(2^53-1)..2^53-1). */
function total(stats, key, signed = false) {
  const x = Math.round(stats.reduce((acc, s) => acc + (isNumber(s[key]) ? s[key] : 0), 0));
  return Math.min(MAX_COUNTER, Math.max(signed ? -MAX_COUNTER : 0, x));
}

function worst(values, high = Infinity) {
  const ok = values.map((v) => gauge(v, high)).filter((v) => v !== null);
  return ok.length ? Math.max(...ok) : null;
}

function kindOf(stat) {
  return stat.kind ?? stat.mediaType;
}

/** The link's sent `kind` streams, or null when it sends none of that kind. */
export function sent(list, kind, availableBps = null) {
  const out = list.filter((s) => s && s.type === 'outbound-rtp' && kindOf(s) === kind);
  if (!out.length) return null;
  const ids = new Set(out.map((s) => s.id));
  // A remote-inbound-rtp belongs to the outbound-rtp it names (localId); older reports lack it.
  const remote = list.filter((s) => s && s.type === 'remote-inbound-rtp' && kindOf(s) === kind
    && (s.localId === undefined || ids.has(s.localId)));
  const lost = remote.filter((r) => isNumber(r.packetsLost));
  return {
    packetsSent: total(out, 'packetsSent'),
    bytesSent: total(out, 'bytesSent'),
    remoteRtt: worst(remote.map((r) => r.roundTripTime)),
    remoteJitter: worst(remote.map((r) => r.jitter)),
    remoteFractionLost: worst(remote.map((r) => r.fractionLost), 1),
    remotePacketsLost: lost.length ? total(lost, 'packetsLost', true) : null,
    availableBps: gauge(availableBps),
  };
}

/**
 * The link's received streams, one per kind and source: `sourceOf(stat)` names whose media an
 * inbound-rtp carries (on a server link; null: unknown), else every stream is the link remote's
 * (`source` null).
 */
export function received(list, sourceOf = () => null) {
  const groups = new Map();
  for (const s of list) {
    if (!s || s.type !== 'inbound-rtp' || !MEDIA.includes(kindOf(s))) continue;
    const source = sourceOf(s);
    const key = `${kindOf(s)}\u0000${source ?? ''}`;
    if (!groups.has(key)) groups.set(key, { kind: kindOf(s), source: typeof source === 'string' && source ? source : null, stats: [] });
    groups.get(key).stats.push(s);
  }
  return Array.from(groups.values()).map(({ kind, source, stats }) => ({
    kind,
    source,
    packetsReceived: total(stats, 'packetsReceived'),
    packetsLost: total(stats, 'packetsLost', true),
    bytesReceived: total(stats, 'bytesReceived'),
    jitter: worst(stats.map((s) => s.jitter)),
  }));
}

/**
 * One link of an `nq-sample` from one peer connection's getStats() report (RTCStatsReport, Map,
 * array or object of stat dicts). Options: `remote` (the participant at the other end, or the
 * media server's name when `server`), `server` (default false), `sourceByMid` (server links: a
 * transceiver's mid -> the identity whose media it receives; Chromium names each inbound-rtp's
 * `mid`), `inboundIncludesUplink` (server links: default true).
 */
export function mapLink(report, { remote, server = false, sourceByMid = null, inboundIncludesUplink = true } = {}) {
  if (typeof remote !== 'string' || remote === '') throw new TypeError('a link needs its remote (a non-empty string)');
  const list = statsList(report);
  const pair = selectedCandidatePair(list);
  const available = pair ? gauge(pair.availableOutgoingBitrate) : null;
  const videoOut = sent(list, 'video', available);
  // The estimate covers the whole transport: it goes with video, the stream it limits, when sent.
  const audioOut = sent(list, 'audio', videoOut === null ? available : null);
  const lookup = server && sourceByMid ? (s) => (sourceByMid instanceof Map ? sourceByMid.get(s.mid) : sourceByMid[s.mid]) ?? null : () => null;
  return {
    remote,
    server: Boolean(server),
    rtt: pair ? gauge(pair.currentRoundTripTime) : null,
    audioOut,
    videoOut,
    inbound: received(list, lookup),
    inboundIncludesUplink: Boolean(inboundIncludesUplink),
  };
}

/**
 * The demand (what is published and subscribed to) of peer connections described as transceiver
 * summaries `{kind, sending, receiving, video: {width, height, fps} | null}`: a sent video's size
 * from its track's settings (else 640x480@30); a received video is taken to be the size sent
 * (else the same default), as the Python client does.
 */
export function demandOf(transceivers) {
  const DEFAULT = { width: 640, height: 480, fps: 30 };
  let audioSend = false;
  let audioRecv = false;
  let videoSend = null;
  let videoRecv = false;
  for (const t of transceivers) {
    if (t.kind === 'audio') {
      audioSend ||= Boolean(t.sending);
      audioRecv ||= Boolean(t.receiving);
    } else if (t.kind === 'video') {
      if (t.sending && videoSend === null) {
        const v = t.video ?? {};
        const ok = (x, lo, hi) => isNumber(x) && x >= lo && x <= hi;
        videoSend = {
          width: ok(v.width, 1, 7680) ? Math.round(v.width) : DEFAULT.width,
          height: ok(v.height, 1, 4320) ? Math.round(v.height) : DEFAULT.height,
          fps: ok(v.fps, 1, 120) ? v.fps : DEFAULT.fps,
        };
      }
      videoRecv ||= Boolean(t.receiving);
    }
  }
  return { audioSend, audioRecv, videoSend, videoRecv: videoRecv ? (videoSend ?? { ...DEFAULT }) : null };
}
