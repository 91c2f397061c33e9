#!/usr/bin/env node
// Regenerates the shipped catalogue (catalog/<key>.json): the official MCP reference servers that
// start without credentials, each scanned with the real `policylayer scan --format json`, as a
// user would scan it. Run after `npm run build`:
//
//   node scripts/catalog.mjs            scan every server and write the files that changed
//   node scripts/catalog.mjs --check    scan every server and compare, writing nothing; exits 1
//                                       when a file is missing or differs (scan time aside)
//   node scripts/catalog.mjs everything memory     only these keys
//
// The servers installed as devDependencies run from node_modules; the others through
// `npx -y <package>@<version>` (the npm registry must be reachable). A server reached through npx
// is optional: when it cannot be scanned, its file is left as it is, with a warning.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OUT = path.join(ROOT, 'catalog');
const BIN = path.join(ROOT, 'bin/policylayer.js');
const REGENERATE = 'npm run build && node scripts/catalog.mjs';

// Each server: its catalogue key, its npm package, and what it needs to start. `shownArgs` stand
// in the recorded command for arguments that only mean something on this machine.
const SERVERS = [
  { key: 'everything', package: '@modelcontextprotocol/server-everything' },
  { key: 'filesystem', package: '@modelcontextprotocol/server-filesystem', args: (tmp) => [tmp], shownArgs: ['/path/to/allowed/dir'] },
  { key: 'memory', package: '@modelcontextprotocol/server-memory', env: (tmp) => ({ MEMORY_FILE_PATH: path.join(tmp, 'memory.jsonl') }) },
  { key: 'sequential-thinking', package: '@modelcontextprotocol/server-sequential-thinking', npx: true },
];

const argv = process.argv.slice(2);
const check = argv.includes('--check');
const only = argv.filter((a) => !a.startsWith('--'));
for (const a of argv.filter((x) => x.startsWith('--') && x !== '--check')) fail(`unknown option ${a}: expected --check and catalogue keys`);
for (const k of only) if (!SERVERS.some((s) => s.key === k)) fail(`unknown catalogue key '${k}': expected ${SERVERS.map((s) => s.key).join(', ')}`);
if (!existsSync(path.join(ROOT, 'dist/src/catalog/record.js'))) fail('dist/ is missing: run `npm run build` first');
const { toolDefinitionHash } = await import(path.join(ROOT, 'dist/src/catalog/record.js'));

function fail(message) {
  process.stderr.write(`catalog: ${message}\n`);
  process.exit(2);
}

/** The installed package's version and the command that starts it, or npx with the registry's latest version. */
function locate(server, tmp) {
  const args = server.args?.(tmp) ?? [];
  const shown = server.shownArgs ?? args;
  if (server.npx) {
    const view = spawnSync('npm', ['view', server.package, 'version'], { encoding: 'utf8', cwd: tmp });
    const version = view.stdout.trim();
    if (view.status !== 0 || !/^\d[\w.+-]*$/.test(version)) throw new Error(`npm view ${server.package} version failed: ${(view.stderr || view.stdout).trim().split('\n').pop()}`);
    const spec = `${server.package}@${version}`;
    return { version, command: ['npx', '-y', spec, ...args], shown: ['npx', '-y', spec, ...shown] };
  }
  const dir = path.join(ROOT, 'node_modules', server.package);
  const pkg = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const bin = typeof pkg.bin === 'string' ? pkg.bin : Object.values(pkg.bin ?? {})[0];
  if (!bin) throw new Error(`${server.package} declares no bin`);
  return { version: pkg.version, command: [process.execPath, path.join(dir, bin), ...args], shown: ['npx', '-y', `${server.package}@${pkg.version}`, ...shown] };
}

/** Runs `policylayer scan --format json --no-record` on the command; resolves with its report. */
function scan(command, env, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'scan', '--format', 'json', '--no-record', '--timeout', '180s', '--', ...command], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (c) => (out += c));
    child.stderr.on('data', (c) => (err += c));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`policylayer scan exited ${code}: ${err.trim()}`));
      else resolve(JSON.parse(out));
    });
  });
}

/** The shipped entry for one scan: what `catalog` reads (src/catalog/shipped.ts). */
function entryOf(server, located, report) {
  const s = report.server;
  return {
    format: 1,
    key: server.key,
    package: `${server.package}@${located.version}`,
    regenerate: REGENERATE,
    scannedAt: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
    server: {
      name: s.name,
      title: s.title ?? null,
      version: s.version ?? null,
      displayName: null,
      description: s.description ?? null,
      instructions: s.instructions ?? null,
      trusted: false,
      transport: s.transport,
      target: { command: located.shown },
    },
    classifierVersion: report.classifierVersion,
    tools: report.tools.map((t) => {
      const { recommendation: _r, definition, ...classification } = t;
      return { name: t.tool, definitionHash: toolDefinitionHash(definition), classification, definition };
    }),
  };
}

/** What differs between two entries, scan time aside: a few lines a person can act on. */
function differences(old, next) {
  const out = [];
  const strip = (e) => JSON.stringify({ ...e, scannedAt: undefined, tools: undefined });
  if (strip(old) !== strip(next)) out.push('the server facts, package or format differ');
  const before = new Map(old.tools.map((t) => [t.name, t]));
  const after = new Map(next.tools.map((t) => [t.name, t]));
  for (const [name, t] of after) {
    const o = before.get(name);
    if (!o) out.push(`${name}: new`);
    else if (o.definitionHash !== t.definitionHash) out.push(`${name}: definition changed`);
    else if (JSON.stringify(o.classification) !== JSON.stringify(t.classification)) out.push(`${name}: classified ${o.classification.category}/${o.classification.severity} in the file, now ${t.classification.category}/${t.classification.severity} (or its reasons differ)`);
  }
  for (const name of before.keys()) if (!after.has(name)) out.push(`${name}: no longer listed`);
  if (out.length === 0 && JSON.stringify(old.tools.map((t) => t.name)) !== JSON.stringify(next.tools.map((t) => t.name))) out.push('the tools are listed in another order');
  return out;
}

mkdirSync(OUT, { recursive: true });
let problems = 0;
for (const server of SERVERS.filter((s) => only.length === 0 || only.includes(s.key))) {
  const file = path.join(OUT, `${server.key}.json`);
  const tmp = mkdtempSync(path.join(tmpdir(), `policylayer-catalog-${server.key}-`));
  try {
    let located;
    let report;
    try {
      located = locate(server, tmp);
      report = await scan(located.command, server.env?.(tmp) ?? {}, tmp);
    } catch (err) {
      if (server.npx) {
        process.stderr.write(`${server.key}: not scanned (${err.message}); ${existsSync(file) ? 'the file is left as it is' : 'no file written'}\n`);
        continue;
      }
      throw err;
    }
    // A path of this machine in the recorded text would make the file differ on every run.
    if (JSON.stringify({ ...report.server, target: undefined, tools: report.tools }).includes(tmp)) throw new Error(`${server.key}: the scan mentions the temporary folder ${tmp}; give it a stand-in in SERVERS`);
    const next = entryOf(server, located, report);
    const old = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : undefined;
    const diff = old === undefined ? ['no file yet'] : differences(old, next);
    if (check) {
      if (diff.length === 0) process.stdout.write(`${server.key}: up to date (${next.package}, ${next.tools.length} tool${next.tools.length === 1 ? '' : 's'})\n`);
      else {
        problems++;
        process.stdout.write(`${server.key}: differs from ${path.relative(ROOT, file)}:\n${diff.map((d) => `  ${d}\n`).join('')}`);
      }
    } else if (diff.length === 0) {
      process.stdout.write(`${server.key}: unchanged (${next.package}, ${next.tools.length} tool${next.tools.length === 1 ? '' : 's'})\n`);
    } else {
      writeFileSync(file, JSON.stringify(next, null, 2) + '\n');
      process.stdout.write(`${server.key}: wrote ${path.relative(ROOT, file)} (${next.package}, ${next.tools.length} tool${next.tools.length === 1 ? '' : 's'})${old ? `: ${diff.join('; ')}` : ''}\n`);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
if (check && problems > 0) {
  process.stdout.write(`\n${problems} file${problems === 1 ? '' : 's'} out of date: regenerate with \`${REGENERATE}\`\n`);
  process.exit(1);
}
