/**
 * `node dist/bench/audit-postgres.js [--quick] [--write] [--verify] [--strategies] [--rounds N]`: how
 * many audit records per second the PostgreSQL sink stores, sustained, against the server at
 * DATABASE_URL.
 *
 * Records: the traffic of bench/audit-sqlite.ts (one gateway process, one stream, 1,000 grants
 * with Zipf-distributed activity, 20 tools over 5 servers, realistic decisions and arguments in
 * `keys` mode), correctly chained, 200,000 per case (50,000 with --quick), each case into a
 * fresh schema that is dropped afterwards. The worst case spreads calls evenly over the grants;
 * the last case is two gateways (two sinks, two pools, two streams) writing at once.
 *
 * Method: as in bench/audit-sqlite.ts, each batch is made and chained before its write and
 * untimed; the write (one transaction, committed with the server's synchronous_commit) is timed
 * with process.hrtime.bigint(), and events/s is the records over the summed write times. For two
 * writers the records are chained beforehand and events/s is all of them over the wall time of
 * the writing. The table grows from empty, so index depth, page splits and the server's
 * checkpoints are in the numbers. Beside the rate: the CPU time per record of this process during
 * the writes (serialising the batch, pg's protocol) and of the server's backends (from /proc,
 * when the server runs on this machine), the WAL the server wrote per record (everything it
 * wrote meanwhile, so other users of the server count too), the table's size with its indexes,
 * and the share of the machine's CPUs that processes outside the benchmark kept busy: this
 * machine is shared, and a busy neighbour lowers the rate. `--rounds N` runs every case N times,
 * interleaved, and reports the round with the median rate and the range.
 *
 * `--strategies` also compares ways of sending a batch, each timed the same way on a schema the
 * sink created: the sink's own (its bucket rows and a COPY FROM STDIN of the records in text
 * format, streamed in slices; src/audit/sinks/postgres-copy.ts), one jsonb parameter of rows that
 * jsonb_array_elements() turns back into rows (the sink's way before schema version 3), unnest()
 * of 22 array parameters, and multi-row VALUES with 22 parameters a row (split to stay under the
 * protocol's 65,535 parameters). The others insert the records only (no bucket rows, fewer than one
 * per hundred records here), with ON CONFLICT DO NOTHING as a sink needs.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { cpus, platform, release } from 'node:os';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { chain, type AuditRecord } from '../src/audit/event.js';
import { INSERT_COLUMNS, openPostgresAuditSink, type PostgresAuditSink } from '../src/audit/sinks/postgres.js';
import { Traffic } from './audit-sqlite.js';
import { cpuMicros, machineCpu } from './procs.js';
import { BENCH_DOC, writeMarkedSection } from './report.js';
import { percentile } from './stats.js';

/** The issue's target for the PostgreSQL sink, sustained on this 2-core machine (server included). */
export const AUDIT_POSTGRES_TARGETS = { eventsPerSecond: 20_000 } as const;

const USAGE = `Usage: node dist/bench/audit-postgres.js [--quick] [--write] [--verify] [--strategies] [--records N] [--rounds N]

Writes realistic audit records through the PostgreSQL sink at DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/postgres), each case into a fresh schema dropped afterwards,
in batches of 500, 1,000 and 5,000, and prints events/s and batch write times as a Markdown table.

Options:
  --quick        50,000 records per case instead of 200,000
  --records N    N records per case
  --rounds N     run every case N times, interleaved, and report the median round (default 1)
  --verify       also verify each case's log afterwards and report records/s verified
  --strategies   also compare ways of sending a batch (jsonb rows, unnest of arrays, VALUES)
  --write        also write the tables into docs/benchmarks.md (between its audit-postgres-bench markers)
  -h, --help
`;

export interface PgBenchCase {
  label: string;
  batch: number;
  grants: 'zipf' | 'uniform';
  /** Sinks writing at once, each its own stream. */
  writers: number;
}

export interface PgBenchResult extends PgBenchCase {
  records: number;
  eventsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** CPU time of this process during the writes, per record. */
  clientUs: number;
  /** CPU time of the sink's server backends, per record (undefined when /proc cannot see them). */
  serverUs: number | undefined;
  walBytesPerRecord: number;
  /** audit_records with its indexes and TOAST, per record. */
  tableBytesPerRecord: number;
  /** Share of the machine's CPU time used by processes other than this one and the sink's backends. */
  otherLoad: number | undefined;
  verifyPerSecond?: number;
}

export interface StrategyResult {
  strategy: string;
  records: number;
  batch: number;
  eventsPerSecond: number;
  clientUs: number;
  serverUs: number | undefined;
}

/** The server under test: an admin pool, its URL, and the prefix of this run's schemas. */
export interface Server {
  admin: pg.Pool;
  url: string;
  run: string;
  schemas: number;
}

/** A fresh schema of this run, and a URL whose connections use it and carry its name as application_name. */
async function freshSchema(server: Server): Promise<{ schema: string; url: string }> {
  const schema = `${server.run}_${++server.schemas}`;
  await server.admin.query(`CREATE SCHEMA ${pg.escapeIdentifier(schema)}`);
  const u = new URL(server.url);
  u.searchParams.set('options', `-c search_path=${schema}`);
  u.searchParams.set('application_name', schema);
  return { schema, url: u.href };
}

async function dropSchema(server: Server, schema: string): Promise<void> {
  await server.admin.query(`DROP SCHEMA IF EXISTS ${pg.escapeIdentifier(schema)} CASCADE`);
}

/**
 * CPU time so far of the server backends connected under `schema` (their application_name), by
 * pid; a backend seen for the first time counts from zero, since it started after the last look.
 */
class Backends {
  private readonly seen = new Map<number, number>();
  private total = 0;
  private readable = true;

  constructor(
    private readonly admin: pg.Pool,
    private readonly schema: string,
  ) {}

  async sample(): Promise<void> {
    const { rows } = await this.admin.query<{ pid: number }>('SELECT pid FROM pg_stat_activity WHERE application_name = $1', [this.schema]);
    for (const { pid } of rows) {
      const now = cpuMicros(pid);
      if (now === undefined) {
        this.readable = false;
        continue;
      }
      this.total += now - (this.seen.get(pid) ?? 0);
      this.seen.set(pid, now);
    }
  }

  /** µs of CPU since the first sample, or undefined if a backend could not be read. */
  get micros(): number | undefined {
    return this.readable ? this.total : undefined;
  }

  /** Forgets what was used so far: the next sample counts from here. */
  reset(): void {
    this.total = 0;
  }
}

async function walLsn(admin: pg.Pool): Promise<string> {
  const { rows } = await admin.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  return rows[0]!.lsn;
}

async function walSince(admin: pg.Pool, lsn: string): Promise<number> {
  const { rows } = await admin.query<{ bytes: string }>('SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) AS bytes', [lsn]);
  return Number(rows[0]!.bytes);
}

/** Chains the events of `traffic` into one fresh stream, a batch at a time. */
class Chainer {
  private prev: AuditRecord | undefined;
  private readonly stream = randomUUID();

  constructor(private readonly traffic: Traffic) {}

  next(size: number): AuditRecord[] {
    const batch: AuditRecord[] = new Array(size);
    for (let k = 0; k < size; k++) batch[k] = this.prev = chain(this.stream, this.prev, this.traffic.next());
    return batch;
  }
}

export async function benchPostgresSink(server: Server, c: PgBenchCase, records: number, verify: boolean): Promise<PgBenchResult> {
  const { schema, url } = await freshSchema(server);
  const sinks: PostgresAuditSink[] = [];
  try {
    for (let w = 0; w < c.writers; w++) sinks.push(await openPostgresAuditSink(url, { poolSize: 2 }));
    const backends = new Backends(server.admin, schema);
    await backends.sample();
    backends.reset();
    const wal0 = await walLsn(server.admin);
    const machine0 = machineCpu();
    const self0 = process.cpuUsage();
    const wall0 = process.hrtime.bigint();
    const times: number[] = [];
    let writeNs = 0n;
    let clientUs = 0;

    if (c.writers === 1) {
      const chainer = new Chainer(new Traffic(42, c.grants));
      for (let written = 0; written < records; ) {
        const batch = chainer.next(Math.min(c.batch, records - written));
        const cpu0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        await sinks[0]!.write(batch);
        const dt = process.hrtime.bigint() - t0;
        const cpu = process.cpuUsage(cpu0);
        clientUs += cpu.user + cpu.system;
        writeNs += dt;
        times.push(Number(dt) / 1e6);
        written += batch.length;
      }
    } else {
      // Chained beforehand: the writers share this thread, and chaining would otherwise sit in the wall time.
      const per = Math.ceil(records / c.writers);
      const batches = sinks.map((_, w) => {
        const chainer = new Chainer(new Traffic(42 + w, c.grants));
        const out: AuditRecord[][] = [];
        for (let n = 0; n < per; n += c.batch) out.push(chainer.next(Math.min(c.batch, per - n)));
        return out;
      });
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      await Promise.all(
        sinks.map(async (sink, w) => {
          for (const batch of batches[w]!) {
            const b0 = process.hrtime.bigint();
            await sink.write(batch);
            times.push(Number(process.hrtime.bigint() - b0) / 1e6);
          }
        }),
      );
      writeNs = process.hrtime.bigint() - t0;
      const cpu = process.cpuUsage(cpu0);
      clientUs = cpu.user + cpu.system;
      records = per * c.writers;
    }

    await backends.sample();
    const self = process.cpuUsage(self0);
    const machine1 = machineCpu();
    const wallUs = Number(process.hrtime.bigint() - wall0) / 1e3;
    const wal = await walSince(server.admin, wal0);
    const { rows } = await server.admin.query<{ bytes: string }>('SELECT pg_total_relation_size($1::regclass) AS bytes', [`${pg.escapeIdentifier(schema)}.audit_records`]);
    let otherLoad: number | undefined;
    const serverUs = backends.micros;
    if (machine0 !== undefined && machine1 !== undefined && serverUs !== undefined) {
      // Over the whole case, chaining included, so that only other processes remain.
      const others = machine1.busy - machine0.busy - (self.user + self.system) - serverUs;
      otherLoad = Math.max(0, others) / (wallUs * cpus().length);
    }

    let verifyPerSecond: number | undefined;
    if (verify) {
      const v0 = process.hrtime.bigint();
      const result = await sinks[0]!.verify();
      const dt = Number(process.hrtime.bigint() - v0) / 1e9;
      if (!result.ok || result.records !== records) throw new Error(`${c.label}: verification failed: ${JSON.stringify(result)}`);
      verifyPerSecond = records / dt;
    }

    const sorted = Float64Array.from(times).sort();
    return {
      ...c,
      records,
      eventsPerSecond: records / (Number(writeNs) / 1e9),
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      maxMs: sorted[sorted.length - 1]!,
      clientUs: clientUs / records,
      serverUs: serverUs === undefined ? undefined : serverUs / records,
      walBytesPerRecord: wal / records,
      tableBytesPerRecord: Number(rows[0]!.bytes) / records,
      otherLoad,
      ...(verifyPerSecond === undefined ? {} : { verifyPerSecond }),
    };
  } finally {
    await Promise.all(sinks.map((s) => s.close()));
    await dropSchema(server, schema);
  }
}

/** The columns of the sink's table, in the order each strategy sends them, with their types: the sink's own. */
const COLUMNS = INSERT_COLUMNS;

const rowOf = (r: AuditRecord): unknown[] => [
  r.stream, r.seq, r.at, r.requestId, r.grantId, r.grantLabel, r.session, r.server, r.method, r.tool, r.decision, r.rule, r.reason,
  r.policyVersion, r.arguments === undefined ? null : JSON.stringify(r.arguments), r.upstreamStatus, r.latencyMs, r.resultBytes,
  // record_json: the benchmark's records all fit their columns.
  r.error, r.prevHash, r.hash, null,
];

const INSERT_INTO = `INSERT INTO audit_records (${COLUMNS.map(([c]) => c).join(', ')})`;
const UNNEST_SQL = `${INSERT_INTO} SELECT * FROM unnest(${COLUMNS.map(([, t], i) => `$${i + 1}::${t}[]`).join(', ')}) ON CONFLICT (stream, seq) DO NOTHING`;
/** Most rows one VALUES statement can carry: 65,535 parameters at most. */
const VALUES_ROWS = Math.floor(65_535 / COLUMNS.length);
const valuesSql = (rows: number) =>
  `${INSERT_INTO} VALUES ${Array.from({ length: rows }, (_, r) => `(${COLUMNS.map(([, t], i) => `$${r * COLUMNS.length + i + 1}::${t}`).join(', ')})`).join(', ')} ON CONFLICT (stream, seq) DO NOTHING`;

/** One strategy's way of sending a batch, inside the transaction the caller opened. */
type Send = (client: pg.ClientBase, batch: readonly AuditRecord[]) => Promise<void>;

/** One jsonb parameter, an array of rows: jsonb_array_elements() yields them in order, `->>` each column as text. */
const JSONB_SQL = `${INSERT_INTO}
SELECT ${COLUMNS.map(([, type], i) => `(b.r->>${i})::${type}`).join(', ')}
FROM jsonb_array_elements($1::jsonb) AS b (r)
ON CONFLICT (stream, seq) DO NOTHING`;

const STRATEGIES: Record<string, Send> = {
  'one jsonb parameter of rows (jsonb_array_elements; the sink before schema version 3)': async (client, batch) => {
    await client.query({ name: 'jsonb', text: JSONB_SQL, values: [JSON.stringify(batch.map(rowOf))] });
  },
  'unnest() of 22 array parameters': async (client, batch) => {
    const columns = COLUMNS.map(() => new Array<unknown>(batch.length));
    batch.forEach((r, i) => rowOf(r).forEach((v, j) => (columns[j]![i] = v)));
    await client.query({ name: 'unnest', text: UNNEST_SQL, values: columns });
  },
  [`multi-row VALUES, 22 parameters a row (≤ ${VALUES_ROWS.toLocaleString('en-US')} rows a statement)`]: async (client, batch) => {
    for (let i = 0; i < batch.length; i += VALUES_ROWS) {
      const part = batch.slice(i, i + VALUES_ROWS);
      await client.query({ name: `values-${part.length}`, text: valuesSql(part.length), values: part.flatMap(rowOf) });
    }
  },
};

/** The sink's own way, named as the table shows it, then the others. */
const STRATEGY_NAMES = ['the sink: COPY FROM STDIN in slices of 100 rows, text format (and its bucket rows)', ...Object.keys(STRATEGIES)];

/** Times `records` records in batches of `batch` through `strategy`, on a fresh schema. */
async function benchStrategy(server: Server, strategy: string, records: number, batch: number): Promise<StrategyResult> {
  const { schema, url } = await freshSchema(server);
  const sink = await openPostgresAuditSink(url, { poolSize: 1 });
  const send = STRATEGIES[strategy];
  const client = send === undefined ? undefined : new pg.Client({ connectionString: url });
  try {
    if (client !== undefined) await client.connect();
    const backends = new Backends(server.admin, schema);
    await backends.sample();
    backends.reset();
    const chainer = new Chainer(new Traffic(42, 'zipf'));
    let ns = 0n;
    let cpuUs = 0;
    for (let written = 0; written < records; ) {
      const b = chainer.next(Math.min(batch, records - written));
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      if (client === undefined || send === undefined) {
        await sink.write(b);
      } else {
        await client.query('BEGIN');
        await send(client, b);
        await client.query('COMMIT');
      }
      ns += process.hrtime.bigint() - t0;
      const cpu = process.cpuUsage(cpu0);
      cpuUs += cpu.user + cpu.system;
      written += b.length;
    }
    await backends.sample();
    const { rows } = await server.admin.query<{ n: string }>(`SELECT count(*) AS n FROM ${pg.escapeIdentifier(schema)}.audit_records`);
    if (Number(rows[0]!.n) !== records) throw new Error(`${strategy}: stored ${rows[0]!.n} records of ${records}`);
    const serverUs = backends.micros;
    return { strategy, records, batch, eventsPerSecond: records / (Number(ns) / 1e9), clientUs: cpuUs / records, serverUs: serverUs === undefined ? undefined : serverUs / records };
  } finally {
    await client?.end();
    await sink.close();
    await dropSchema(server, schema);
  }
}

/** The round with the median rate (the lower of the middle two for an even count), and the range of the rates. */
export function median<T extends { eventsPerSecond: number }>(rounds: readonly T[]): T & { slowest: number; fastest: number } {
  const sorted = [...rounds].sort((x, y) => x.eventsPerSecond - y.eventsPerSecond);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)]!;
  return { ...mid, slowest: sorted[0]!.eventsPerSecond, fastest: sorted[sorted.length - 1]!.eventsPerSecond };
}

function int(v: number): string {
  return Math.round(v).toLocaleString('en-US');
}

function ms(v: number): string {
  return v < 10 ? v.toFixed(2) : v.toFixed(1);
}

const us = (v: number | undefined) => (v === undefined ? '–' : v.toFixed(1));

/** A rate, and the range over the rounds when there were several. */
function rate(r: { eventsPerSecond: number; slowest?: number; fastest?: number }, rounds: number): string {
  if (rounds < 2 || r.slowest === undefined || r.fastest === undefined) return int(r.eventsPerSecond);
  return `${int(r.eventsPerSecond)} (${int(r.slowest)}–${int(r.fastest)})`;
}

type Ranged<T> = T & { slowest?: number; fastest?: number };

export function auditPostgresMarkdown(
  results: Array<Ranged<PgBenchResult>>,
  strategies: Array<Ranged<StrategyResult>>,
  rounds: number,
  command: string,
  serverInfo: string,
): string {
  const model = cpus()[0]?.model.trim() ?? 'unknown CPU';
  const first = results[0];
  const verified = results.some((r) => r.verifyPerSecond !== undefined);
  const ofRounds =
    rounds > 1
      ? `The cases ran in ${rounds} interleaved rounds; each row is the round with the median rate (its other columns from that round too), the range of all rounds in parentheses. `
      : '';
  const lines = [
    `Measured with \`${command}\` on ${new Date().toISOString().slice(0, 10)}: Node ${process.version}, ${model} × ${cpus().length} cores, ${platform()} ${release()}; ${serverInfo} on the same machine.`,
    `Each row writes ${first === undefined ? '–' : int(first.records)} chained records into a fresh schema; events/s is records over the summed batch write times ` +
      '(two writers: over the wall time), each batch one transaction. ' +
      ofRounds +
      'CPU µs are per record: this process during the writes, and the server backends that wrote. ' +
      'WAL counts everything the server wrote meanwhile; "others" is the share of the CPUs that other processes on the machine kept busy.',
    '',
    `| case | batch | grants | events/s | batch p50 ms | batch p99 ms | batch max ms | Node µs | server µs | WAL bytes/record | table bytes/record | others |${verified ? ' verified/s |' : ''}`,
    `|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|${verified ? '---:|' : ''}`,
  ];
  for (const r of results) {
    const others = r.otherLoad === undefined ? '–' : `${Math.round(r.otherLoad * 100)}%`;
    lines.push(
      `| ${r.label} | ${int(r.batch)} | ${r.grants === 'zipf' ? 'Zipf over 1,000' : 'uniform over 1,000'} | ${rate(r, rounds)} | ${ms(r.p50Ms)} | ${ms(r.p99Ms)} | ${ms(r.maxMs)} | ${us(r.clientUs)} | ${us(r.serverUs)} | ${int(r.walBytesPerRecord)} | ${int(r.tableBytesPerRecord)} | ${others} |${verified ? ` ${r.verifyPerSecond === undefined ? '–' : int(r.verifyPerSecond)} |` : ''}`,
    );
  }
  if (strategies.length > 0) {
    lines.push('');
    lines.push(`Ways of sending a batch (${int(strategies[0]!.records)} records in batches of ${int(strategies[0]!.batch)}, Zipf grants, one transaction a batch, each on a fresh schema, in the same rounds):`);
    lines.push('');
    lines.push('| strategy | events/s | Node µs/record | server µs/record |');
    lines.push('|---|---:|---:|---:|');
    for (const s of strategies) lines.push(`| ${s.strategy} | ${rate(s, rounds)} | ${us(s.clientUs)} | ${us(s.serverUs)} |`);
  }
  const realistic = results.filter((r) => r.grants === 'zipf' && r.writers === 1);
  if (realistic.length > 0) {
    const worst = realistic.reduce((a, b) => (b.eventsPerSecond < a.eventsPerSecond ? b : a));
    const met = worst.eventsPerSecond >= AUDIT_POSTGRES_TARGETS.eventsPerSecond;
    const which = rounds > 1 ? ' (median of the rounds)' : '';
    lines.push('');
    lines.push(
      `Target: at least ${int(AUDIT_POSTGRES_TARGETS.eventsPerSecond)} events/s sustained (one writer, realistic grants, every batch size above)${which}: ${int(worst.eventsPerSecond)} (batches of ${int(worst.batch)}), ${met ? 'met' : '**not met**'}.`,
    );
  }
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      quick: { type: 'boolean' },
      records: { type: 'string' },
      rounds: { type: 'string' },
      write: { type: 'boolean' },
      verify: { type: 'boolean' },
      strategies: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const records = values.records !== undefined ? Number(values.records) : values.quick ? 50_000 : 200_000;
  if (!Number.isSafeInteger(records) || records < 1) throw new Error(`--records must be a whole number ≥ 1, got ${values.records}`);
  const rounds = values.rounds !== undefined ? Number(values.rounds) : 1;
  if (!Number.isSafeInteger(rounds) || rounds < 1) throw new Error(`--rounds must be a whole number ≥ 1, got ${values.rounds}`);
  const url = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
  const server: Server = { admin: new pg.Pool({ connectionString: url, max: 2 }), url, run: `pl_bench_audit_${randomBytes(4).toString('hex')}`, schemas: 0 };
  try {
    const { rows } = await server.admin.query<{ version: string; sync: string }>(
      "SELECT current_setting('server_version') AS version, current_setting('synchronous_commit') AS sync",
    );
    const serverInfo = `PostgreSQL ${rows[0]!.version} (synchronous_commit ${rows[0]!.sync})`;
    const cases: PgBenchCase[] = [
      { label: 'realistic traffic', batch: 500, grants: 'zipf', writers: 1 },
      { label: 'realistic traffic', batch: 1_000, grants: 'zipf', writers: 1 },
      { label: 'realistic traffic', batch: 5_000, grants: 'zipf', writers: 1 },
      { label: 'worst case: calls spread evenly over the grants', batch: 1_000, grants: 'uniform', writers: 1 },
      { label: 'two gateways writing at once (two sinks, two streams)', batch: 1_000, grants: 'zipf', writers: 2 },
    ];
    const strategyNames = values.strategies ? STRATEGY_NAMES : [];
    // Rounds interleave the cases, so a neighbour's burst of load lands on one round of each case
    // rather than on every round of one case.
    const byCase: PgBenchResult[][] = cases.map(() => []);
    const byStrategy: StrategyResult[][] = strategyNames.map(() => []);
    for (let round = 1; round <= rounds; round++) {
      for (const [i, c] of cases.entries()) {
        process.stderr.write(`audit-postgres bench: round ${round}/${rounds}: ${c.label}, batches of ${c.batch}…\n`);
        byCase[i]!.push(await benchPostgresSink(server, c, records, values.verify === true));
      }
      for (const [i, name] of strategyNames.entries()) {
        process.stderr.write(`audit-postgres bench: round ${round}/${rounds}: strategy ${name}…\n`);
        byStrategy[i]!.push(await benchStrategy(server, name, records, 1_000));
      }
    }
    const md = auditPostgresMarkdown(
      byCase.map((r) => median(r)),
      byStrategy.map((r) => median(r)),
      rounds,
      `node dist/bench/audit-postgres.js${argv.length > 0 ? ` ${argv.join(' ')}` : ''}`,
      serverInfo,
    );
    process.stdout.write(`\n${md}\n`);
    if (values.write) writeMarkedSection(BENCH_DOC, 'audit-postgres-bench', md);
    return 0;
  } finally {
    await server.admin.end();
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`bench/audit-postgres: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
