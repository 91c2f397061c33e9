import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { serialize } from 'node:v8';
import type { AuditEventInput } from './event.js';
import { EventDecoder, EventEncoder, ThreadWork, sharedNow } from './thread-wire.js';

const event = (i: number, session: string | null = 'sess-1'): AuditEventInput => ({
  at: 1_700_000_000_000 + i,
  requestId: i % 2 === 0 ? String(i) : null,
  grantId: 'g1',
  grantLabel: 'alice',
  session,
  server: 'files',
  method: 'tools/call',
  tool: i % 3 === 0 ? null : 'read_file',
  decision: i % 5 === 0 ? 'deny' : 'allow',
  rule: '/tools/read_file',
  reason: i % 5 === 0 ? 'not on Sundays' : null,
  policyVersion: 'v1',
  arguments: i % 4 === 0 ? undefined : { path: `/tmp/${i}`, nested: { a: [1, 'two', null] } },
  upstreamStatus: i % 5 === 0 ? null : 'ok',
  latencyMs: i % 5 === 0 ? null : 1.5,
  resultBytes: i % 5 === 0 ? null : 120,
  error: null,
});

describe('events on their way to the audit thread', () => {
  it('arrive exactly as recorded, message after message', () => {
    const enc = new EventEncoder();
    const dec = new EventDecoder();
    for (let m = 0; m < 3; m++) {
      const events = Array.from({ length: 20 }, (_, i) => event(m * 20 + i, `sess-${i % 4}`));
      // The message is copied (structured clone) on its way; a JSON round trip would lose undefined.
      assert.deepEqual(dec.decode(structuredClone(enc.encode(events))), events);
    }
  });

  it('send a repeated string once, then by number', () => {
    const enc = new EventEncoder();
    const first = enc.encode([event(1)]).values;
    const second = enc.encode([event(1)]).values;
    assert.ok(first.includes('alice'));
    assert.ok(!second.includes('alice'));
    assert.ok(second.filter((v) => typeof v === 'string').length < first.filter((v) => typeof v === 'string').length);
  });

  it('start again on both sides after a restart, so a lost message cannot leave them disagreeing', () => {
    const enc = new EventEncoder();
    const dec = new EventDecoder();
    dec.decode(enc.encode([event(1)]));
    // A message that never arrived: its new strings are unknown to the decoder.
    enc.encode([event(2, 'sess-lost')]);
    enc.restart();
    const after = [event(3, 'sess-lost'), event(4)];
    const m = enc.encode(after);
    assert.equal(m.reset, true);
    assert.deepEqual(dec.decode(m), after);
  });

  it('are one dense array, which is copied value after value rather than as index and value pairs', () => {
    const { values } = new EventEncoder().encode(Array.from({ length: 20 }, (_, i) => event(i)));
    // V8's serialisation: a header (0xFF and the format version), then the array's tag, 'A' for a
    // dense array and 'a' for a sparse one (what an array made by `new Array(n)` becomes).
    const bytes = serialize(values);
    assert.equal(bytes[0], 0xff);
    assert.equal(String.fromCharCode(bytes[2]!), 'A');
  });
});

describe("how far behind the audit thread is, as the gateway sees it", () => {
  /** Both ends over one shared buffer, as the gateway and the thread have it. */
  const ends = () => {
    const gateway = new ThreadWork();
    return { gateway, thread: new ThreadWork(gateway.buffer) };
  };

  it('is behind while the messages posted and not yet finished with number as many as said', () => {
    const { gateway, thread } = ends();
    assert.equal(gateway.behind(2, 20), false, 'nothing posted');
    gateway.posted();
    assert.equal(gateway.behind(2, 20), false, 'one message, not two');
    gateway.posted();
    gateway.posted();
    assert.equal(gateway.behind(2, 20), true);
    thread.finished(2);
    assert.equal(gateway.behind(2, 20), false, 'one left');
    thread.finished(3);
    assert.equal(gateway.behind(1, 20), false, 'all finished with');
  });

  it('is behind once its timer has been due as long as said, not before, and not once none is set', () => {
    const { gateway, thread } = ends();
    thread.dueAt(sharedNow() + 1_000);
    assert.equal(gateway.behind(2, 20), false, 'due in a second');
    thread.dueAt(sharedNow() - 5);
    assert.equal(gateway.behind(2, 20), false, 'late by 5 ms, not 20');
    thread.dueAt(sharedNow() - 25);
    assert.equal(gateway.behind(2, 20), true, 'late by 25 ms');
    thread.dueAt(undefined);
    assert.equal(gateway.behind(2, 20), false);
  });

  it('counts across the wrap of its 32-bit counters', () => {
    const { gateway, thread } = ends();
    thread.finished(2 ** 31 - 1);
    // The gateway's count wraps from 2^31 - 1 to -2^31 as the thread's does.
    const counters = new Int32Array(gateway.buffer);
    counters[0] = 2 ** 31 - 1;
    gateway.posted();
    gateway.posted();
    assert.equal(counters[0], -(2 ** 31) + 1);
    assert.equal(gateway.behind(2, 20), true, 'two past the thread, across the wrap');
    thread.finished(2 ** 31 + 1);
    assert.equal(gateway.behind(1, 20), false);
  });
});
