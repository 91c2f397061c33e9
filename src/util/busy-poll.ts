/**
 * Busy-polling of the event loop after I/O.
 *
 * A process that sleeps between two messages of a call (the request, then the upstream's answer,
 * then the client's next request) is woken by the kernel when the next one arrives. On a virtual
 * machine that wake-up is expensive: the sleeping CPU has to be interrupted and brought out of its
 * idle state, which here costs tens of microseconds on every hop, in the process that sleeps and in
 * the one that wakes it. So after each message the gateway keeps its event loop turning (polling
 * for I/O without sleeping) for a short window, and the next message is read as soon as it
 * arrives; once a window passes with nothing, it sleeps as usual.
 *
 * Each message costs at most one window of CPU, and an idle gateway does not poll at all. A window
 * that adapted to the traffic (doubling when a message came within it, halving when it passed
 * empty, as Linux's haltpoll does) was measured too: at one client calling back to back over HTTP
 * the gaps between messages are close to the window, it kept shrinking, and the gain was lost
 * (docs/benchmarks.md).
 *
 * Polling pauses while other work of the process waits for a CPU (pauseBusyPollWhile): the audit
 * thread, which yields to every other thread (SCHED_IDLE), gets a CPU only when nothing else wants
 * it, and an event loop that polls wants its CPU the whole window. It registers for when it has
 * fallen behind (../audit/thread.ts says when, and what that measured).
 */
import { performance } from 'node:perf_hooks';

export interface BusyPollOptions {
  /** The window after each message, µs; 0 turns polling off. */
  windowUs: number;
  /** ms, monotonic; injectable for tests. */
  now?: () => number;
  /** Runs `fn` at the next turn of the event loop, after it has polled for I/O; injectable for tests. */
  schedule?: (fn: () => void) => void;
  /** Whether polling should pause now (pauseBusyPollWhile's registrations by default); injectable for tests. */
  paused?: () => boolean;
}

export class BusyPoller {
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly schedule: (fn: () => void) => void;
  private readonly paused: () => boolean;
  /** When the current window ends, ms. */
  private until = 0;
  private polling = false;
  private stopped = false;

  constructor(o: BusyPollOptions) {
    this.windowMs = Math.max(0, o.windowUs) / 1000;
    this.now = o.now ?? (() => performance.now());
    this.schedule = o.schedule ?? setImmediate;
    this.paused = o.paused ?? otherWorkWaits;
  }

  get isPolling(): boolean {
    return this.polling;
  }

  /**
   * A message arrived (bytes read from a client or an upstream): poll for the next one a while,
   * unless other work waits for a CPU (then the event loop sleeps between messages as usual).
   */
  touch(): void {
    if (this.windowMs === 0 || this.stopped) return;
    this.until = this.now() + this.windowMs;
    if (!this.polling && !this.paused()) {
      this.polling = true;
      this.schedule(this.tick);
    }
  }

  /** Stops polling for good (shutdown): the event loop may then end as soon as nothing else holds it. */
  stop(): void {
    this.stopped = true;
  }

  private readonly tick = (): void => {
    if (!this.stopped && this.now() < this.until && !this.paused()) this.schedule(this.tick);
    else this.polling = false;
  };
}

/** What pauses polling while it says true (see pauseBusyPollWhile). */
const pausers: Array<() => boolean> = [];

/** Whether some registration of pauseBusyPollWhile pauses polling now. */
export function otherWorkWaits(): boolean {
  for (const p of pausers) if (p()) return true;
  return false;
}

/**
 * Pauses the event loop's polling while `busy()` says true: `busy` says whether other work of
 * the process (a thread) has something to do and needs a CPU to do it. Called as the loop polls,
 * so it must be cheap (an Atomics.load). Returns what undoes the registration.
 */
export function pauseBusyPollWhile(busy: () => boolean): () => void {
  pausers.push(busy);
  return () => {
    const i = pausers.indexOf(busy);
    if (i >= 0) pausers.splice(i, 1);
  };
}

/** The process's poller: one event loop, one poller. Off until configured. */
let poller = new BusyPoller({ windowUs: 0 });

/** Sets how long the event loop may poll after I/O, µs (0: never), replacing any earlier setting. */
export function configureBusyPoll(windowUs: number): BusyPoller {
  poller.stop();
  poller = new BusyPoller({ windowUs });
  return poller;
}

/** Called by every transport when it reads a message's bytes. */
export function ioArrived(): void {
  poller.touch();
}
