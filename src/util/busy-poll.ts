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
 */
import { performance } from 'node:perf_hooks';

export interface BusyPollOptions {
  /** The window after each message, µs; 0 turns polling off. */
  windowUs: number;
  /** ms, monotonic; injectable for tests. */
  now?: () => number;
  /** Runs `fn` at the next turn of the event loop, after it has polled for I/O; injectable for tests. */
  schedule?: (fn: () => void) => void;
}

export class BusyPoller {
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly schedule: (fn: () => void) => void;
  /** When the current window ends, ms. */
  private until = 0;
  private polling = false;
  private stopped = false;

  constructor(o: BusyPollOptions) {
    this.windowMs = Math.max(0, o.windowUs) / 1000;
    this.now = o.now ?? (() => performance.now());
    this.schedule = o.schedule ?? setImmediate;
  }

  get isPolling(): boolean {
    return this.polling;
  }

  /** A message arrived (bytes read from a client or an upstream): poll for the next one a while. */
  touch(): void {
    if (this.windowMs === 0 || this.stopped) return;
    this.until = this.now() + this.windowMs;
    if (!this.polling) {
      this.polling = true;
      this.schedule(this.tick);
    }
  }

  /** Stops polling for good (shutdown): the event loop may then end as soon as nothing else holds it. */
  stop(): void {
    this.stopped = true;
  }

  private readonly tick = (): void => {
    if (!this.stopped && this.now() < this.until) this.schedule(this.tick);
    else this.polling = false;
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
