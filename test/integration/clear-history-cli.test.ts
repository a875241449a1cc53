import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClearHistoryReport } from '../../src/history/index.js';
import { LOCK_NAME } from '../../src/history/index.js';
import { lockBackendFor } from '../../src/locks/index.js';
import { enterMaintenance, leaveMaintenance } from '../../src/maintenance/index.js';
import type { Stores } from '../../src/stores/index.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { checksums, expectStoresMatch, readState, RETENTION, seedHistory, type SeededHistory } from './clear-history-fixture.js';

// `mgr clear-history` as operators run it: separate processes on the compiled dist/ (npm test
// builds it first), against real stores, killed, racing and refused. "Now" is the real time, so
// the fixture keeps every kernel at least an hour away from the cutoff.

const BIN = path.resolve('bin/mgr.js');

let sb: TestSandbox;
let stores: Stores;

beforeAll(async () => {
  sb = await startTestSandbox();
  stores = await sb.openStores();
});

afterAll(async () => {
  await stores?.close();
  await sb?.stop();
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function mgr(args: string[], onSpawn?: (kill: (sig: NodeJS.Signals) => void) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, '-f', sb.managerToml, ...args], {
      env: { ...process.env, MGR_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    onSpawn?.((sig) => child.kill(sig));
  });
}

const seed = (kernels = 600): Promise<SeededHistory> => seedHistory(stores, { now: new Date(), kernels, boundary: false });

async function kernelCount(): Promise<number> {
  return (await stores.pg.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM kernels')).rows[0]!.n;
}

describe('mgr clear-history (CLI)', () => {
  it('SIGKILLed mid-run: no deleted kernel keeps its stat key, and the next run finishes with totals adding up', async () => {
    const s = await seed(2500);
    const initial = s.before.kernels.size;
    expect(s.expected.doomed.size).toBeGreaterThan(1500);
    let killed = false;
    const first = await mgr(['clear-history', '-r', RETENTION, '--batch-size', '20', '--pause-ms', '30', '--json'], (kill) => {
      // Kill once a few batches have committed, well before the end.
      const poll = setInterval(() => {
        void kernelCount().then((n) => {
          if (!killed && initial - n >= 100) {
            killed = true;
            clearInterval(poll);
            kill('SIGKILL');
          }
        });
      }, 25);
    });
    expect(first.signal).toBe('SIGKILL');
    const mid = await readState(stores);
    const deletedByFirst = initial - mid.kernels.size;
    expect(deletedByFirst).toBeGreaterThanOrEqual(100);
    expect(deletedByFirst).toBeLessThan(s.expected.doomed.size);
    for (const id of s.before.kernels.keys()) {
      if (!mid.kernels.has(id)) {
        expect(s.expected.doomed.has(id)).toBe(true); // only doomed kernels went
        expect(mid.statKeys.has(id)).toBe(false); // and never without their key
      }
    }

    // The killed run's pg_advisory lock went with its connection: the rerun gets it.
    const second = await mgr(['clear-history', '-r', RETENTION, '--wait-lock', '30', '--json']);
    expect(second.code, second.stderr).toBe(0);
    const report = JSON.parse(second.stdout) as ClearHistoryReport;
    expect(deletedByFirst + report.kernelsDeleted).toBe(s.expected.doomed.size);
    await expectStoresMatch(stores, s.expected);
  });

  it('three runs at once: they take turns on the lock, totals add up and nothing is deleted twice', async () => {
    const s = await seed(1500);
    const runs = await Promise.all([0, 1, 2].map(() => mgr(['clear-history', '-r', RETENTION, '--batch-size', '50', '--wait-lock', '60', '--json'])));
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    const reports = runs.map((r) => JSON.parse(r.stdout) as ClearHistoryReport);
    const sum = (f: (r: ClearHistoryReport) => number) => reports.reduce((n, r) => n + f(r), 0);
    expect(sum((r) => r.kernelsDeleted)).toBe(s.expected.doomed.size);
    expect(sum((r) => r.redisKeysDeleted)).toBe(s.expected.redisKeysDeleted);
    expect(sum((r) => r.dependentRows.session_dependencies)).toBe(s.expected.dependentRows.session_dependencies);
    expect(sum((r) => r.dependentRows.vfolder_attachment)).toBe(s.expected.dependentRows.vfolder_attachment);
    expect(reports.filter((r) => r.kernelsDeleted > 0).length).toBe(1); // serialised: the first does it all
    await expectStoresMatch(stores, s.expected);
  });

  it('prints one summary line per store with exact counts', async () => {
    const s = await seed();
    const r = await mgr(['clear-history', '--retention', RETENTION, '--batch-size', '100']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`clear-history: cutoff `);
    expect(r.stdout).toContain(`(retention ${RETENTION} = 90 days)`);
    expect(r.stdout).toMatch(
      new RegExp(
        `postgres: deleted ${s.expected.doomed.size} kernels terminated \\S+ … \\S+, ${s.expected.dependentRows.session_dependencies} session_dependencies rows, ${s.expected.dependentRows.vfolder_attachment} vfolder_attachment rows in \\d+ batches of ≤ 100 \\(longest statement [\\d.]+ ms: (select batch|delete \\w+), longest batch`,
      ),
    );
    expect(r.stdout).toMatch(new RegExp(`redis: unlinked ${s.expected.redisKeysDeleted} stat keys \\(DB 0\\); asked BGSAVE`));
    expect(r.stdout).toContain('postgres: VACUUM (ANALYZE) kernels, session_dependencies, vfolder_attachment');
    await expectStoresMatch(stores, s.expected);
  });

  it('--dry-run prints what would go and writes nothing', async () => {
    const s = await seed();
    const before = await checksums(stores);
    const text = await mgr(['clear-history', '-r', RETENTION, '--dry-run']);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('dry run: nothing was written');
    expect(text.stdout).toContain(`would delete ${s.expected.doomed.size} kernels`);
    expect(text.stdout).toContain(`would unlink ${s.expected.redisKeysDeleted} stat keys`);
    const json = await mgr(['clear-history', '-r', RETENTION, '--dry-run', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ dryRun: true, kernelsDeleted: s.expected.doomed.size, dependentRows: s.expected.dependentRows });
    expect(await checksums(stores)).toEqual(before);
  });

  it('refuses with exit code 5 while maintenance mode is on', async () => {
    await seed(200);
    const before = await checksums(stores);
    await enterMaintenance(stores.etcd, { reason: 'upgrade to 22.03', by: 'cli test' });
    try {
      const r = await mgr(['clear-history', '-r', RETENTION]);
      expect(r.code).toBe(5);
      expect(r.stderr).toContain('clear-history refused: maintenance mode is on (upgrade to 22.03, by cli test');
    } finally {
      await leaveMaintenance(stores.etcd);
    }
    expect(await checksums(stores)).toEqual(before);
  });

  it('exits 6 naming the holder when another run holds the lock past --wait-lock', async () => {
    await seed(200);
    const before = await checksums(stores);
    const held = await lockBackendFor(stores).acquire({ name: LOCK_NAME, waitMs: 0, purpose: 'a long clear-history' });
    try {
      const r = await mgr(['clear-history', '-r', RETENTION, '--wait-lock', '0.5']);
      expect(r.code).toBe(6);
      expect(r.stderr).toContain(`lock "${LOCK_NAME}"`);
      expect(r.stderr).toContain(`pid ${process.pid}`);
      expect(r.stderr).toContain('a long clear-history');
      const json = await mgr(['clear-history', '-r', RETENTION, '--json']);
      expect(json.code).toBe(6);
      expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { code: 'lockBusy', exitCode: 6, holder: { pid: process.pid } } });
    } finally {
      await held.release();
    }
    expect(await checksums(stores)).toEqual(before);
  });

  it('rejects a bad retention or flag with exit code 2', async () => {
    for (const args of [['-r', '1.5yr'], ['-r', '10ms'], ['--batch-size', '0'], ['--pause-ms', '-1']]) {
      const r = await mgr(['clear-history', ...args]);
      expect(r.code, args.join(' ')).toBe(2);
    }
    const r = await mgr(['clear-history', '-r', '-3d']);
    expect(r.stderr).toMatch(/negative|invalid/);
  });
});
