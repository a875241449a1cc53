import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultUpgradeOptions, type StepContext, type UpgradeOptions } from '../../src/engine/types.js';
import { clearHistoryScheduleStep, cronFileText, LOCK_NAME, runScheduler, type ClearHistoryReport } from '../../src/history/index.js';
import { lockBackendFor } from '../../src/locks/index.js';
import { silentLogger } from '../../src/log.js';
import type { Stores } from '../../src/stores/index.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { expectStoresMatch, RETENTION, seedHistory } from './clear-history-fixture.js';

// The schedule: the in-process scheduler on a per-second cron expression against real stores,
// `mgr scheduler` stopped by SIGTERM, the cron file commands, and the 22.03 step.

const BIN = path.resolve('bin/mgr.js');
const EVERY_SECOND = '* * * * * *';

let sb: TestSandbox;
let stores: Stores;
let dir: string;

beforeAll(async () => {
  sb = await startTestSandbox();
  stores = await sb.openStores();
  dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-cron-test-'));
});

afterAll(async () => {
  await stores?.close();
  await sb?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** A pino logger whose JSON lines land in an array. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines, events: () => lines.map((l) => l.event) };
}

const seed = (kernels: number) => seedHistory(stores, { now: new Date(), kernels, boundary: false });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('runScheduler', () => {
  it('runs on every tick, never two runs at once, and stops a run in progress after its batch, releasing the lock', async () => {
    const s = await seed(600);
    const { log, events } = capturedLogger();
    const ac = new AbortController();
    const reports: ClearHistoryReport[] = [];
    // Slow runs (5 kernels per batch, 100 ms apart) outlast several one-second ticks.
    const done = runScheduler({
      at: EVERY_SECOND,
      retention: RETENTION,
      openStores: () => sb.openStores(),
      signal: ac.signal,
      log,
      run: { batchSize: 5, pauseMs: 100 },
      onRun: (r) => r.report && reports.push(r.report),
    });
    await sleep(3_300);
    const stoppedAt = Date.now();
    ac.abort();
    const summary = await done;
    expect(Date.now() - stoppedAt).toBeLessThan(2_000);
    expect(summary.runs).toBe(1);
    expect(summary.skipped).toBeGreaterThanOrEqual(1);
    expect(summary.failures).toBe(0);
    expect(reports).toHaveLength(1);
    expect(reports[0]!.interrupted).toBe(true);
    expect(reports[0]!.kernelsDeleted).toBeGreaterThan(0);
    expect(reports[0]!.kernelsDeleted).toBeLessThan(s.expected.doomed.size);
    expect(events()).toContain('clear-history.tick.skipped');
    expect(await lockBackendFor(stores).holder(LOCK_NAME)).toBeUndefined();

    // Fast runs: the first finishes the job, the next ticks find nothing.
    const fast = capturedLogger();
    const ac2 = new AbortController();
    const reports2: ClearHistoryReport[] = [];
    const done2 = runScheduler({
      at: EVERY_SECOND,
      retention: RETENTION,
      openStores: () => sb.openStores(),
      signal: ac2.signal,
      log: fast.log,
      onRun: (r) => r.report && reports2.push(r.report),
    });
    await sleep(3_200);
    ac2.abort();
    const summary2 = await done2;
    expect(summary2.runs).toBeGreaterThanOrEqual(2);
    expect(summary2.failures).toBe(0);
    expect(reports[0]!.kernelsDeleted + reports2[0]!.kernelsDeleted).toBe(s.expected.doomed.size);
    for (const r of reports2.slice(1)) expect(r.kernelsDeleted).toBe(0);
    expect(fast.events().filter((e) => e === 'clear-history.run.done')).toHaveLength(summary2.runs);
    await expectStoresMatch(stores, s.expected);
  });

  it('a run waiting for a lock held elsewhere stops at once when the scheduler stops, without counting a failure', async () => {
    await seed(100);
    const held = await lockBackendFor(stores).acquire({ name: LOCK_NAME, waitMs: 0, purpose: 'manual clear-history' });
    try {
      const { log, events } = capturedLogger();
      const ac = new AbortController();
      const done = runScheduler({ at: EVERY_SECOND, retention: RETENTION, openStores: () => sb.openStores(), signal: ac.signal, log, run: { waitLockMs: 600_000 } });
      await sleep(2_500);
      const t = Date.now();
      ac.abort();
      const summary = await done;
      expect(Date.now() - t).toBeLessThan(2_000);
      expect(summary).toMatchObject({ runs: 1, failures: 0, kernelsDeleted: 0 });
      expect(summary.skipped).toBeGreaterThanOrEqual(1); // the ticks while it waited
      expect(events()).toContain('clear-history.run.stopped');
    } finally {
      await held.release();
    }
  });

  it('refuses a bad expression or retention before starting', async () => {
    const base = { openStores: () => sb.openStores(), signal: new AbortController().signal, log: silentLogger };
    await expect(runScheduler({ ...base, at: '* * * *', retention: '30d' })).rejects.toMatchObject({ code: 'usage' });
    await expect(runScheduler({ ...base, at: EVERY_SECOND, retention: '30x' })).rejects.toMatchObject({ code: 'usage' });
  });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function mgr(args: string[], opts: { stopAfterMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, '-f', sb.managerToml, ...args], { env: { ...process.env, MGR_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    if (opts.stopAfterMs) setTimeout(() => child.kill('SIGTERM'), opts.stopAfterMs);
  });
}

describe('mgr scheduler', () => {
  it('runs the job every second and exits 0 on SIGTERM, logging each run as JSON on stderr', async () => {
    const s = await seed(400);
    const r = await mgr(['scheduler', '--at', EVERY_SECOND, '-r', RETENTION], { stopAfterMs: 3_500 });
    expect(r.code, r.stderr).toBe(0);
    const events = r.stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { event?: string; kernelsDeleted?: number });
    const runs = events.filter((e) => e.event === 'clear-history.run.done');
    expect(runs.length).toBeGreaterThanOrEqual(2);
    expect(runs.reduce((n, e) => n + (e.kernelsDeleted ?? 0), 0)).toBe(s.expected.doomed.size);
    expect(events.at(-1)?.event).toBe('scheduler.stop');
    await expectStoresMatch(stores, s.expected);
  });
});

describe('mgr clear-history schedule', () => {
  it('install writes the cron file, status shows it, a second install changes nothing, remove deletes it', async () => {
    const file = path.join(dir, 'mgr-clear-history');
    const install = await mgr(['clear-history', 'schedule', 'install', '-r', '30d', '--at', '15 3 * * *', '--cron-file', file, '--log-file', '/tmp/ch.log']);
    expect(install.code, install.stderr).toBe(0);
    const text = await readFile(file, 'utf8');
    expect(text).toContain(`15 3 * * * root ${process.execPath} ${BIN} -f ${sb.managerToml} clear-history -r 30d --wait-lock 600 >> /tmp/ch.log 2>&1\n`);
    expect((await stat(file)).mode & 0o777).toBe(0o644);

    const status = await mgr(['clear-history', 'schedule', 'status', '--cron-file', file, '--json']);
    expect(JSON.parse(status.stdout)).toMatchObject({ installed: true, writtenByMgr: true, entry: { at: '15 3 * * *', user: 'root', retention: '30d', configPath: sb.managerToml } });

    const again = await mgr(['clear-history', 'schedule', 'install', '-r', '30d', '--at', '15 3 * * *', '--cron-file', file, '--log-file', '/tmp/ch.log']);
    expect(again.stdout).toContain('already installed');

    const bad = await mgr(['clear-history', 'schedule', 'install', '--at', '* * * * * *', '--cron-file', file]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('invalid cron expression');
    expect(await readFile(file, 'utf8')).toBe(text);

    const printed = await mgr(['clear-history', 'schedule', 'install', '--print', '-r', '7d']);
    expect(printed.stdout.trim()).toBe(`0 4 * * * ${process.execPath} ${BIN} -f ${sb.managerToml} clear-history -r 7d --wait-lock 600 >> /var/log/mgr-clear-history.log 2>&1`);

    expect((await mgr(['clear-history', 'schedule', 'remove', '--cron-file', file])).stdout).toContain(`removed ${file}`);
    expect((await mgr(['clear-history', 'schedule', 'status', '--cron-file', file])).stdout).toContain('not installed');
  });

  it('remove leaves a file mgr did not write (exit 5)', async () => {
    const file = path.join(dir, 'someone-elses');
    await writeFile(file, '0 1 * * * root /usr/local/bin/backup\n');
    const r = await mgr(['clear-history', 'schedule', 'remove', '--cron-file', file]);
    expect(r.code).toBe(5);
    expect(await readFile(file, 'utf8')).toBe('0 1 * * * root /usr/local/bin/backup\n');
  });
});

describe('clearHistoryScheduleStep (22.03 module, last config step)', () => {
  const options = (o: Partial<UpgradeOptions>): UpgradeOptions =>
    defaultUpgradeOptions({ cronFile: path.join(dir, 'step-cron'), managerTomlPath: sb.managerToml, mgrCommand: '/usr/bin/node /opt/mgr/bin/mgr.js', ...o });
  const ctx = (o: Partial<UpgradeOptions> = {}): StepContext => ({
    stores,
    log: silentLogger,
    options: options(o),
    signal: new AbortController().signal,
    progress: () => undefined,
    checkpoint: { get: async () => undefined, set: async () => undefined },
    release: '22.03',
  });

  it('installs once, is idempotent, verifies, and is skipped with a how-to under --no-schedule', async () => {
    const step = clearHistoryScheduleStep();
    const file = options({}).cronFile!;
    expect(await step.plan(ctx())).toEqual([expect.objectContaining({ store: 'cron', action: `create ${file} (mode 0644)` })]);
    const first = await step.apply(ctx());
    expect(first.counts).toEqual({ filesWritten: 1 });
    await step.verify(ctx());
    expect(await readFile(file, 'utf8')).toBe(
      cronFileText({ at: '0 4 * * *', retention: '30d', mgrCommand: '/usr/bin/node /opt/mgr/bin/mgr.js', configPath: sb.managerToml, logFile: '/var/log/mgr-clear-history.log' }),
    );
    const mtime = (await stat(file)).mtimeMs;
    const second = await step.apply(ctx());
    expect(second.counts).toEqual({ filesWritten: 0 });
    expect(second.summary).toContain('already installed');
    expect((await stat(file)).mtimeMs).toBe(mtime);
    expect((await step.plan(ctx()))[0]!.action).toContain('already installed');

    const skipped = await step.apply(ctx({ noSchedule: true, cronFile: path.join(dir, 'never') }));
    expect(skipped.skipped).toBe(true);
    expect(skipped.summary).toContain("mgr clear-history schedule install -r 30d --at '0 4 * * *'");
    await expect(stat(path.join(dir, 'never'))).rejects.toMatchObject({ code: 'ENOENT' });

    await writeFile(file, (await readFile(file, 'utf8')).replace('-r 30d', '-r 1d'));
    await expect(step.verify(ctx())).rejects.toMatchObject({ code: 'integrity' });
  });
});
