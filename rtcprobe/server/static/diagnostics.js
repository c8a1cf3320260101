// rtcprobe's diagnostics page (docs/browser.md#the-diagnostics-page): one preflight per TURN
// transport the server hands out, live steps and level, then graded verdicts, charts and advice.
//
// The token comes from the URL fragment (`#token=...`, handed in by the operator's app; the
// fragment never reaches a server and is dropped from the address bar once read) or, when the
// operator allows it, from the server itself (POST /token). `#duration=ms` shortens each test.

import { render } from './charts.js';
import { runPreflight } from './rtcprobe.js';
import { overall, recommendations, THRESHOLDS, transportName, verdict } from './verdict.js';

const $ = (id) => document.getElementById(id);

const fragment = new URLSearchParams(location.hash.slice(1));
const handedToken = fragment.get('token');
const duration = Number(fragment.get('duration')) > 0 ? Number(fragment.get('duration')) : 10000;
if (location.hash) history.replaceState(null, '', location.pathname + location.search);

const GRADE_WORDS = {
  excellent: 'Excellent',
  good: 'Good',
  fair: 'Fair',
  poor: 'Poor',
  failed: 'Failed',
};
const SUMMARY = {
  excellent: 'Your network is ready for video calls.',
  good: 'Your network is good for video calls.',
  fair: 'Video calls will work, with some trouble.',
  poor: 'Video calls will struggle on this network.',
  failed: 'Video calls cannot get through from this network.',
};

let config = { transports: [], tokens: false, version: '' };
let results = [];

function setState(state) {
  document.body.dataset.state = state;
}

function fmt(metric, value) {
  if (value === null || value === undefined) return 'not measured';
  if (metric === 'rtt' || metric === 'bandwidth') return `${Math.round(value)} ${THRESHOLDS[metric].unit}`;
  return `${value.toFixed(1)} ${THRESHOLDS[metric].unit}`;
}

function thresholdsTable() {
  const body = $('thresholds');
  for (const [name, t] of Object.entries(THRESHOLDS)) {
    const [a, b, c] = t.limits;
    const cells = t.higherIsBetter
      ? [`> ${a}`, `${b}–${a}`, `${c}–${b}`, `≤ ${c}`]
      : [`< ${a}`, `${a}–${b}`, `${b}–${c}`, `≥ ${c}`];
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    th.textContent = `${t.label} (${t.unit})`;
    tr.append(th);
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
}

function setLevel(level) {
  for (const bar of document.querySelectorAll('#bars rect')) {
    bar.classList.toggle('on', level !== null && Number(bar.dataset.bar) <= level);
  }
  $('level-label').textContent = level === null ? '–' : `${level}/5`;
}

async function getToken() {
  if (handedToken) return handedToken;
  if (!config.tokens) {
    throw new Error('This page needs a test link from the site that sent you here (it carries an access token).');
  }
  const response = await fetch('token', { method: 'POST', cache: 'no-store' });
  if (response.status === 429) throw new Error('Too many tests from your address: please wait a minute and try again.');
  if (!response.ok) throw new Error(`The test server refused to start a test (HTTP ${response.status}).`);
  return (await response.json()).token;
}

/** One preflight over `transport` (null: whatever the server hands out), with the live view. */
function runOne(token, transport, index, count) {
  $('run-title').textContent = count > 1
    ? `Testing over ${transportName(transport)} (${index + 1} of ${count})`
    : 'Testing…';
  for (const li of document.querySelectorAll('#steps li')) li.className = '';
  const progress = $('sampling');
  progress.value = 0;
  progress.max = Math.max(1, Math.round(duration / 1000));
  setLevel(null);
  const levels = [];
  const liveChart = $('live-chart');
  const drawLevels = () => {
    liveChart.replaceChildren(render(document, {
      title: 'Network quality level', unit: 'level', xMax: progress.max,
      series: [{ name: 'level', points: levels, className: 'level-line' }],
    }));
  };
  drawLevels();
  return new Promise((resolve) => {
    const options = { duration };
    if (transport) options.transport = transport;
    const test = runPreflight(token, options);
    test.on('progress', (name) => {
      const li = document.querySelector(`#steps li[data-step="${name}"]`);
      if (li) li.className = 'done';
    });
    test.on('networkQualityLevelChanged', (level) => setLevel(level));
    test.on('sampleRecorded', (i, total, level) => {
      progress.max = total;
      progress.value = i;
      levels.push([i, level]);
      drawLevels();
    });
    test.on('completed', (report) => resolve({ transport, report, error: null }));
    test.on('failed', (error, report) => {
      resolve({ transport, report, error: { code: error.code, name: error.name, message: error.message } });
    });
  });
}

function transportCard(v) {
  const card = document.createElement('div');
  card.className = 'card transport';
  card.dataset.grade = v.grade;
  card.dataset.transport = v.transport ?? 'none';
  const head = document.createElement('div');
  head.className = 'transport-head';
  const h = document.createElement('h3');
  h.textContent = transportName(v.transport);
  const badge = document.createElement('span');
  badge.className = `badge ${v.grade}`;
  badge.textContent = GRADE_WORDS[v.grade];
  head.append(h, badge);
  card.append(head);
  if (!v.ok) {
    const p = document.createElement('p');
    p.className = 'error';
    p.textContent = v.error ? `${v.error.message} (${v.error.code})` : 'The test failed.';
    card.append(p);
    return card;
  }
  const dl = document.createElement('dl');
  for (const [name, m] of Object.entries(v.metrics)) {
    const dt = document.createElement('dt');
    dt.textContent = THRESHOLDS[name].label;
    const dd = document.createElement('dd');
    dd.className = m.grade ?? 'none';
    dd.dataset.metric = name;
    dd.textContent = fmt(name, m.value);
    dl.append(dt, dd);
  }
  card.append(dl);
  if (v.transport && !v.relayed) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = 'Media did not go through the TURN server in this test.';
    card.append(p);
  }
  return card;
}

function charts(items) {
  const box = $('charts');
  const legend = $('legend');
  box.replaceChildren();
  legend.replaceChildren();
  const shown = items.filter((r) => r.report && r.report.samples && r.report.samples.length);
  if (!shown.length) {
    box.textContent = 'No measurements to show.';
    return;
  }
  shown.forEach((r) => {
    const key = document.createElement('span');
    key.className = `key t-${r.transport ?? 'none'}`;
    key.textContent = transportName(r.transport);
    legend.append(key);
  });
  const xMax = Math.max(...shown.flatMap((r) => r.report.samples.map((s) => s.time / 1000)));
  const spec = [
    ['rtt', 'Round-trip time', 'ms', (s) => s.rtt],
    ['jitter', 'Jitter', 'ms', (s) => (s.jitter === null ? null : s.jitter * 1000)],
    ['loss', 'Packet loss', '%', (s) => s.packetLoss],
    ['bitrate', 'Bitrate received', 'kbps', (s) => s.incomingBitrate],
  ];
  for (const [name, title, unit, value] of spec) {
    const figure = document.createElement('figure');
    figure.dataset.chart = name;
    const caption = document.createElement('figcaption');
    caption.textContent = title;
    const t0 = (r) => r.report.samples[0].time / 1000;
    figure.append(caption, render(document, {
      title, unit, xMax: xMax - Math.min(...shown.map(t0)),
      series: shown.map((r) => ({
        name: r.transport ?? 'none',
        className: `t-${r.transport ?? 'none'}`,
        points: r.report.samples.map((s) => [s.time / 1000 - t0(r), value(s)]),
      })),
    }));
    box.append(figure);
  }
}

function showResults() {
  const verdicts = results.map((r) => verdict(r.transport, r.report, r.error));
  const grade = overall(verdicts);
  const summary = $('summary');
  summary.dataset.grade = grade;
  summary.replaceChildren();
  const big = document.createElement('p');
  big.className = 'big';
  big.textContent = GRADE_WORDS[grade];
  const line = document.createElement('p');
  line.textContent = SUMMARY[grade];
  summary.append(big, line);
  $('transports').replaceChildren(...verdicts.map(transportCard));
  $('recommendations').replaceChildren(...recommendations(verdicts).map((text) => {
    const li = document.createElement('li');
    li.textContent = text;
    return li;
  }));
  charts(results);
  const full = {
    page: location.origin + location.pathname,
    userAgent: navigator.userAgent,
    testedAt: new Date().toISOString(),
    verdict: grade,
    tests: results.map((r, i) => ({ transport: r.transport, verdict: verdicts[i], report: r.report })),
  };
  $('report-json').textContent = JSON.stringify(full, null, 2);
  $('results').hidden = false;
  $('live').hidden = true;
  $('start-card').hidden = true; // "Test again" sits under the results
}

async function start() {
  $('start').disabled = true;
  $('start-card').hidden = false;
  $('results').hidden = true;
  $('start-note').textContent = '';
  setState('running');
  let token;
  try {
    token = await getToken();
  } catch (err) {
    $('start-note').textContent = err.message;
    $('start').disabled = false;
    setState('idle');
    return;
  }
  $('live').hidden = false;
  $('start-card').hidden = true;
  results = [];
  const transports = config.transports.length ? config.transports : [null];
  for (let i = 0; i < transports.length; i++) {
    results.push(await runOne(token, transports[i], i, transports.length));
  }
  showResults();
  $('start').disabled = false;
  setState('done');
}

async function copyReport() {
  const text = $('report-json').textContent;
  try {
    await navigator.clipboard.writeText(text);
    $('copied').textContent = 'Report copied.';
  } catch {
    // No clipboard permission (an insecure origin, say): select the text for the visitor.
    const pre = $('report-json');
    pre.closest('details').open = true;
    getSelection().selectAllChildren(pre);
    $('copied').textContent = 'Press Ctrl+C (⌘C) to copy the selected report.';
  }
}

async function init() {
  thresholdsTable();
  $('start').addEventListener('click', start);
  $('again').addEventListener('click', start);
  $('copy').addEventListener('click', copyReport);
  try {
    const response = await fetch('diagnostics.json', { cache: 'no-store' });
    config = await response.json();
  } catch {
    $('start-note').textContent = 'The test server cannot be reached. Check your connection and reload.';
    setState('idle');
    return;
  }
  $('version').textContent = config.version ?? '';
  const n = config.transports.length;
  const each = Math.round(duration / 1000);
  $('start-note').textContent = handedToken || config.tokens
    ? `Takes about ${n > 1 ? `${n} × ` : ''}${each + 2} seconds${n > 1 ? ` (one test per connection type: ${config.transports.map(transportName).join(', ')})` : ''}.`
    : 'This page needs a test link from the site that sent you here (it carries an access token).';
  $('start').disabled = !(handedToken || config.tokens);
  setState('idle');
}

init();
