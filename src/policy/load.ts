import { readFileSync } from 'node:fs';
import { ConfigError, ErrorCodes } from '../errors.js';
import { compileValidated } from './compile.js';
import { formatProblems, readSource, zodProblems } from './diagnostics.js';
import type { PathSegment, SourceText } from './diagnostics.js';
import { convertIntercept, isInterceptPolicy } from './intercept.js';
import { PolicySchema } from './schema.js';
import type { PolicyDocument } from './schema.js';
import type { CompiledPolicy } from './types.js';

/** Reads, validates and compiles a policy file (JSON or YAML). Throws ConfigError. */
export function loadPolicyFile(path: string): CompiledPolicy {
  return parsePolicy(readText(path), path);
}

/**
 * Validates and compiles policy text (JSON or YAML). `source` names it in error messages
 * and becomes the compiled policy's `source`. Throws ConfigError listing every problem.
 */
export function parsePolicy(text: string, source: string): CompiledPolicy {
  const read = readSource(text, source);
  if (read.errors.length > 0) throw new ConfigError([...read.errors]);
  const checked = checkPolicyValue(read.value, read.text);
  if (!checked.ok) throw new ConfigError(checked.issues);
  return compileChecked(checked, source);
}

/** Compiles a policy that passed checkPolicyValue, keeping what a conversion said about it. */
export function compileChecked(checked: PolicyCheck & { ok: true }, source: string): CompiledPolicy {
  const policy = compileValidated(checked.document, source);
  if (checked.convertedFrom === undefined) return policy;
  const warnings = checked.warnings ?? [];
  return Object.freeze({ ...policy, convertedFrom: checked.convertedFrom, ...(warnings.length > 0 ? { warnings: Object.freeze([...warnings]) } : {}) });
}

export type PolicyCheck =
  | {
      ok: true;
      document: PolicyDocument;
      /** Set when the value was an Intercept policy, converted into `document`. */
      convertedFrom?: 'intercept';
      /** The conversion's caveats, located in the file. */
      warnings?: readonly string[];
    }
  | { ok: false; issues: string[] };

/**
 * Validates a policy value that sits at `prefix` inside a parsed file: the whole file for a
 * policy file, or `/servers/<name>/policy` for a policy written inline in gateway.yaml, so
 * messages name the file and line the operator has to edit.
 */
export function checkPolicyValue(value: unknown, text: SourceText, prefix: readonly PathSegment[] = []): PolicyCheck {
  // An Intercept policy loads as the PolicyLayer policy it converts to, wherever a policy loads.
  if (isInterceptPolicy(value)) {
    try {
      const converted = convertIntercept(value, text.source, text, prefix);
      return { ok: true, document: converted.document, convertedFrom: 'intercept', warnings: converted.warnings };
    } catch (err) {
      if (err instanceof ConfigError) return { ok: false, issues: err.issues };
      throw err;
    }
  }
  const parsed = PolicySchema.safeParse(value);
  if (parsed.success) return { ok: true, document: parsed.data };
  return { ok: false, issues: formatProblems(text.source, text, zodProblems(parsed.error, value), prefix) };
}

const READ_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'is a directory, not a file',
  ENOTDIR: 'a parent of it is not a directory',
};

/** Reads a config or policy file as UTF-8, turning failures into CONFIG_UNREADABLE. */
export function readText(path: string): string {
  const r = tryReadText(path);
  if (!r.ok) throw new ConfigError([`${path}: cannot read: ${r.why}`], ErrorCodes.CONFIG_UNREADABLE);
  return r.text;
}

/** Like readText, but returns the reason (e.g. "no such file") instead of throwing. */
export function tryReadText(path: string): { ok: true; text: string } | { ok: false; why: string } {
  try {
    return { ok: true, text: readFileSync(path, 'utf8') };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | undefined)?.code;
    const why = (code !== undefined ? READ_ERRORS[code] : undefined) ?? code ?? (err instanceof Error ? err.message : String(err));
    return { ok: false, why };
  }
}
