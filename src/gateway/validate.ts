/**
 * Argument validation against a tool's own `inputSchema`, as the upstream lists it.
 *
 * One `ArgumentValidator` per server keeps a compiled validator per tool name together with the
 * hash of the definition it was compiled from. `learn` sees every tools/list answer that passes
 * through the gateway and compiles only definitions that are new or changed, so the call path
 * (`check`) never compiles: it runs a ready validator or does nothing.
 *
 * A schema that does not compile (or declares a dialect this gateway does not know) is logged
 * once and not enforced: a broken schema must not make a tool uncallable.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { Ajv2019 } from 'ajv/dist/2019.js';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { Logger } from '../telemetry/logger.js';
import { policyVersion } from '../policy/index.js';

/** The longest argument value echoed back in a reason. */
const MAX_ECHO = 40;

type Dialect = '2020-12' | '2019-09' | 'draft-07';
type AnyAjv = Ajv | Ajv2019 | Ajv2020;

interface Entry {
  /** Content hash of the definition's inputSchema (canonical JSON, keys sorted). */
  readonly hash: string;
  /** Undefined when the definition is not enforced (no schema, unknown dialect, compile failure). */
  readonly validate: ValidateFunction | undefined;
  /** The instance and schema object it was compiled into, so a re-compile can drop it from Ajv's cache. */
  readonly ajv?: AnyAjv;
  readonly compiled?: object;
}

export interface ArgumentValidatorOptions {
  logger: Logger;
  /** For log lines. */
  server: string;
  now?: () => number;
  /** How long after a complete listing (or a failed one) an unknown tool may trigger another; default 60 s. */
  relistAfterMs?: number;
}

export class ArgumentValidator {
  /** How many schemas have been compiled: tests use it to see that unchanged definitions are not. */
  compiles = 0;
  private readonly tools = new Map<string, Entry>();
  private readonly ajvs = new Map<Dialect, AnyAjv>();
  private readonly log: Logger;
  private readonly server: string;
  private readonly now: () => number;
  private readonly relistAfterMs: number;
  /** When the last complete listing ended (learned or failed); undefined before any. */
  private listedAt: number | undefined;
  private listing: Promise<void> | undefined;

  constructor(opts: ArgumentValidatorOptions) {
    this.log = opts.logger;
    this.server = opts.server;
    this.now = opts.now ?? Date.now;
    this.relistAfterMs = opts.relistAfterMs ?? 60_000;
  }

  /**
   * Takes the tools of a tools/list answer (or one page of it). `complete` says the answer was the
   * whole list (a first page without `nextCursor`, or every page of the gateway's own listing).
   */
  learn(tools: unknown, complete = false): void {
    if (Array.isArray(tools)) {
      for (const t of tools) {
        const name = (t as { name?: unknown } | null)?.name;
        if (typeof name !== 'string') continue;
        this.define(name, (t as { inputSchema?: unknown }).inputSchema);
      }
    }
    if (complete) this.listedAt = this.now();
  }

  /** True once a definition of `tool` has been seen (enforced or not). */
  knows(tool: string): boolean {
    return this.tools.has(tool);
  }

  /**
   * Whether a call of `tool` should wait for the gateway to list the tools itself: its definition
   * is unknown and no complete listing has been seen recently (or one is already under way).
   */
  needsListing(tool: string): boolean {
    if (this.tools.has(tool)) return false;
    if (this.listing !== undefined) return true;
    return this.listedAt === undefined || this.now() - this.listedAt >= this.relistAfterMs;
  }

  /**
   * Runs `list` unless a listing is already under way, in which case it joins that one. `list`
   * should call `learn(…, true)` on success; whether it succeeds or fails, the next listing waits
   * `relistAfterMs`, so a broken upstream list costs one attempt per interval, not one per call.
   */
  listOnce(list: () => Promise<void>): Promise<void> {
    this.listing ??= list()
      .catch((err: unknown) => {
        this.log.warn({ server: this.server, err: (err as Error)?.message }, 'could not list tools to validate arguments; calls of unknown tools go through unchecked');
      })
      .finally(() => {
        this.listedAt = this.now();
        this.listing = undefined;
      });
    return this.listing;
  }

  /** Undefined when the arguments are acceptable (or the tool's schema is unknown or not enforced), else why not. */
  check(tool: string, args: unknown): string | undefined {
    const validate = this.tools.get(tool)?.validate;
    if (validate === undefined) return undefined;
    if (validate(args)) return undefined;
    const err = validate.errors?.[0];
    return err === undefined ? 'the arguments do not match the tool’s input schema' : describe(err, args);
  }

  private define(name: string, schema: unknown): void {
    const hash = policyVersion(schema ?? null);
    const old = this.tools.get(name);
    if (old?.hash === hash) return;
    if (old?.ajv !== undefined && old.compiled !== undefined) old.ajv.removeSchema(old.compiled);
    this.tools.set(name, this.compile(name, hash, schema));
  }

  private compile(name: string, hash: string, schema: unknown): Entry {
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
      if (schema !== undefined && typeof schema !== 'boolean') {
        this.log.warn({ server: this.server, tool: name }, 'tool inputSchema is not an object; its arguments are not validated');
      }
      return { hash, validate: undefined };
    }
    const declared = (schema as { $schema?: unknown }).$schema;
    const dialect = dialectOf(declared);
    if (dialect === undefined) {
      this.log.warn(
        { server: this.server, tool: name, $schema: String(declared).slice(0, 200) },
        'tool inputSchema declares a JSON Schema dialect the gateway does not support; its arguments are not validated',
      );
      return { hash, validate: undefined };
    }
    // A copy without `$id` and `$schema`: the dialect is chosen by instance, and two tools sharing
    // an `$id` (or a definition re-listed under the same one) must not collide in Ajv's registry.
    const { $id: _id, $schema: _schema, ...body } = schema as Record<string, unknown>;
    const ajv = this.ajvFor(dialect);
    this.compiles++;
    try {
      return { hash, validate: ajv.compile(body), ajv, compiled: body };
    } catch (err) {
      ajv.removeSchema(body);
      this.log.warn(
        { server: this.server, tool: name, err: (err as Error).message },
        'tool inputSchema does not compile; its arguments are not validated',
      );
      return { hash, validate: undefined };
    }
  }

  private ajvFor(dialect: Dialect): AnyAjv {
    let ajv = this.ajvs.get(dialect);
    if (ajv === undefined) {
      const opts = { allErrors: false, strict: false, validateFormats: false };
      ajv = dialect === '2020-12' ? new Ajv2020(opts) : dialect === '2019-09' ? new Ajv2019(opts) : new Ajv(opts);
      this.ajvs.set(dialect, ajv);
    }
    return ajv;
  }
}

/** MCP schemas are 2020-12 unless they say otherwise. Draft-06 is read as draft-07 (a superset in practice). */
function dialectOf(declared: unknown): Dialect | undefined {
  if (declared === undefined) return '2020-12';
  if (typeof declared !== 'string') return undefined;
  const uri = declared.replace(/^https?:\/\//, '').replace(/#$/, '');
  if (uri === 'json-schema.org/draft/2020-12/schema') return '2020-12';
  if (uri === 'json-schema.org/draft/2019-09/schema') return '2019-09';
  if (uri === 'json-schema.org/draft-07/schema' || uri === 'json-schema.org/draft-06/schema') return 'draft-07';
  return undefined;
}

/** A sentence an agent can act on, from Ajv's first error. */
export function describe(err: ErrorObject, args: unknown): string {
  const at = fieldName(err.instancePath, args);
  const p = err.params as Record<string, unknown>;
  const arg = (field: string) => `argument '${field}'`;
  const subject = at === '' ? 'the arguments' : arg(at);
  switch (err.keyword) {
    case 'required':
      return `${arg(join(at, String(p.missingProperty)))} is required`;
    case 'dependentRequired':
    case 'dependencies':
      return `${arg(join(at, String(p.missingProperty)))} is required when '${join(at, String(p.property))}' is given`;
    case 'additionalProperties':
      return `unexpected ${arg(join(at, String(p.additionalProperty)))}`;
    case 'unevaluatedProperties':
      return `unexpected ${arg(join(at, String(p.unevaluatedProperty)))}`;
    case 'type': {
      const types = Array.isArray(p.type) ? p.type.join(' or ') : String(p.type);
      return `${subject} must be ${types}, got ${typeName(valueAt(err.instancePath, args))}`;
    }
    case 'enum': {
      const allowed = Array.isArray(p.allowedValues) ? p.allowedValues : [];
      return `${subject} must be one of: ${clip(allowed.map((v) => (typeof v === 'string' ? v : show(v))).join(', '), 200)}, got ${show(valueAt(err.instancePath, args))}`;
    }
    case 'const':
      return `${subject} must be ${show(p.allowedValue)}, got ${show(valueAt(err.instancePath, args))}`;
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return `${subject} must be ${String(p.comparison)} ${String(p.limit)}, got ${show(valueAt(err.instancePath, args))}`;
    case 'minLength':
      return `${subject} must be at least ${String(p.limit)} characters long`;
    case 'maxLength':
      return `${subject} must be at most ${String(p.limit)} characters long`;
    case 'minItems':
      return `${subject} must have at least ${String(p.limit)} items`;
    case 'maxItems':
      return `${subject} must have at most ${String(p.limit)} items`;
    case 'pattern':
      return `${subject} must match the pattern ${clip(String(p.pattern), 100)}, got ${show(valueAt(err.instancePath, args))}`;
    default:
      // Ajv's own wording: "must be multiple of 5", "must match exactly one schema in oneOf", ...
      return `${subject} ${err.message ?? 'does not match the tool’s input schema'}`;
  }
}

/** `/items/0/name` → `items[0].name`: indices where the value there is an array, dots otherwise. */
function fieldName(pointer: string, args: unknown): string {
  if (pointer === '') return '';
  let out = '';
  let here: unknown = args;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += Array.isArray(here) ? `[${key}]` : out === '' ? key : `.${key}`;
    here = here !== null && typeof here === 'object' ? (here as Record<string, unknown>)[key] : undefined;
  }
  return out;
}

function join(parent: string, child: string): string {
  return parent === '' ? child : `${parent}.${child}`;
}

function valueAt(pointer: string, args: unknown): unknown {
  let here: unknown = args;
  if (pointer === '') return here;
  for (const raw of pointer.slice(1).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (here === null || typeof here !== 'object' || !Object.hasOwn(here, key)) return undefined;
    here = (here as Record<string, unknown>)[key];
  }
  return here;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'string') return `string ${show(v)}`;
  if (typeof v === 'number') return Number.isInteger(v) ? `integer ${v}` : `number ${v}`;
  return typeof v;
}

/** A value as JSON, cut to MAX_ECHO characters. */
function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return clip(s, MAX_ECHO);
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}
