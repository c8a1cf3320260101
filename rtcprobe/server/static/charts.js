// rtcprobe: small line charts as inline SVG, no library. The geometry is pure (scale, path,
// ticks); render() builds the elements through the document it is given.

/** A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`. */
export function niceMax(max) {
  if (!(max > 0) || !Number.isFinite(max)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/**
 * SVG path data for each series in a `width`x`height` box: x from 0 to `xMax`, y from 0 to the
 * nice maximum of every value. A null value breaks the line (not measured is not zero).
 * `series` is `[{name, points: [[x, y|null], ...]}]`; returns `{yMax, xMax, paths: [{name, d,
 * dots}]}`, a dot per measured point (a lone measurement is a dot, not an invisible line).
 */
export function layout(series, { width, height, xMax }) {
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => typeof v === 'number' && Number.isFinite(v));
  const yMax = niceMax(values.length ? Math.max(...values) : 0);
  const xm = xMax > 0 ? xMax : Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[0])));
  const sx = (x) => (x / xm) * width;
  const sy = (y) => height - (y / yMax) * height;
  const paths = series.map((s) => {
    let d = '';
    let pen = false;
    const dots = [];
    for (const [x, y] of s.points) {
      if (typeof y !== 'number' || !Number.isFinite(y)) {
        pen = false;
        continue;
      }
      const px = Number(sx(x).toFixed(1));
      const py = Number(sy(y).toFixed(1));
      d += `${pen ? 'L' : 'M'}${px.toFixed(1)},${py.toFixed(1)}`;
      dots.push([px, py]);
      pen = true;
    }
    return { name: s.name, d, dots };
  });
  return { yMax, xMax: xm, paths };
}

const SVG = 'http://www.w3.org/2000/svg';

function el(doc, name, attrs = {}) {
  const node = doc.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/**
 * An <svg> line chart: `series` as in layout() (each may carry a `className` for its colour),
 * `unit` for the y axis label. Sized by its viewBox; CSS sets the displayed width.
 */
export function render(doc, { title, unit, series, xMax = 0 }) {
  const W = 300;
  const H = 120;
  const pad = { left: 34, right: 6, top: 8, bottom: 18 };
  const w = W - pad.left - pad.right;
  const h = H - pad.top - pad.bottom;
  const geo = layout(series, { width: w, height: h, xMax });
  const svg = el(doc, 'svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart' });
  const label = el(doc, 'title');
  label.textContent = `${title} (${unit})`;
  svg.append(label);
  const g = el(doc, 'g', { transform: `translate(${pad.left},${pad.top})` });
  for (const frac of [0, 0.5, 1]) {
    const y = h - frac * h;
    g.append(el(doc, 'line', { x1: 0, x2: w, y1: y, y2: y, class: 'grid' }));
    const t = el(doc, 'text', { x: -4, y: y + 3, class: 'tick', 'text-anchor': 'end' });
    const v = geo.yMax * frac;
    t.textContent = v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1);
    g.append(t);
  }
  const xl = el(doc, 'text', { x: w, y: h + 14, class: 'tick', 'text-anchor': 'end' });
  xl.textContent = `${Math.round(geo.xMax)} s`;
  g.append(xl);
  const ul = el(doc, 'text', { x: 0, y: h + 14, class: 'tick' });
  ul.textContent = unit;
  g.append(ul);
  geo.paths.forEach((p, i) => {
    const cls = series[i].className ?? `s${i}`;
    g.append(el(doc, 'path', { d: p.d, class: `line ${cls}` }));
    for (const [cx, cy] of p.dots) g.append(el(doc, 'circle', { cx, cy, r: 2.2, class: `dot ${cls}` }));
  });
  svg.append(g);
  return svg;
}
