import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDuration } from './duration.js';

test('parses each unit into milliseconds', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('90s'), 90_000);
  assert.equal(parseDuration('5m'), 300_000);
  assert.equal(parseDuration('1h'), 3_600_000);
  assert.equal(parseDuration('1d'), 86_400_000);
});

test('reads a number as seconds', () => {
  assert.equal(parseDuration(60), 60_000);
  assert.equal(parseDuration(0.5), 500);
  assert.equal(parseDuration(0), 0);
});

test('adds up compound durations and accepts decimals', () => {
  assert.equal(parseDuration('1h30m'), 5_400_000);
  assert.equal(parseDuration('1.5s'), 1_500);
  assert.equal(parseDuration(' 10s '), 10_000);
});

test('throws on garbage, negative numbers, bare digits and absurd sizes', () => {
  for (const bad of ['', 'soon', '10', '10 s', '5x', '-5s', 's', '1h 30m', '1e3s']) {
    assert.throws(() => parseDuration(bad), RangeError, bad);
  }
  for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY, 1e300]) {
    assert.throws(() => parseDuration(bad), RangeError, String(bad));
  }
});
