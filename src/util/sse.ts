/** Server-Sent Events: parsing is delegated to eventsource-parser; writing is one line per field. */
import { StringDecoder } from 'node:string_decoder';
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
  // A reader ends a line at CR, LF or CRLF (WHATWG HTML, "event stream interpretation"), so each is split
  // here: a lone CR left inside a data line would cut the rest of that line off as a bogus field.
  if (ev.data.includes('\n') || ev.data.includes('\r')) {
    for (const line of ev.data.split(/\r\n|\r|\n/)) out += `data: ${line}\n`;
  } else {
    out += `data: ${ev.data}\n`;
  }
  return out + '\n';
}

/**
 * An incremental parser: feed it chunks (bytes or text), it calls back once per complete event.
 * Bytes are decoded here so a UTF-8 character split across two chunks survives.
 */
export function sseParser(onEvent: (ev: SseEvent) => void, onRetry?: (ms: number) => void) {
  const parser = createParser({
    onEvent(m: EventSourceMessage) {
      onEvent({ id: m.id, event: m.event, data: m.data });
    },
    onRetry(ms: number) {
      onRetry?.(ms);
    },
  });
  let decoder = new StringDecoder('utf8');
  return {
    feed(chunk: string | Uint8Array) {
      parser.feed(typeof chunk === 'string' ? chunk : decoder.write(chunk as Buffer));
    },
    reset() {
      parser.reset();
      decoder = new StringDecoder('utf8');
    },
  };
}
