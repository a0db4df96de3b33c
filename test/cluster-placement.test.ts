// placeReplicas (src/cluster/placement.ts): distinct nodes, distinct zones first, fewest replicas,
// ties by name; deterministic given its inputs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { placeReplicas } from '../src/cluster/placement.js';

const c = (name: string, zone: string | null, replicas = 0) => ({ name, zone, replicas });

test('distinct zones first, then the fewest replicas, ties by name', () => {
  assert.deepEqual(placeReplicas([c('b', 'z1'), c('a', 'z1'), c('c', 'z2')], 2), ['a', 'c']);
  assert.deepEqual(placeReplicas([c('a', 'z1', 5), c('b', 'z1'), c('c', 'z2', 1)], 2), ['b', 'c']);
  // Fewer zones than replicas: the rest by load.
  assert.deepEqual(placeReplicas([c('a', 'z1'), c('b', 'z1', 2), c('c', 'z1', 1)], 3), ['a', 'c', 'b']);
  // No zones: by load then name.
  assert.deepEqual(placeReplicas([c('n3', null), c('n1', null, 1), c('n2', null)], 2), ['n2', 'n3']);
});

test('exclusions and zones already used (a replacement), and too few nodes', () => {
  assert.deepEqual(placeReplicas([c('a', 'z1'), c('b', 'z2'), c('c', 'z3')], 1, new Set(['a']), new Set(['z2'])), ['c']);
  assert.equal(placeReplicas([c('a', 'z1'), c('b', 'z2')], 3), null);
  assert.equal(placeReplicas([c('a', 'z1'), c('b', 'z2')], 2, new Set(['a'])), null);
});

test('the same inputs in any order give the same answer', () => {
  const nodes = [c('d', 'z2', 1), c('a', 'z1', 1), c('c', 'z3', 0), c('b', 'z1', 0)];
  const want = placeReplicas(nodes, 3);
  assert.deepEqual(placeReplicas([...nodes].reverse(), 3), want);
  assert.deepEqual(want, ['b', 'c', 'd']);
});
