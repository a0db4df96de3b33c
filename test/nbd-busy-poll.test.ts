// The busy-poll window: polling starts on a request, keeps the loop from sleeping while requests keep
// coming, and stops once the window passes without one (or at once when the server closes).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { BusyPoller } from '../src/nbd/busy-poll.js';

test('busy poller polls for its window after the last kick, then lets the loop sleep', async () => {
  const poller = new BusyPoller(5_000);
  assert.equal(poller.active, false);
  poller.kick();
  assert.equal(poller.active, true);
  // While polling, immediates keep turning: a timer of 1 ms sees many loop iterations.
  let turns = 0;
  const counting = (): void => { turns++; if (poller.active) setImmediate(counting); };
  setImmediate(counting);
  await sleep(2);
  assert.equal(poller.active, true, 'still inside the window');
  poller.kick();
  await sleep(30);
  assert.equal(poller.active, false, 'window passed without a kick');
  assert.ok(turns > 10, `the loop kept turning (${turns} turns)`);
});

test('busy poller off (window 0) never polls; stop() ends polling', async () => {
  const off = new BusyPoller(0);
  off.kick();
  assert.equal(off.active, false);
  const on = new BusyPoller(1_000_000);
  on.kick();
  on.stop();
  await sleep(5);
  assert.equal(on.active, false);
});
