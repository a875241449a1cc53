import { cp, mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, TEST_SANDBOX_PREFIX, type TestSandbox } from '../helpers/sandbox.js';
import { etcdChecksum, pgChecksums, redisChecksums, redisTtls } from '../helpers/checksums.js';
import { addAwkwardData } from '../helpers/backup-fixture.js';
import type { Stores } from '../../src/stores/index.js';
import { seedInstallation, resetInstallation } from '../../src/sandbox/seed.js';
import { createBackup, restoreBackup, verifyBackup, listBackups, RESTORE_STATE_FILE, type CreatedBackup } from '../../src/backup/index.js';
import { getMaintenance, enterMaintenance, leaveMaintenance } from '../../src/maintenance/index.js';
import { createLogger } from '../../src/log.js';
import { pgRestoreList, schemasInToc } from '../../src/backup/pg-tools.js';
import { MgrError } from '../../src/errors.js';

const PG_PASSWORD = 'pg-Secret-4f1e9';
const REDIS_PASSWORD = 'redis-Secret-7c2d0';

interface Snapshot {
  pg: Awaited<ReturnType<typeof pgChecksums>>;
  etcd: Awaited<ReturnType<typeof etcdChecksum>>;
  redis: Awaited<ReturnType<typeof redisChecksums>>;
  ttls: Awaited<ReturnType<typeof redisTtls>>;
}

async function snapshot(stores: Stores): Promise<Snapshot> {
  return {
    pg: await stores.pg.withClient(pgChecksums),
    etcd: await etcdChecksum(stores.etcd),
    // TTLs tick on between backup and restore: compared separately, within a second
    redis: await redisChecksums(stores.redis, { ttl: 'presence' }),
    ttls: await redisTtls(stores.redis),
  };
}

/** The TTL each key had left when the backup read it, from the bundle's Redis files. */
async function dumpedTtls(bundle: string): Promise<Record<number, Record<string, number>>> {
  const out: Record<number, Record<string, number>> = {};
  for (const db of [0, 1, 2, 3, 4]) {
    out[db] = {};
    for (const line of (await readFile(path.join(bundle, `redis-${db}.ndjson`), 'utf8')).split('\n').filter(Boolean)) {
      const r = JSON.parse(line) as { k: string; ttl: number };
      if (r.ttl >= 0) out[db]![r.k] = r.ttl;
    }
  }
  return out;
}

/** Same rows, keys and values; the same keys have TTLs, each within a second of what the backup read. */
function expectSameData(after: Snapshot, before: Snapshot, ttlsAtBackup?: Record<number, Record<string, number>>): void {
  expect(after.pg).toEqual(before.pg);
  expect(after.etcd).toEqual(before.etcd);
  expect(after.redis).toEqual(before.redis);
  for (const [db, keys] of Object.entries(before.ttls)) {
    expect(Object.keys(after.ttls[Number(db)]!).sort()).toEqual(Object.keys(keys).sort());
    if (!ttlsAtBackup) continue;
    for (const [k, ttl] of Object.entries(after.ttls[Number(db)]!)) {
      const dumped = ttlsAtBackup[Number(db)]![k]!;
      expect(dumped - ttl).toBeGreaterThanOrEqual(0);
      expect(dumped - ttl).toBeLessThan(1_000);
    }
  }
}

async function rejection(p: Promise<unknown>): Promise<MgrError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(MgrError);
  return e as MgrError;
}

describe('backup and restore of PostgreSQL, etcd and Redis together', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let work: string;
  let before: Snapshot;
  let bundle: CreatedBackup;
  let logFile: string;

  beforeAll(async () => {
    sb = await startTestSandbox({ pgPassword: PG_PASSWORD, redisPassword: REDIS_PASSWORD });
    stores = await sb.openStores();
    work = await mkdtemp(TEST_SANDBOX_PREFIX + 'backup-');
    await seedInstallation(stores, { kernels: 300, images: 20, keypairs: 8, agents: 3 });
    await addAwkwardData(stores);
    before = await snapshot(stores);
    logFile = path.join(work, 'mgr.log');
    const log = createLogger({ level: 'debug', destination: logFile });
    bundle = await createBackup(stores, { outDir: path.join(work, 'bundles'), log });
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('writes a 0700 bundle of 0600 files with a manifest that matches the stores', async () => {
    expect(path.basename(bundle.path)).toMatch(/^mgr-backup-21\.03-\d{8}T\d{6}Z$/);
    expect((await stat(bundle.path)).mode & 0o777).toBe(0o700);
    const files = (await readdir(bundle.path)).sort();
    expect(files).toEqual(['etcd.ndjson', 'manifest.json', 'postgres.dump', 'redis-0.ndjson', 'redis-1.ndjson', 'redis-2.ndjson', 'redis-3.ndjson', 'redis-4.ndjson']);
    for (const f of files) expect((await stat(path.join(bundle.path, f))).mode & 0o777).toBe(0o600);
    expect(bundle.release).toMatchObject({ name: '21.03', detection: 'known', alembicVersion: ['8679d0a7e22b'] });
    expect(bundle.consistency).toMatchObject({ maintenance: 'entered', clearHistoryLock: 'held' });
    // the manifest's table sums are the stores' own, and etcd adds exactly the maintenance marker
    expect(bundle.postgres.tables).toEqual(before.pg);
    expect(bundle.etcd.keys).toBe(before.etcd.keys + 1);
    expect(bundle.etcd.maintenanceMarker).toEqual({ previousManagerStatus: 'running' });
    expect(bundle.redis.dbs.map((d) => d.keys)).toEqual([0, 1, 2, 3, 4].map((db) => before.redis[db]!.keys));
    // maintenance ended with the backup, and manager/status is back
    expect(await getMaintenance(stores.etcd)).toBeUndefined();
    expect(await stores.etcd.get('manager/status')).toBe('running');
    expect((await verifyBackup(bundle.path)).problems).toEqual([]);
    expect(schemasInToc(await pgRestoreList(path.join(bundle.path, 'postgres.dump')))).toEqual(['mgr']);
  });

  it('never writes a password into the manifest or the logs', async () => {
    const manifest = await readFile(path.join(bundle.path, 'manifest.json'), 'utf8');
    const logs = await readFile(logFile, 'utf8');
    expect(logs).toContain('backup finished');
    for (const secret of [PG_PASSWORD, REDIS_PASSWORD]) {
      expect(manifest).not.toContain(secret);
      expect(logs).not.toContain(secret);
    }
  });

  it('restores into emptied stores with every row, key, value and TTL as they were', async () => {
    await resetInstallation(stores);
    const report = await restoreBackup(stores, bundle.path, { yes: true });
    expect(report.parts.map((p) => [p.part, p.status])).toEqual([
      ['etcd', 'restored'],
      ['postgres', 'restored'],
      ['redis', 'restored'],
    ]);
    expectSameData(await snapshot(stores), before, await dumpedTtls(bundle.path));
    expect(await getMaintenance(stores.etcd)).toBeUndefined();
    expect(JSON.parse(await readFile(path.join(bundle.path, RESTORE_STATE_FILE), 'utf8'))).toMatchObject({ status: 'completed' });
  });

  it('refuses stores that hold data unless --force, then replaces them', async () => {
    await (await stores.redis.db(1)).set('written.after.backup', '1');
    await stores.etcd.put('config/added-later', 'x');
    await stores.etcd.put('config/redis/service_name', 'added later: kept while etcd is restored, removed after');
    await stores.pg.withClient((c) => c.query('CREATE TABLE public.added_later (id int)'));
    const refused = await rejection(restoreBackup(stores, bundle.path, { yes: true }));
    expect(refused.code).toBe('refused');
    expect(refused.message).toMatch(/etcd .* holds \d+ keys; postgres .* holds \d+ relations; redis .* holds \d+ keys/);
    expect(await (await stores.redis.db(1)).get('written.after.backup')).toBe('1');

    const report = await restoreBackup(stores, bundle.path, { yes: true, force: true });
    expect(report.before.postgres).toBeGreaterThan(0);
    expectSameData(await snapshot(stores), before, await dumpedTtls(bundle.path));
  });

  it('refuses without confirmation, and asks when it can', async () => {
    const noTty = await rejection(restoreBackup(stores, bundle.path, { force: true }));
    expect(noTty.code).toBe('usage');
    const asked: string[] = [];
    const declined = await rejection(
      restoreBackup(stores, bundle.path, { force: true, confirm: async (q) => (asked.push(q), false) }),
    );
    expect(declined.message).toBe('restore cancelled');
    expect(asked[0]).toMatch(/^restore backup mgr-backup-21\.03-.* into postgres 127\.0\.0\.1:\d+\/backend/);
  });

  it('keeps a maintenance marker held on the target (a rollback) and hands it the restored manager/status', async () => {
    await enterMaintenance(stores.etcd, { reason: 'rollback', by: 'test' });
    await restoreBackup(stores, bundle.path, { yes: true, force: true });
    const marker = await getMaintenance(stores.etcd);
    expect(marker).toMatchObject({ reason: 'rollback', previousManagerStatus: 'running' });
    expect(await stores.etcd.get('manager/status')).toBe('frozen');
    await leaveMaintenance(stores.etcd);
    expectSameData(await snapshot(stores), before, await dumpedTtls(bundle.path));
  });

  it('detects a flipped byte, a cut file and a missing file, and restore refuses them with the reason', async () => {
    const damaged = async (name: string, damage: (dir: string) => Promise<void>) => {
      const dir = path.join(work, name);
      await cp(bundle.path, dir, { recursive: true });
      await rm(path.join(dir, RESTORE_STATE_FILE), { force: true });
      await damage(dir);
      return dir;
    };
    const flipped = await damaged('flipped', async (dir) => {
      const f = path.join(dir, 'postgres.dump');
      const buf = await readFile(f);
      buf[Math.floor(buf.length / 2)]! ^= 0x01;
      await writeFile(f, buf);
    });
    const cut = await damaged('cut', async (dir) => {
      const f = path.join(dir, 'etcd.ndjson');
      await truncate(f, (await stat(f)).size - 10);
    });
    const missing = await damaged('missing', (dir) => rm(path.join(dir, 'redis-2.ndjson')));

    const v1 = await verifyBackup(flipped);
    expect(v1.ok).toBe(false);
    expect(v1.problems.join('\n')).toMatch(/postgres\.dump: sha256 .* does not match/);
    const v2 = await verifyBackup(cut);
    expect(v2.problems.join('\n')).toMatch(/etcd\.ndjson: \d+ bytes, the manifest says \d+ \(truncated or changed\)/);
    const v3 = await verifyBackup(missing);
    expect(v3.problems).toEqual(['redis-2.ndjson: missing']);

    const sums = await snapshot(stores);
    for (const [dir, reason] of [
      [flipped, /postgres\.dump: sha256/],
      [cut, /etcd\.ndjson: \d+ bytes/],
      [missing, /redis-2\.ndjson: missing/],
    ] as const) {
      const e = await rejection(restoreBackup(stores, dir, { yes: true, force: true }));
      expect(e.code).toBe('integrity');
      expect(e.exitCode).toBe(9);
      expect(e.message).toMatch(reason);
    }
    expectSameData(await snapshot(stores), sums); // nothing was written

    const listed = await listBackups(work, { verify: true });
    expect(listed).toEqual([]); // copies are not named like bundles
    const real = await listBackups(path.join(work, 'bundles'), { verify: true });
    expect(real).toHaveLength(1);
    expect(real[0]).toMatchObject({ release: '21.03', finished: true, verify: { ok: true, problems: [] } });
  });

  it('a restore that stopped in the Redis part says what was written and finishes when run again', async () => {
    await resetInstallation(stores);
    const stop = new AbortController();
    const e = await rejection(
      restoreBackup(stores, bundle.path, {
        yes: true,
        signal: stop.signal,
        onProgress: (p) => {
          if (p.part === 'redis' && p.done > 0) stop.abort(new MgrError('interrupted', 'stopped by the test'));
        },
      }),
    );
    expect(e.code).toBe('interrupted');
    expect(e.message).toMatch(/stopped in the redis part.*restored: etcd, postgres; not restored: redis/);
    expect(e.hint).toMatch(/run the same restore again/);
    const state = JSON.parse(await readFile(path.join(bundle.path, RESTORE_STATE_FILE), 'utf8'));
    expect(state.parts).toEqual({ etcd: 'done', postgres: 'done', redis: 'failed' });

    // the stores now hold data, yet no --force is needed: the state file says this restore started it
    const report = await restoreBackup(stores, bundle.path, { yes: true });
    expect(report.resumed).toBe(true);
    expect(report.parts.map((p) => p.status)).toEqual(['done-before', 'done-before', 'restored']);
    expectSameData(await snapshot(stores), before, await dumpedTtls(bundle.path));
  });
});
