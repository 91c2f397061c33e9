/** Server-Sent Events: parsing is delegated to eventsource-parser; writing is one line per field. */
import { createParser, type EventSourceMessage } from 'eventsource-parser';

export interface SseEvent {
  id?: string | undefined;
  event?: string | undefined;
  data: string;
  retry?: number | undefined;
}

/** Serialises one event; multi-line data is split into several `data:` lines as the format requires. */
export function formatSse(ev: SseEvent): string {
  let out = '';
  if (ev.id !== undefined) out += `id: ${ev.id}\n`;
  if (ev.event !== undefined) out += `event: ${ev.event}\n`;
  if (ev.retry !== undefined) out += `retry: ${ev.retry}\n`;
  if (ev.data.includes('\n')) {
    for (const line of ev.data.split('\n')) out += `data: ${line}\n`;
  } else {
    out += `data: ${ev.data}\n`;
  }
  return out + '\n';
}

/** An incremental parser: feed it chunks, it calls back once per complete event. */
export function sseParser(onEvent: (ev: SseEvent) => void, onRetry?: (ms: number) => void) {
  const parser = createParser({
    onEvent(m: EventSourceMessage) {
      onEvent({ id: m.id, event: m.event, data: m.data });
    },
    onRetry(ms: number) {
      onRetry?.(ms);
    },
  });
  return {
    feed(chunk: string) {
      parser.feed(chunk);
    },
    reset() {
      parser.reset();
    },
  };
}
