// The reply writer's batching: replies of a connection with other requests in flight are held (corked)
// until the turn's check phase so they leave in one writev; a reply with nothing else in flight leaves
// as soon as the current callback is done, before the rest of the turn's callbacks run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type net from 'node:net';
import { ReplyWriter } from '../src/nbd/reply-writer.js';

function fakeSocket(events: string[]) {
  let corks = 0;
  const socket = {
    destroyed: false,
    writableLength: 0,
    cork: () => { corks++; events.push('cork'); },
    uncork: () => { corks--; events.push('uncork'); },
    write: (data: Buffer, cb?: () => void) => { events.push(`write ${data.toString()}${corks > 0 ? ' (corked)' : ''}`); cb?.(); return true; },
  };
  return socket as unknown as net.Socket;
}

const tick = () => new Promise<void>((resolve) => process.nextTick(resolve));
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

test('replies with company wait for the check phase and leave together', async () => {
  const events: string[] = [];
  const w = new ReplyWriter(fakeSocket(events));
  w.send(Buffer.from('a'));
  w.send(Buffer.from('b'));
  await tick();
  assert.deepEqual(events, ['cork', 'write a (corked)', 'write b (corked)'], 'still corked after the callback');
  await turn();
  assert.deepEqual(events.slice(3), ['uncork']);
});

test('a reply alone in its connection leaves when the current callback is done, not at the end of the turn', async () => {
  const events: string[] = [];
  const w = new ReplyWriter(fakeSocket(events));
  let checkPhase = false;
  setImmediate(() => { checkPhase = true; });
  w.send(Buffer.from('header'), undefined, true);
  w.send(Buffer.from('data'), undefined, true); // a read reply's second part joins the first
  await tick();
  assert.equal(checkPhase, false);
  assert.deepEqual(events, ['cork', 'write header (corked)', 'write data (corked)', 'uncork']);
  // Nothing corked is left for the check phase; a later batch corks again.
  w.send(Buffer.from('c'));
  await turn();
  assert.deepEqual(events.slice(4), ['cork', 'write c (corked)', 'uncork']);
});
