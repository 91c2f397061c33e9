import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { groupAndSession } from '../../../test/helpers/processes.js';
import { findPerl, spawnServer, systemPerl, type SpawnServerOptions } from './spawn-group.js';

/** Runs `command`, which prints its own pid and waits for stdin to close; resolves with the pid and how it ended. */
async function run(command: string, args: string[], opts: Partial<SpawnServerOptions> = {}) {
  const { child, started } = spawnServer(command, args, { env: process.env, ...opts });
  const failure = await started;
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (t: string) => (out += t));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, failure, out: () => out, exited };
}

const PRINTS_PID_AND_WAITS = ['-e', "process.stdout.write(String(process.pid) + '\\n'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0));"];

async function pidPrinted(r: Awaited<ReturnType<typeof run>>): Promise<number> {
  for (let i = 0; i < 200 && !r.out().includes('\n'); i++) await new Promise((res) => setTimeout(res, 10));
  return Number(r.out().trim());
}

const onLinux = { skip: process.platform !== 'linux' ? 'reads /proc' : false };

describe('starting a stdio server in a process group of its own', () => {
  it('finds a perl on PATH on this machine, which the rest of these tests rely on', () => {
    assert.ok(systemPerl(), 'perl is on PATH');
  });

  it("runs the command as the process it spawned, in a group of its own, in the gateway's session", onLinux, async () => {
    const r = await run(process.execPath, PRINTS_PID_AND_WAITS);
    assert.equal(r.failure, undefined);
    const pid = await pidPrinted(r);
    assert.equal(pid, r.child.pid, 'the command replaced the launcher: same pid, no process in between');
    const { pgid, sid } = groupAndSession(pid);
    assert.equal(pgid, pid, 'it leads a process group of its own');
    assert.equal(sid, groupAndSession(process.pid).sid, "it stays in the gateway's session, as a server a client starts would");
    r.child.stdin!.end();
    assert.equal(await r.exited, 0);
  });

  it('gives the command its arguments, environment and working folder untouched, one that starts with a dash included', onLinux, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pl-spawn-'));
    try {
      const script = "process.stdout.write(JSON.stringify({ argv: process.argv.slice(1), cwd: process.cwd(), v: process.env.PL_SPAWN_TEST }) + '\\n')";
      const r = await run(process.execPath, ['-e', script, '--', '-x', 'a b', ''], { cwd: dir, env: { ...process.env, PL_SPAWN_TEST: 'yes' } });
      assert.equal(await r.exited, 0);
      assert.deepEqual(JSON.parse(r.out()), { argv: ['-x', 'a b', ''], cwd: dir, v: 'yes' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports a command that does not exist as spawn() does, with ENOENT, before the launcher exits', async () => {
    const r = await run('/nonexistent/policylayer-no-such-server', ['--stdio']);
    assert.ok(r.failure);
    assert.equal(r.failure.message, 'spawn /nonexistent/policylayer-no-such-server ENOENT');
    assert.equal((r.failure as NodeJS.ErrnoException).code, 'ENOENT');
    assert.equal((r.failure as NodeJS.ErrnoException).syscall, 'spawn /nonexistent/policylayer-no-such-server');
  });

  it('looks a bare command name up on PATH, and reports one that is nowhere with ENOENT', async () => {
    const r = await run('policylayer-no-such-command', []);
    assert.equal((r.failure as NodeJS.ErrnoException | undefined)?.code, 'ENOENT');
    const found = await run('node', ['-e', "process.stdout.write('ran\\n')"]);
    assert.equal(found.failure, undefined);
    assert.equal(await found.exited, 0);
    assert.equal(found.out(), 'ran\n');
  });

  it('reports a file that may not be executed with EACCES', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pl-spawn-'));
    try {
      const file = path.join(dir, 'server.sh');
      writeFileSync(file, '#!/bin/sh\necho hi\n');
      chmodSync(file, 0o644);
      const r = await run(file, []);
      assert.equal((r.failure as NodeJS.ErrnoException | undefined)?.code, 'EACCES');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('fails with an error event, as spawn() does, when the working folder does not exist', async () => {
    const { child, started } = spawnServer(process.execPath, ['-e', ''], { env: process.env, cwd: '/nonexistent/policylayer-no-such-dir' });
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => child.on('error', resolve));
    assert.equal(err.code, 'ENOENT');
    assert.equal(await started, undefined, 'no second report of the same failure');
  });

  it('falls back to a session of its own, still its own group, where there is no perl', onLinux, async () => {
    const r = await run(process.execPath, PRINTS_PID_AND_WAITS, { perl: null });
    const pid = await pidPrinted(r);
    assert.deepEqual(groupAndSession(pid), { pgid: pid, sid: pid });
    r.child.stdin!.end();
    await r.exited;
  });

  it('passes over a perl on PATH that does not run, and relative folders, for the next one that does', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'pl-spawn-'));
    try {
      const broken = path.join(dir, 'perl');
      writeFileSync(broken, '#!/bin/sh\nexit 1\n');
      chmodSync(broken, 0o755);
      const real = systemPerl()!;
      assert.equal(findPerl([dir, 'relative/bin', path.dirname(real)].join(path.delimiter)), real);
      assert.equal(findPerl(dir), null);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('does not use perl when PERL5OPT would make it do more than start the command', onLinux, async () => {
    const r = await run(process.execPath, PRINTS_PID_AND_WAITS, { env: { ...process.env, PERL5OPT: '-d' } });
    const pid = await pidPrinted(r);
    assert.deepEqual(groupAndSession(pid), { pgid: pid, sid: pid });
    r.child.stdin!.end();
    await r.exited;
  });
});
