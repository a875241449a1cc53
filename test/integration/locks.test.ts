import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import type { Stores } from '../../src/stores/index.js';
import { pgClientConfig } from '../../src/stores/pg.js';
import { LockBusyError, MgrError } from '../../src/errors.js';
import { lockBackendFor, pgLockKey, withLock, type HeldLock, type LockBackend } from '../../src/locks/index.js';

const CONTENDER = fileURLToPath(new URL('../helpers/lock-contender.mjs', import.meta.url));
const MGR_BIN = fileURLToPath(new URL('../../bin/mgr.js', import.meta.url));
const DIST_LOCKS = fileURLToPath(new URL('../../dist/src/locks/index.js', import.meta.url));
const BACKENDS = ['filelock', 'etcd', 'pg_advisory'] as const;
/** Lease TTL for the etcd tests: short enough to wait out, above etcd's own minimum (≈2 s). */
const ETCD_TTL_MS = 3_000;

const nowMs = () => Number(process.hrtime.bigint() / 1_000_000n);

interface Hold {
  pid: number;
  acquired: bigint;
  released: bigint;
}

describe('distributed locks on real stores, contended by separate processes', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let tmp: string;
  const children = new Set<ChildProcess>();

  /** Starts a contender process (compiled dist/) with its arguments as JSON. */
  function contender(args: Record<string, unknown>): ChildProcess {
    const child = spawn(process.execPath, [CONTENDER, JSON.stringify({ toml: sb.managerToml, ...args })], { stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    child.once('exit', () => children.delete(child));
    return child;
  }

  function exited(child: ChildProcess): Promise<number | null> {
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
    return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  }

  /** Starts a process that takes the lock and holds it; resolves once it holds it. */
  async function holder(kind: string, name: string): Promise<ChildProcess> {
    const child = contender({ kind, name, mode: 'hold', ttlMs: ETCD_TTL_MS });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        if (out.includes('"event":"acquired"')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`holder exited with ${code} before acquiring: ${err}`)));
    });
    return child;
  }

  beforeAll(async () => {
    if (!existsSync(DIST_LOCKS)) throw new Error('dist/ is missing: run `npx tsc -p .` (npm test does) before these tests');
    sb = await startTestSandbox();
    stores = await sb.openStores();
    tmp = await mkdtemp(path.join(os.tmpdir(), 'mgr-locks-'));
  });
  afterEach(async () => {
    for (const c of children) c.kill('SIGKILL');
    await Promise.all([...children].map(exited));
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  describe.each(BACKENDS)('%s', (kind) => {
    it('3 processes × 6 holds: no two hold intervals overlap (measured on the monotonic clock)', async () => {
      const logFile = path.join(tmp, `${kind}-holds.jsonl`);
      // All start contending at one instant, so without exclusion their holds would overlap.
      const startAt = Date.now() + 1_500;
      const procs = Array.from({ length: 3 }, () =>
        contender({ kind, name: `contended-${kind}`, mode: 'contend', iterations: 6, holdMs: 60, waitMs: 60_000, logFile, startAt }),
      );
      const codes = await Promise.all(procs.map(exited));
      expect(codes).toEqual([0, 0, 0]);
      const holds: Hold[] = (await readFile(logFile, 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { pid: number; acquired: string; released: string })
        .map((h) => ({ pid: h.pid, acquired: BigInt(h.acquired), released: BigInt(h.released) }))
        .sort((a, b) => (a.acquired < b.acquired ? -1 : 1));
      expect(holds).toHaveLength(18);
      expect(new Set(holds.map((h) => h.pid)).size).toBe(3);
      const gapsMs: number[] = [];
      for (let i = 1; i < holds.length; i++) {
        const prev = holds[i - 1]!;
        const next = holds[i]!;
        expect(next.acquired > prev.released, `hold ${i} (pid ${next.pid}) began before hold ${i - 1} (pid ${prev.pid}) ended`).toBe(true);
        gapsMs.push(Number(next.acquired - prev.released) / 1e6);
      }
      gapsMs.sort((a, b) => a - b);
      console.info(`${kind}: 18 holds, hand-over gap median ${gapsMs[8]!.toFixed(1)} ms, max ${gapsMs.at(-1)!.toFixed(1)} ms`);
    });

    it('SIGKILL of the holder frees the lock (filelock, pg_advisory: at once; etcd: within the lease TTL)', async () => {
      const name = `killed-${kind}`;
      const child = await holder(kind, name);
      const backend = lockBackendFor(stores, kind);
      let got: HeldLock | undefined;
      const waiting = backend.acquire({ name, waitMs: 30_000, ttlMs: ETCD_TTL_MS }).then((h) => (got = h));
      await new Promise((r) => setTimeout(r, 300));
      expect(got, 'acquired while the holder was alive').toBeUndefined();
      const killedAt = nowMs();
      child.kill('SIGKILL');
      await waiting;
      const freedMs = nowMs() - killedAt;
      console.info(`${kind}: lock free ${freedMs} ms after SIGKILL of its holder`);
      if (kind === 'etcd') expect(freedMs).toBeLessThanOrEqual(ETCD_TTL_MS + 1_500);
      else expect(freedMs).toBeLessThan(1_500);
      expect(got!.holder.pid).toBe(process.pid);
      await got!.release();
      expect(await backend.holder(name)).toBeUndefined();
    });

    it('a wait limit of 500 ms on a held lock throws LockBusyError after ≈500 ms, naming the holder', async () => {
      const name = `busy-${kind}`;
      const child = await holder(kind, name);
      const backend = lockBackendFor(stores, kind);
      const started = nowMs();
      const err = await backend.acquire({ name, waitMs: 500 }).then(
        () => undefined,
        (e: unknown) => e,
      );
      const waited = nowMs() - started;
      expect(err).toBeInstanceOf(LockBusyError);
      expect((err as LockBusyError).exitCode).toBe(6);
      expect((err as Error).message).toContain(`pid ${child.pid}`);
      expect((err as Error).message).toContain(`contender ${child.pid}`);
      expect(waited).toBeGreaterThanOrEqual(450);
      expect(waited).toBeLessThan(2_000);
      expect((await backend.holder(name))?.pid).toBe(child.pid);
      // waitMs 0 tries once.
      const once = nowMs();
      await expect(backend.acquire({ name, waitMs: 0 })).rejects.toBeInstanceOf(LockBusyError);
      expect(nowMs() - once).toBeLessThan(500);
    });
  });

  it('etcd: revoking the lease from outside aborts held.lost, and the lock is free again', async () => {
    const backend = lockBackendFor(stores, 'etcd');
    const held = await backend.acquire({ name: 'revoked', waitMs: 0, ttlMs: ETCD_TTL_MS });
    const key = stores.etcd.abs('mgr/locks/revoked');
    const kv = (await stores.etcd.client.get(key).exec()).kvs[0]!;
    expect(JSON.parse(kv.value.toString()).pid).toBe(process.pid);
    const outsider = new Etcd3({ hosts: sb.etcd.endpoint });
    try {
      const revokedAt = nowMs();
      await outsider.leaseClient.leaseRevoke({ ID: kv.lease });
      await new Promise<void>((resolve) => held.lost.addEventListener('abort', () => resolve(), { once: true }));
      const noticedMs = nowMs() - revokedAt;
      console.info(`etcd: held.lost aborted ${noticedMs} ms after an outside lease revoke`);
      expect(noticedMs).toBeLessThanOrEqual(ETCD_TTL_MS);
      expect(held.lost.reason).toBeInstanceOf(MgrError);
      expect((held.lost.reason as Error).message).toMatch(/was lost/);
      const again = await backend.acquire({ name: 'revoked', waitMs: 0 });
      await again.release();
      await held.release();
    } finally {
      outsider.close();
    }
  });

  it('pg_advisory: a holder that is not mgr is named by its PostgreSQL session', async () => {
    const { classid, objid } = pgLockKey('foreign');
    const other = new pg.Client({ ...pgClientConfig(sb.config.db), application_name: 'some-other-tool' });
    await other.connect();
    try {
      await other.query('SELECT pg_advisory_lock($1::int4, $2::int4)', [classid, objid]);
      const backendPid = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const err = await lockBackendFor(stores, 'pg_advisory').acquire({ name: 'foreign', waitMs: 100 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LockBusyError);
      expect((err as Error).message).toContain(`pid ${backendPid}`);
      expect((err as Error).message).toContain('some-other-tool');
    } finally {
      await other.end();
    }
  });

  it('pg_advisory: mgr keys never take a Backend.AI LockID (single-bigint keys stay free)', async () => {
    const held = await lockBackendFor(stores, 'pg_advisory').acquire({ name: 'mgr.upgrade', waitMs: 0 });
    try {
      const r = await stores.pg.withClient((c) =>
        c.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"),
      );
      expect(r.rows[0]!.n).toBe(0);
      const managerIds = [42, 91, 92, 191, 192, 195, 196];
      const free = await stores.pg.withClient(async (c) => {
        const got = await c.query<{ ok: boolean }>('SELECT bool_and(pg_try_advisory_lock(id::bigint)) AS ok FROM unnest($1::int[]) AS id', [managerIds]);
        await c.query('SELECT pg_advisory_unlock_all()');
        return got.rows[0]!.ok;
      });
      expect(free).toBe(true);
    } finally {
      await held.release();
    }
  });

  it('filelock refuses when etcd lists more than one manager (single node only)', async () => {
    await stores.etcd.put('nodes/manager/i-node-a', 'up');
    await stores.etcd.put('nodes/manager/i-node-b', 'up');
    try {
      const err = await lockBackendFor(stores, 'filelock').acquire({ name: 'multi', waitMs: 0 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MgrError);
      expect((err as MgrError).code).toBe('refused');
      expect((err as Error).message).toMatch(/single-node only.*2 managers: i-node-a, i-node-b/);
      expect((err as MgrError).hint).toMatch(/"etcd" or "pg_advisory"/);
    } finally {
      await stores.etcd.deletePrefix('nodes/manager/');
    }
    const held = await lockBackendFor(stores, 'filelock').acquire({ name: 'multi', waitMs: 0 });
    expect(existsSync(path.join(sb.config.manager.ipcBasePath, `${sb.config.manager.id}.multi.lock`))).toBe(true);
    await held.release();
  });

  it('`mgr lock status --json` names the holder of a held lock and reports a free one', async () => {
    const child = await holder('etcd', 'mgr.status-probe');
    const { stdout } = await promisify(execFile)(process.execPath, [MGR_BIN, '-f', sb.managerToml, 'lock', 'status', 'mgr.status-probe', 'mgr.free', '--backend', 'etcd', '--json']);
    const report = JSON.parse(stdout) as { backend: string; locks: { name: string; held: boolean; holder: { pid: number } | null }[] };
    expect(report.backend).toBe('etcd');
    expect(report.locks).toEqual([
      { name: 'mgr.status-probe', held: true, holder: expect.objectContaining({ pid: child.pid, purpose: `contender ${child.pid}` }) },
      { name: 'mgr.free', held: false, holder: null },
    ]);
  });

  it('the kind defaults to manager.toml, then to pg_advisory; redlock and unknown kinds are refused', () => {
    expect(stores.config.manager.distributedLock).toBeUndefined();
    expect(lockBackendFor(stores).kind).toBe('pg_advisory');
    const withEtcd = { ...stores, config: { ...stores.config, manager: { ...stores.config.manager, distributedLock: 'etcd' as const } } };
    expect(lockBackendFor(withEtcd).kind).toBe('etcd');
    expect(() => lockBackendFor(stores, 'redlock')).toThrow(/"redlock" is not supported in 22\.03.*"filelock", "pg_advisory", "etcd"/);
    expect(() => lockBackendFor(stores, 'zookeeper')).toThrow(/unknown lock backend "zookeeper"; allowed: "filelock", "pg_advisory", "etcd"/);
  });

  it('withLock releases when fn throws, and a failed release is logged without hiding the error', async () => {
    const backend = lockBackendFor(stores, 'pg_advisory');
    await expect(withLock(backend, { name: 'guarded', waitMs: 0 }, async () => Promise.reject(new Error('work failed')))).rejects.toThrow('work failed');
    expect(await backend.holder('guarded')).toBeUndefined();
    expect(await withLock(backend, { name: 'guarded', waitMs: 0 }, async (held) => held.holder.pid)).toBe(process.pid);

    const lines: string[] = [];
    const log = pino({ level: 'warn' }, new Writable({ write: (chunk, _enc, cb) => (lines.push(String(chunk)), cb()) }));
    const failingRelease: LockBackend = {
      kind: 'etcd',
      holder: async () => undefined,
      acquire: async (req) => {
        const held = await backend.acquire(req);
        return { ...held, release: async () => (await held.release(), Promise.reject(new Error('release failed'))) };
      },
    };
    await expect(withLock(failingRelease, { name: 'guarded', waitMs: 0 }, async () => Promise.reject(new Error('work failed'))), ).rejects.toThrow('work failed');
    expect(await withLock(failingRelease, { name: 'guarded', waitMs: 0 }, async () => 'done', log)).toBe('done');
    expect(lines.join('')).toContain('release failed');
  });
});
