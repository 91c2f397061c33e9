const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

// A whole string of one or more `<number><unit>` parts ("90s", "1h30m"); the schema layers use
// DURATION_PATTERN so the JSON Schema and parseDuration accept exactly the same strings.
const PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/y;

/** Source of the regular expression a duration string must match (for schemas and editors). */
export const DURATION_PATTERN = '^(?:\\d+(?:\\.\\d+)?(?:ms|s|m|h|d))+$';

/**
 * Parses a duration into milliseconds: a string of `<n><unit>` parts with units ms, s, m, h, d
 * (`"250ms"`, `"90s"`, `"5m"`, `"1h30m"`, `"1d"`), or a number of seconds. Throws a RangeError on
 * anything else, on negative or non-finite values, and on results beyond Number.MAX_SAFE_INTEGER ms.
 * Fractions of a millisecond are rounded.
 */
export function parseDuration(v: string | number): number {
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`invalid duration: ${String(v)} (expected a number of seconds >= 0)`);
    return checked(v * 1000, v);
  }
  if (typeof v !== 'string') throw new RangeError('invalid duration: expected a string or a number of seconds');
  const text = v.trim();
  if (text === '') throw new RangeError('invalid duration: empty string');
  let total = 0;
  let at = 0;
  while (at < text.length) {
    PART.lastIndex = at;
    const m = PART.exec(text);
    if (m === null || m[1] === undefined || m[2] === undefined) {
      throw new RangeError(`invalid duration: ${JSON.stringify(v)} (expected e.g. "250ms", "90s", "5m", "1h", "1d")`);
    }
    total += Number(m[1]) * (UNIT_MS[m[2]] ?? Number.NaN);
    at = PART.lastIndex;
  }
  return checked(total, v);
}

function checked(ms: number, original: string | number): number {
  // Fractions of a millisecond cannot be scheduled by timers, so round rather than reject.
  const rounded = Math.round(ms);
  if (!Number.isSafeInteger(rounded)) throw new RangeError(`invalid duration: ${JSON.stringify(original)} is too large`);
  return rounded;
}

const NAMED_WINDOWS: ReadonlyArray<[number, string]> = [
  [86_400_000, 'day'],
  [3_600_000, 'hour'],
  [60_000, 'minute'],
  [1_000, 'second'],
];
const UNITS: ReadonlyArray<[number, string]> = [
  [86_400_000, 'd'],
  [3_600_000, 'h'],
  [60_000, 'm'],
  [1_000, 's'],
  [1, 'ms'],
];

/** 60000 → `minute`, 90000 → `1m30s`: the shortest way the policy could have written it. */
export function windowText(ms: number): string {
  const named = NAMED_WINDOWS.find(([n]) => n === ms);
  return named !== undefined ? named[1] : durationText(ms);
}

/** 600000 → `10m`, 90000 → `1m30s`, 1500 → `1s500ms`: a duration as the policy would write it, units only. */
export function durationText(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms <= 0) return `${ms}ms`;
  let rest = ms;
  let out = '';
  for (const [n, unit] of UNITS) {
    const q = Math.floor(rest / n);
    if (q > 0) out += `${q}${unit}`;
    rest -= q * n;
  }
  return out;
}
