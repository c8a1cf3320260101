// Chart geometry (static/charts.js): axis bounds and paths that break where nothing was measured.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { layout, niceMax } from '../../rtcprobe/server/static/charts.js';

test('niceMax: 1, 2 or 5 times a power of ten, never below the data', () => {
  assert.equal(niceMax(0), 1);
  assert.equal(niceMax(0.3), 0.5);
  assert.equal(niceMax(1), 1);
  assert.equal(niceMax(1.2), 2);
  assert.equal(niceMax(37), 50);
  assert.equal(niceMax(501), 1000);
  assert.equal(niceMax(Infinity), 1);
});

test('layout: scaled paths, a gap where a value is null', () => {
  const { yMax, paths } = layout([{ name: 'a', points: [[0, 0], [1, 50], [2, null], [3, 100], [4, 100]] }],
    { width: 40, height: 100, xMax: 4 });
  assert.equal(yMax, 100);
  assert.equal(paths[0].d, 'M0.0,100.0L10.0,50.0M30.0,0.0L40.0,0.0');
  assert.deepEqual(paths[0].dots, [[0, 100], [10, 50], [30, 0], [40, 0]]);
});

test('layout: one y scale for every series; no data draws nothing', () => {
  const { yMax, paths } = layout([
    { name: 'a', points: [[0, 1]] }, { name: 'b', points: [[0, 3]] },
  ], { width: 10, height: 10, xMax: 1 });
  assert.equal(yMax, 5);
  assert.equal(paths[1].d, 'M0.0,4.0');
  assert.equal(layout([{ name: 'a', points: [[0, null]] }], { width: 1, height: 1, xMax: 1 }).paths[0].d, '');
});
