import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, TEST_SANDBOX_PREFIX, type TestSandbox } from '../helpers/sandbox.js';
import { etcdChecksum, pgChecksums, redisChecksums } from '../helpers/checksums.js';
import type { Stores } from '../../src/stores/index.js';
import { seedInstallation, resetInstallation } from '../../src/sandbox/seed.js';
import { RESTORE_STATE_FILE } from '../../src/backup/index.js';

// Runs the compiled CLI (dist/): `npm test` builds it first; while developing run `npx tsc -p .`.
const MGR = path.resolve('bin/mgr.js');

/** Enough Redis data that the Redis part of a restore lasts long enough to be killed in. */
const BULK_KEYS = 60_000;

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function mgr(args: string[], opts: { onSpawn?: (child: ChildProcess) => void } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MGR, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MGR_LOG_LEVEL: 'warn' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    opts.onSpawn?.(child);
  });
}

async function sums(stores: Stores) {
  return {
    pg: await stores.pg.withClient(pgChecksums),
    etcd: await etcdChecksum(stores.etcd),
    redis: await redisChecksums(stores.redis, { ttl: 'presence' }),
  };
}

describe('mgr backup CLI', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let work: string;
  let toml: string;
  let bundle: string;
  let before: Awaited<ReturnType<typeof sums>>;

  beforeAll(async () => {
    if (!existsSync(path.resolve('dist/src/cli/backup.js'))) throw new Error('dist/ is not built: run `npx tsc -p .` (npm test does)');
    sb = await startTestSandbox();
    stores = await sb.openStores();
    toml = sb.managerToml;
    work = await mkdtemp(TEST_SANDBOX_PREFIX + 'backup-cli-');
    await seedInstallation(stores, { kernels: 200, images: 10, keypairs: 5, agents: 2 });
    const image = await stores.redis.db(3);
    const value = 'x'.repeat(200);
    for (let i = 0; i < BULK_KEYS; i += 5_000) {
      const p = image.pipeline();
      for (let j = i; j < i + 5_000; j++) p.set(`bulk.${j}`, value);
      await p.exec();
    }
    before = await sums(stores);
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('create, verify and list print JSON a script can read', async () => {
    const created = await mgr(['-f', toml, 'backup', 'create', '--out', path.join(work, 'bundles'), '--json']);
    expect(created.stderr).toBe('');
    expect(created.code).toBe(0);
    const m = JSON.parse(created.stdout);
    expect(m).toMatchObject({ ok: true, release: { name: '21.03' }, consistency: { maintenance: 'entered', clearHistoryLock: 'held' } });
    expect(m.redis.dbs.find((d: { db: number }) => d.db === 3).keys).toBeGreaterThanOrEqual(BULK_KEYS);
    bundle = m.path;

    const verified = await mgr(['backup', 'verify', bundle, '--json']);
    expect(verified.code).toBe(0);
    expect(JSON.parse(verified.stdout)).toMatchObject({ ok: true, problems: [] });

    const listed = await mgr(['backup', 'list', path.join(work, 'bundles'), '--json']);
    expect(listed.code).toBe(0);
    expect(JSON.parse(listed.stdout).bundles).toEqual([expect.objectContaining({ path: bundle, release: '21.03', finished: true, verify: { ok: true, problems: [] } })]);
  });

  it('refuses without --yes when stdin is not a terminal (exit 2), and non-empty stores without --force (exit 5)', async () => {
    const noYes = await mgr(['-f', toml, 'backup', 'restore', bundle, '--force']);
    expect(noYes.code).toBe(2);
    expect(noYes.stderr).toMatch(/pass --yes/);
    const notEmpty = await mgr(['-f', toml, 'backup', 'restore', bundle, '--yes', '--json']);
    expect(notEmpty.code).toBe(5);
    expect(JSON.parse(notEmpty.stdout).error.message).toMatch(/refusing to restore into non-empty stores/);
    const dry = await mgr(['-f', toml, 'backup', 'restore', bundle, '--force', '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toMatch(/dry run: would restore/);
    expect(existsSync(path.join(bundle, RESTORE_STATE_FILE))).toBe(false);
    expect(await sums(stores)).toEqual(before);
  });

  it('a restore SIGKILLed during its Redis part completes when run again', async () => {
    await resetInstallation(stores);
    // mgr finds Redis through etcd: an emptied target needs the address before a restore
    await stores.etcd.put('config/redis/addr', `127.0.0.1:${sb.redis.port}`);
    const stateFile = path.join(bundle, RESTORE_STATE_FILE);
    let killedIn: unknown;
    const run = await mgr(['-f', toml, 'backup', 'restore', bundle, '--yes'], {
      onSpawn: (child) => {
        const poll = setInterval(() => {
          readFile(stateFile, 'utf8')
            .then((text) => {
              const state = JSON.parse(text);
              if (state.parts.redis === 'running' && killedIn === undefined) {
                killedIn = state.parts;
                child.kill('SIGKILL');
                clearInterval(poll);
              }
            })
            .catch(() => undefined); // not written yet, or caught mid-rename
        }, 2);
        child.on('close', () => clearInterval(poll));
      },
    });
    expect(run.signal).toBe('SIGKILL');
    expect(killedIn).toEqual({ etcd: 'done', postgres: 'done', redis: 'running' });
    const image = await stores.redis.db(3);
    expect(await image.dbsize()).toBeLessThan(BULK_KEYS); // it really stopped part-way

    const again = await mgr(['-f', toml, 'backup', 'restore', bundle, '--yes', '--json']);
    expect(again.code).toBe(0);
    const report = JSON.parse(again.stdout);
    expect(report.resumed).toBe(true);
    expect(report.parts.map((p: { status: string }) => p.status)).toEqual(['done-before', 'done-before', 'restored']);
    expect(await sums(stores)).toEqual(before);
  });

  it('verify and restore exit 9 on a damaged bundle', async () => {
    const f = path.join(bundle, 'redis-3.ndjson');
    const text = await readFile(f, 'utf8');
    await writeFile(f, text.slice(0, text.length / 2));
    const verified = await mgr(['backup', 'verify', bundle]);
    expect(verified.code).toBe(9);
    expect(verified.stdout).toMatch(/DAMAGED[\s\S]*redis-3\.ndjson: \d+ bytes, the manifest says \d+/);
    const restored = await mgr(['-f', toml, 'backup', 'restore', bundle, '--yes', '--force']);
    expect(restored.code).toBe(9);
    expect(restored.stderr).toMatch(/failed verification[\s\S]*redis-3\.ndjson/);
  });
});
