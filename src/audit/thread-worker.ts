/**
 * The audit thread: where the audit log's work happens, so that the gateway's event loop, which
 * every call goes through, only hands events over (thread.ts); except for an `async` log of
 * SQLite files alone, which the event loop records itself (loop-recorder.ts says why), and for
 * which this thread only serves reads, verify and pruning, checkpoints the files' WAL and reads it
 * ahead of the loop's writes. Here the arguments are derived (`keys`: a hash of their canonical
 * form; `redacted`: masked), each event is chained into the stream (canonical form, SHA-256), and
 * the writer batches the records to every sink; the SQLite sink writes on this thread too, rather
 * than hand each batch on to a thread of its own. Reads the gateway asks for (the admin API's
 * queries, verify, retention's prune) run here as well.
 *
 * Why a thread: on the event loop, deriving and chaining alone took some 10 to 20 µs a call here,
 * and the sinks' serialisation more; the gateway's thread is what limits its calls per second,
 * while the machine usually has a core with time to spare.
 *
 * In `async` mode the thread also runs at the lowest CPU priority (Linux): when the machine is
 * busy, the calls go first and the records wait, in memory and bounded (the gateway counts what it
 * handed over and the thread has not taken: see AuditThread.full). Competing at the same priority,
 * the thread took a quarter of the gateway's calls per second at 16 clients on two cores; at nice
 * 19, a tenth to a sixth; as a SCHED_IDLE thread, mostly under a tenth (docs/benchmarks.md). Nice
 * 19 only weighs the thread's share: a call's process that wakes on the core the thread holds may
 * still wait for it, since the scheduler lets a running task finish its slice. A SCHED_IDLE thread
 * gives way to any other at once, and a core that runs only it counts as free when the scheduler
 * places a waking process. Even so it costs a lone caller something: a core the thread is
 * queued on no longer takes the calls' processes' wake-ups the cheap way (handed to it while it
 * idles), and some of them land on the gateway's own core instead. What recording costs a lone
 * caller comes mostly from the thread's work on that core, not from the hand-over
 * (docs/benchmarks.md). In `strict` mode every call waits for the thread, so it keeps the
 * gateway's priority.
 */
import { execFile } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { pino, type Logger } from 'pino';
import { withAuditArguments } from './arguments.js';
import type { AuditEventInput } from './event.js';
import { DeferredSink, isPostgresSpec, openAuditSink, sinkDisplayName } from './open.js';
import type { AuditSink } from './sink.js';
import type { AuditStore } from './store.js';
import { EventDecoder, ThreadWork, sharedNow, toWireError, type AuditThreadData, type FromAuditThread, type StoreOp, type ToAuditThread } from './thread-wire.js';
import { AuditWriter } from './writer.js';

/** How often changed counters are sent to the gateway (its metrics read them). */
const STATS_EVERY_MS = 250;
/**
 * How often the WAL of a SQLite file the event loop records into is checkpointed here (the loop's
 * connection does not, see sinks/sqlite-loop.ts). At 16,000 records a second a second's commits
 * add some 10 MiB to the WAL; once it holds the 16 MiB at which the thread's own writes
 * checkpoint (WAL_AUTOCHECKPOINT_PAGES), the checkpoint has the loop's next commit start it over
 * (SqliteAuditSink.checkpointWal). A checkpoint with nothing new to copy costs next to nothing.
 */
const CHECKPOINT_EVERY_MS = 1_000;
/**
 * How often the WAL of such a file is read ahead of its writer (sinks/wal-warmer.ts): the pages
 * the loop writes were read at most this long before.
 */
const WARM_WAL_EVERY_MS = 25;

const data = (workerData as { auditThread?: AuditThreadData } | null)?.auditThread;
if (parentPort !== null && data !== undefined) void serve(parentPort, data);

async function serve(port: MessagePort, o: AuditThreadData): Promise<void> {
  const send = (m: FromAuditThread) => port.postMessage(m);
  // The writer's warnings (a sink down, a spill file replayed) reach the gateway's log as lines.
  const logger: Logger = pino({ level: o.level, base: null, timestamp: false }, { write: (line: string) => send({ t: 'log', line }) });
  const c = o.config;
  // What the gateway's event loop reads to know whether this thread is behind (see ThreadWork):
  // the messages taken are counted as they come, and said finished with at the second
  // setImmediate after: the writes they started (the writer starts one at setImmediate, and the
  // SQLite sink writes synchronously on this thread) have run by then.
  const lag = new ThreadWork(o.work);
  let received = 0;
  let settling = false;
  const finish = () => {
    settling = false;
    lag.finished(received);
  };
  const settle = () => {
    if (settling) return;
    settling = true;
    setImmediate(() => setImmediate(finish));
  };
  // The writer's timers (its flush interval, a down sink's retry) and when each is due: the gateway
  // is told the earliest.
  const timersDue = new Map<NodeJS.Timeout, number>();
  const publishDue = () => {
    let earliest: number | undefined;
    for (const at of timersDue.values()) if (earliest === undefined || ((at - earliest) | 0) < 0) earliest = at;
    lag.dueAt(earliest);
  };
  const yielded = c.durability === 'async' ? yieldToCalls(logger) : undefined;

  const sinks: AuditSink[] = [];
  try {
    for (const spec of c.sinks) {
      // A database that is down at start only delays its records (they spill); see DeferredSink.
      if (isPostgresSpec(spec)) sinks.push(new DeferredSink(sinkDisplayName(spec), async () => (await openAuditSink(spec, { durability: c.durability })).sink));
      else sinks.push((await openAuditSink(spec, { durability: c.durability, inline: true })).sink);
    }
  } catch (err) {
    await Promise.allSettled(sinks.map((s) => s.close()));
    send({ t: 'failed', error: toWireError(err) });
    return;
  }
  let writer: AuditWriter;
  try {
    writer = new AuditWriter({
      // When the event loop records, this writer has no sink to write: it only answers for the stream.
      sinks: o.loopRecords === true ? [] : sinks,
      spillDir: c.spillDir,
      flushIntervalMs: c.flushIntervalMs,
      batchSize: c.batchSize,
      maxQueue: c.maxQueue,
      onFull: c.onFull,
      logger,
      // Timers counted in timersDue, for the gateway to see when one is late.
      timers: {
        setTimeout: (fn, ms) => {
          const h = setTimeout(() => {
            timersDue.delete(h);
            publishDue();
            fn();
          }, ms).unref();
          timersDue.set(h, (sharedNow() + ms) | 0);
          publishDue();
          return h;
        },
        clearTimeout: (h) => {
          clearTimeout(h as NodeJS.Timeout);
          if (timersDue.delete(h as NodeJS.Timeout)) publishDue();
        },
      },
      ...(o.stream !== undefined ? { stream: o.stream } : {}),
    });
  } catch (err) {
    await Promise.allSettled(sinks.map((s) => s.close()));
    send({ t: 'failed', error: toWireError(err) });
    return;
  }

  const storeOf = (i: number): AuditStore => {
    const s = sinks[i];
    const inner = s instanceof DeferredSink ? s.current : s;
    if (inner === undefined || !isStore(inner)) {
      throw new Error(s instanceof DeferredSink ? `${s.name} has not been reached yet; its records wait in the spill file` : `audit sink ${i} cannot be queried`);
    }
    return inner;
  };

  let reportedFull = false;
  const checkFull = () => {
    if (reportedFull || !writer.full) return;
    reportedFull = true;
    send({ t: 'full', full: true });
    void writer.whenRoom().then(() => {
      reportedFull = false;
      send({ t: 'full', full: false });
    });
  };

  let lastStats = '';
  let taken = 0;
  let reportedTaken = 0;
  const statsTimer = setInterval(() => {
    if (taken !== reportedTaken) {
      reportedTaken = taken;
      send({ t: 'taken', count: taken });
    }
    const stats = writer.stats();
    const text = JSON.stringify(stats);
    if (text === lastStats) return;
    lastStats = text;
    send({ t: 'stats', stats });
  }, STATS_EVERY_MS);

  // The event loop's connection leaves checkpoints to this thread's (sinks/sqlite-loop.ts), and
  // this thread reads its WAL ahead of it (sinks/wal-warmer.ts).
  type LoopFileUpkeep = Partial<{ checkpointWal(): unknown; warmWal(): unknown }>;
  const onEachSink = (everyMs: number, work: (s: LoopFileUpkeep) => unknown, failed: (name: string, err: Error) => void) =>
    o.loopRecords === true
      ? setInterval(() => {
          for (const s of sinks) {
            try {
              work(s as LoopFileUpkeep);
            } catch (err) {
              failed(s.name, err as Error);
            }
          }
        }, everyMs).unref()
      : undefined;
  const checkpointTimer = onEachSink(
    CHECKPOINT_EVERY_MS,
    (s) => s.checkpointWal?.(),
    (sink, err) => logger.warn({ sink, err: err.message }, 'audit WAL checkpoint failed; will try again'),
  );
  // Only a read-ahead: the loop's writes go on without it.
  const warmTimer = onEachSink(
    WARM_WAL_EVERY_MS,
    (s) => s.warmWal?.(),
    (sink, err) => logger.debug({ sink, err: err.message }, 'audit WAL read-ahead failed'),
  );

  // The trail sends the arguments as the client sent them; what is kept of them is decided here.
  const record = (e: AuditEventInput): AuditEventInput => withAuditArguments(e, c.arguments);
  const reply = (id: number, work: () => unknown) => {
    Promise.resolve()
      .then(work)
      .then(
        (value) => send({ t: 'reply', id, value }),
        (err: unknown) => send({ t: 'reply', id, error: toWireError(err) }),
      );
  };
  const iterations = new Map<number, AsyncGenerator<unknown>>();
  const decoder = new EventDecoder();

  port.on('message', (m: ToAuditThread) => {
    received++;
    try {
      handle(m);
    } finally {
      settle();
    }
  });
  const handle = (m: ToAuditThread): void => {
    switch (m.t) {
      case 'events':
        for (const e of decoder.decode(m.events)) {
          taken++;
          try {
            writer.record(record(e));
          } catch (err) {
            // Only after close: nothing the gateway can do about it but know.
            logger.error({ err: (err as Error).message }, 'audit event not recorded');
          }
        }
        // The gateway counts what it handed over against max_queue until told it was taken: it
        // hears at least every half max_queue, not only at the next stats tick.
        if (taken - reportedTaken >= Math.max(1, c.maxQueue >> 1)) {
          reportedTaken = taken;
          send({ t: 'taken', count: taken });
        }
        checkFull();
        return;
      case 'durable': {
        // Queued now, in the order the messages came: an event sent after it is chained after it.
        const durable = writer.recordDurable(record(m.event));
        reply(m.id, () => durable);
        checkFull();
        return;
      }
      case 'flush':
        reply(m.id, async () => {
          await writer.flush();
          return writer.stats();
        });
        return;
      case 'stats':
        reply(m.id, () => writer.stats());
        return;
      case 'store':
        reply(m.id, () => callStore(storeOf(m.sink), m.op, m.args));
        return;
      case 'iterate':
        reply(m.id, () => {
          iterations.set(m.iter, storeOf(m.sink).iterate());
        });
        return;
      case 'next':
        reply(m.id, async () => {
          const it = iterations.get(m.iter);
          if (it === undefined) return { records: [], done: true };
          const records: unknown[] = [];
          // A page at a time: one message per record would cost more than reading it.
          while (records.length < 500) {
            const r = await it.next();
            if (r.done === true) {
              iterations.delete(m.iter);
              return { records, done: true };
            }
            records.push(r.value);
          }
          return { records, done: false };
        });
        return;
      case 'return':
        void iterations.get(m.iter)?.return(undefined);
        iterations.delete(m.iter);
        return;
      case 'close':
        reply(m.id, async () => {
          clearInterval(statsTimer);
          clearInterval(checkpointTimer);
          clearInterval(warmTimer);
          for (const it of iterations.values()) await it.return(undefined);
          await writer.close();
          // A writer without sinks leaves them open; closing the last connection to a file checkpoints its WAL.
          if (o.loopRecords === true) await Promise.allSettled(sinks.map((s) => s.close()));
          return writer.stats();
        });
        return;
    }
  };

  // Ready once the priority is settled, so that nothing the gateway does meets the thread half-way.
  await yielded;
  send({ t: 'ready', stream: writer.stream, sinks: sinks.map((s) => ({ name: s.name, store: isStore(s) || s instanceof DeferredSink })), stats: writer.stats() });
}

function callStore(store: AuditStore, op: StoreOp, args: unknown[]): Promise<unknown> {
  const fn = store[op] as (...a: unknown[]) => Promise<unknown>;
  return fn.apply(store, args);
}

function isStore(s: AuditSink): s is AuditStore {
  return typeof (s as Partial<AuditStore>).prune === 'function' && typeof (s as Partial<AuditStore>).query === 'function';
}

/**
 * Lowers this thread's CPU priority, and only this thread's: on Linux a thread has an id of its
 * own that setpriority(2) and sched_setscheduler(2) accept (the last part of /proc/thread-self).
 * First nice 19, which needs nothing; then the SCHED_IDLE policy, set by util-linux's `chrt` (Node
 * has no call for it), which keeps nice 19 where chrt is missing or refused. Elsewhere the thread
 * stays as it is. Resolves once done; never rejects.
 */
function yieldToCalls(logger: Logger): Promise<void> | undefined {
  let tid: number;
  try {
    tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(tid) || tid <= 0 || tid === process.pid) return undefined;
  try {
    setPriority(tid, 19);
  } catch (err) {
    logger.debug({ err: (err as Error).message }, 'the audit thread keeps the gateway priority');
    return undefined;
  }
  return new Promise((resolve) => {
    execFile('chrt', ['--idle', '--pid', '0', String(tid)], { timeout: 5_000, windowsHide: true }, (err) => {
      if (err !== null) logger.debug({ err: err.message }, 'the audit thread stays at nice 19: SCHED_IDLE could not be set');
      resolve();
    });
  });
}
