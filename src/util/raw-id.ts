/**
 * Rewrites the top-level `id` of a JSON-RPC message in its JSON text, leaving every other
 * character as it was. A gateway that shares one upstream among clients must swap request ids
 * on the way in and back out; doing that on the text instead of with `JSON.stringify` of the
 * parsed message saves most of the per-call cost for large messages (re-serialising a 64 KB
 * request and its answer cost the gateway 250 to 300 µs of CPU a call in
 * `npm run bench -- --only gateway-stdio --payload 65536`).
 *
 * The scanner walks only the top-level object's members. A nested value is skipped by counting
 * brackets outside strings, and a string is skipped with `indexOf('"')` plus a count of the
 * backslashes before each quote (or, where escaped quotes are dense, a regular expression), so the
 * cost is mostly native searching, not a JavaScript loop per character.
 *
 * `swapId` and `keepsEveryKey` take text already known to be valid JSON (their callers have parsed
 * it): invalid text may yield `undefined` or a meaningless result, but never an exception.
 * `resultAnswerId` reads the envelope of a server's answer that nobody parsed, so it checks every
 * character of the envelope itself and gives up on anything it does not expect.
 */

const TAB = 9;
const LF = 10;
const CR = 13;
const SPACE = 32;
const QUOTE = 34;
const COMMA = 44;
const COLON = 58;
const LBRACKET = 91;
const BACKSLASH = 92;
const RBRACKET = 93;
const LBRACE = 123;
const RBRACE = 125;

/** Beyond this many members in one object the scanner gives up rather than compare every pair of keys. */
const MAX_CHECKED_MEMBERS = 64;

export interface SwapIdOptions {
  /**
   * Also give up (undefined) when any object at any depth repeats a key. Parsers disagree on
   * which duplicate wins (JavaScript keeps the last, some keep the first, some refuse), so a text
   * with duplicates can mean one thing to the gateway that checked it and another to the peer
   * that receives it; re-serialising the parsed message removes that ambiguity. Reads every key,
   * so it suits governed messages (requests, mostly small) better than large answers. An object
   * with more than 64 members also gives undefined: the caller's fallback is correct for it, and
   * comparing every pair of keys in a huge object would be quadratic.
   */
  uniqueKeys?: boolean;
}

/**
 * Returns `text` with the value of its top-level `"id"` member replaced by `JSON.stringify(id)`,
 * or undefined when `text` is not one JSON object with exactly one top-level `id` (then the
 * caller falls back to parsing and re-serialising). A repeated top-level key of any name, or more
 * than 64 top-level members, also gives undefined, for the reasons given at
 * {@link SwapIdOptions.uniqueKeys}.
 */
export function swapId(text: string, id: string | number, options?: SwapIdOptions): string | undefined {
  if (typeof id === 'number' && !Number.isFinite(id)) return undefined;
  const unique = options?.uniqueKeys === true;
  let i = skipWs(text, 0);
  if (text.charCodeAt(i) !== LBRACE) return undefined;
  i = skipWs(text, i + 1);
  let idStart = -1;
  let idEnd = -1;
  // Top-level objects of JSON-RPC messages have a handful of members: a list beats a Set here.
  const keys: string[] = [];
  if (text.charCodeAt(i) !== RBRACE) {
    for (;;) {
      if (text.charCodeAt(i) !== QUOTE) return undefined;
      const keyEnd = endOfString(text, i);
      if (keyEnd < 0) return undefined;
      const key = keyOf(text, i, keyEnd);
      if (key === undefined || keys.length >= MAX_CHECKED_MEMBERS || keys.includes(key)) return undefined;
      keys.push(key);
      i = skipWs(text, keyEnd);
      if (text.charCodeAt(i) !== COLON) return undefined;
      const valueStart = skipWs(text, i + 1);
      const valueEnd = unique ? endOfValueUnique(text, valueStart) : endOfValue(text, valueStart);
      if (valueEnd < 0) return undefined;
      if (key === 'id') {
        idStart = valueStart;
        idEnd = valueEnd;
      }
      i = skipWs(text, valueEnd);
      const c = text.charCodeAt(i);
      if (c === RBRACE) break;
      if (c !== COMMA) return undefined;
      i = skipWs(text, i + 1);
    }
  }
  // Nothing but whitespace may follow the object.
  if (skipWs(text, i + 1) !== text.length) return undefined;
  if (idStart < 0) return undefined;
  return text.slice(0, idStart) + JSON.stringify(id) + text.slice(idEnd);
}

/** The inside of a JSON string that means exactly what it says: no escapes, no raw control characters. */
const PLAIN_STRING = /^[^"\\\u0000-\u001f]*$/;
const DIGIT_0 = 48;
const DIGIT_9 = 57;
const MINUS = 45;

/**
 * The id of `text` when it is a plain JSON-RPC success answer: one object whose members are
 * `"jsonrpc": "2.0"`, an `id` that is an integer JavaScript holds exactly or a string without
 * escapes, and `result`, each once, in any order. Anything else gives undefined: an error answer, a
 * request or notification, another member, a repeated key, a key written with escapes, text that
 * is not one object. The caller then parses the text.
 *
 * Only the envelope is read. `result` is skipped by counting its brackets outside strings and is
 * not validated: an answer the gateway only forwards passes as the server wrote it, as through any
 * proxy of bytes, and whoever reads its result parses it then (see ForwardedResult). The keys are
 * matched in place and the id read digit by digit: this runs for every answer, and slicing keys
 * and testing ids with regular expressions cost it a third more time (about 370 ns for a short
 * answer, against 250 now and 700 for JSON.parse).
 */
export function resultAnswerId(text: string): string | number | undefined {
  let i = skipWs(text, 0);
  if (text.charCodeAt(i) !== LBRACE) return undefined;
  let id: string | number | undefined;
  let version = false;
  let result = false;
  for (;;) {
    i = skipWs(text, i + 1);
    if (text.charCodeAt(i) !== QUOTE) return undefined;
    let end: number;
    if (!result && text.startsWith('result"', i + 1)) {
      i = colonAfter(text, i + 8);
      if (i < 0) return undefined;
      end = endOfValue(text, i);
      if (end < 0) return undefined;
      result = true;
    } else if (id === undefined && text.startsWith('id"', i + 1)) {
      i = colonAfter(text, i + 4);
      if (i < 0) return undefined;
      if (text.charCodeAt(i) === QUOTE) {
        end = endOfString(text, i);
        if (end < 0) return undefined;
        id = text.slice(i + 1, end - 1);
        if (!PLAIN_STRING.test(id)) return undefined;
      } else {
        // An integer of at most 16 digits, without leading zeros; anything else is left to a parser.
        const negative = text.charCodeAt(i) === MINUS;
        const first = negative ? i + 1 : i;
        let j = first;
        let n = 0;
        let c = text.charCodeAt(j);
        while (c >= DIGIT_0 && c <= DIGIT_9) {
          n = n * 10 + (c - DIGIT_0);
          c = text.charCodeAt(++j);
        }
        const digits = j - first;
        if (digits === 0 || digits > 16 || (digits > 1 && text.charCodeAt(first) === DIGIT_0)) return undefined;
        if (!Number.isSafeInteger(n)) return undefined;
        id = negative ? -n : n;
        end = j;
      }
    } else if (!version && text.startsWith('jsonrpc"', i + 1)) {
      i = colonAfter(text, i + 9);
      if (i < 0 || !text.startsWith('"2.0"', i)) return undefined;
      end = i + 5;
      version = true;
    } else {
      return undefined;
    }
    i = skipWs(text, end);
    const c = text.charCodeAt(i);
    if (c === RBRACE) break;
    if (c !== COMMA) return undefined;
  }
  // Nothing but whitespace may follow the object.
  if (skipWs(text, i + 1) !== text.length || !version || !result) return undefined;
  return id;
}

/** Where the value after the key that ended just before `i` starts, or -1 when no colon follows it. */
function colonAfter(text: string, i: number): number {
  i = skipWs(text, i);
  return text.charCodeAt(i) === COLON ? skipWs(text, i + 1) : -1;
}

/**
 * True when no object anywhere in the JSON `text` repeats a key, given `value`, what `text` parsed
 * to. JSON.parse keeps one member for each repeated key, so a text that repeats one names more keys
 * than the parsed value has members: counting both is cheaper than comparing keys, needs no
 * decoding of escaped keys, and holds for objects of any size. Iterative, like the scanner above.
 */
export function keepsEveryKey(text: string, value: unknown): boolean {
  const named = keysNamed(text);
  return named >= 0 && named === membersOf(value);
}

/** How many keys the JSON `text` names (strings followed by a colon), or -1 if a string never closes. */
function keysNamed(text: string): number {
  let n = 0;
  let i = text.indexOf('"');
  while (i >= 0) {
    const e = endOfString(text, i);
    if (e < 0) return -1;
    const j = skipWs(text, e);
    if (text.charCodeAt(j) === COLON) n++;
    // Outside any string now: the next quote opens one.
    i = text.indexOf('"', j);
  }
  return n;
}

/** How many members the objects of a parsed JSON value have, all depths together. */
function membersOf(value: unknown): number {
  let n = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v !== 'object' || v === null) continue;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) {
        const x: unknown = v[i];
        if (typeof x === 'object' && x !== null) stack.push(x);
      }
      continue;
    }
    for (const k in v) {
      n++;
      const x = (v as Record<string, unknown>)[k];
      if (typeof x === 'object' && x !== null) stack.push(x);
    }
  }
  return n;
}

function skipWs(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === SPACE || c === LF || c === CR || c === TAB) i++;
    else return i;
  }
}

/** The rest of a string from a point outside any escape, up to and including its closing quote. */
const STRING_TAIL = /[^"\\]*(?:\\[^][^"\\]*)*"/y;

/** The index just past the string whose opening quote is at `i`, or -1 when it never closes. */
function endOfString(text: string, i: number): number {
  let q = text.indexOf('"', i + 1);
  let escaped = 0;
  while (q >= 0) {
    // A quote is escaped when an odd number of backslashes precede it (`\\"` ends the string).
    let k = q - 1;
    while (text.charCodeAt(k) === BACKSLASH) k--;
    if ((q - 1 - k) % 2 === 0) return q + 1;
    // Each escaped quote costs an indexOf call (about 20 ns); where they are dense (JSON or code
    // quoted inside a string) a regular expression that reads every character is twice as fast.
    if (++escaped >= 16 && q - i < escaped * 24) {
      STRING_TAIL.lastIndex = q + 1;
      return STRING_TAIL.test(text) ? STRING_TAIL.lastIndex : -1;
    }
    q = text.indexOf('"', q + 1);
  }
  return -1;
}

/** The decoded key of the string at [start, end), or undefined when its escapes are malformed. */
function keyOf(text: string, start: number, end: number): string | undefined {
  const inner = text.slice(start + 1, end - 1);
  if (!inner.includes('\\')) return inner;
  try {
    return JSON.parse(text.slice(start, end)) as string;
  } catch {
    return undefined;
  }
}

/** The end of a number, `true`, `false` or `null` starting at `i`: the next delimiter. */
function endOfScalar(text: string, i: number): number {
  let j = i;
  for (;;) {
    const c = text.charCodeAt(j);
    // NaN past the end of the text compares unequal to everything, hence the explicit bound.
    if (j >= text.length || c === COMMA || c === RBRACE || c === RBRACKET || c === SPACE || c === LF || c === CR || c === TAB) break;
    j++;
  }
  return j > i ? j : -1;
}

/** The index just past the JSON value starting at `i`, or -1. */
function endOfValue(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c === QUOTE) return endOfString(text, i);
  if (c === LBRACE || c === LBRACKET) return endOfContainer(text, i);
  return endOfScalar(text, i);
}

/** The index just past the object or array opening at `i`: brackets are counted outside strings. */
function endOfContainer(text: string, i: number): number {
  let depth = 0;
  const n = text.length;
  for (let j = i; j < n; j++) {
    const c = text.charCodeAt(j);
    if (c === QUOTE) {
      const e = endOfString(text, j);
      if (e < 0) return -1;
      j = e - 1;
    } else if (c === LBRACE || c === LBRACKET) {
      depth++;
    } else if (c === RBRACE || c === RBRACKET) {
      if (--depth === 0) return j + 1;
    }
  }
  return -1;
}

/**
 * Like `endOfValue`, but walks every member and returns -1 when an object repeats a key (or has
 * more than MAX_CHECKED_MEMBERS members: the caller then re-serialises, which is always correct).
 * Iterative, so a deeply nested value cannot exhaust the call stack; the keys of all open objects
 * share one list, so the walk allocates nothing per object.
 */
function endOfValueUnique(text: string, i: number): number {
  // One entry per open container: where its keys start in `keys` for an object, -1 for an array.
  const frames: number[] = [];
  const keys: string[] = [];
  let j = i;
  let expectKey = false;
  for (;;) {
    j = skipWs(text, j);
    if (expectKey) {
      if (text.charCodeAt(j) !== QUOTE) return -1;
      const e = endOfString(text, j);
      if (e < 0) return -1;
      const key = keyOf(text, j, e);
      if (key === undefined) return -1;
      const from = frames[frames.length - 1]!;
      if (keys.length - from >= MAX_CHECKED_MEMBERS) return -1;
      for (let k = from; k < keys.length; k++) if (keys[k] === key) return -1;
      keys.push(key);
      j = skipWs(text, e);
      if (text.charCodeAt(j) !== COLON) return -1;
      j = skipWs(text, j + 1);
      expectKey = false;
    }
    // A value starts at j.
    const c = text.charCodeAt(j);
    if (c === LBRACE || c === LBRACKET) {
      const isObject = c === LBRACE;
      j = skipWs(text, j + 1);
      if (text.charCodeAt(j) === (isObject ? RBRACE : RBRACKET)) {
        j++; // empty: the value ends here
      } else {
        frames.push(isObject ? keys.length : -1);
        expectKey = isObject;
        continue;
      }
    } else {
      j = c === QUOTE ? endOfString(text, j) : endOfScalar(text, j);
      if (j < 0) return -1;
    }
    // A value ended at j: close every container that ends here, then move to the next member.
    for (;;) {
      if (frames.length === 0) return j;
      j = skipWs(text, j);
      const d = text.charCodeAt(j);
      const top = frames[frames.length - 1]!;
      if (d === COMMA) {
        j++;
        expectKey = top >= 0;
        break;
      }
      if (d !== (top < 0 ? RBRACKET : RBRACE)) return -1;
      frames.pop();
      if (top >= 0) keys.length = top;
      j++;
    }
  }
}
