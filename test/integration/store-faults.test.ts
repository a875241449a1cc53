import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { fingerprint, type Fingerprint } from '../helpers/fingerprint.js';
import { runMgr, spawnMgr, type MgrResult } from '../helpers/cli.js';
import { holdTableLock, until } from '../helpers/table-lock.js';
import { REDIS_DB, type Stores } from '../../src/stores/index.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { detectRelease } from '../../src/engine/detect.js';
import { getMaintenance } from '../../src/maintenance/index.js';
import { CONCURRENCY_KEY_PREFIX } from '../../src/upgrades/keypair-concurrency.js';
import { EXIT } from '../../src/errors.js';

/**
 * Stores failing under `mgr upgrade` (the built CLI, real servers): PostgreSQL restarted, etcd
 * and Redis stopped, each while a given step runs. To hit a step for sure, the test holds a
 * table lock the step needs, waits until mgr's query blocks on it, stops the store, then lets
 * go. The faults are chained on one installation, each resumed by the next run, and the end
 * state must equal an uninterrupted upgrade of an identically seeded installation.
 */
const SEED = { kernels: 3000, images: 400, keypairs: 30, seed: 4242, now: new Date('2026-06-01T00:00:00Z') };
const UPGRADE = ['upgrade', '--yes', '--no-backup', '--no-schedule'];

interface UpgradeStatusJson {
  release: string;
  pending: string[];
  steps: { stepId: string; status: string; attempts: number; error: string | null }[];
}

async function upgradeStatus(sb: TestSandbox): Promise<UpgradeStatusJson> {
  const r = await runMgr(['-f', sb.managerToml, 'upgrade', 'status', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as UpgradeStatusJson;
}

const stepIn = (st: UpgradeStatusJson, id: string) => st.steps.find((s) => s.stepId === id);

/**
 * Runs `mgr upgrade`; when `step` starts, locks `table` from a separate session, waits until one
 * of mgr's statements waits on that lock, runs `fault`, then releases the lock. Returns the result.
 */
async function upgradeWithFault(sb: TestSandbox, o: { step: string; table: string; fault: () => Promise<void> }): Promise<MgrResult> {
  const child = spawnMgr(['-f', sb.managerToml, ...UPGRADE]);
  let stderr = '';
  let exited = false;
  void child.result.then(() => (exited = true));
  const started = new Promise<void>((resolve) =>
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes(`] ${o.step} — `)) resolve();
    }),
  );
  try {
    await Promise.race([started, child.result]);
    expect(exited, `the upgrade ended before step ${o.step} started:\n${stderr}`).toBe(false);
    const lock = await holdTableLock(sb.pg.endpoint, o.table);
    try {
      await until(`mgr waits on ${o.table} during ${o.step}`, async () => {
        expect(exited, `the upgrade ended before it touched ${o.table}:\n${stderr}`).toBe(false);
        return (await lock.waiters()) > 0;
      });
      await o.fault();
    } finally {
      await lock.release(); // mgr's statement goes on (or finds its store gone)
    }
    return await child.result;
  } finally {
    if (!exited) child.kill('SIGKILL');
  }
}

describe('store faults under mgr upgrade, each resumed by the next run', () => {
  let reference: TestSandbox;
  let sb: TestSandbox;
  let refStores: Stores;
  let stores: Stores;
  let expected: Fingerprint;
  let pristine: Fingerprint;

  /** After a server restart: fresh connections, as the next mgr process would have. */
  async function reopen(): Promise<void> {
    await stores.close();
    stores = await sb.openStores();
  }

  beforeAll(async () => {
    [reference, sb] = await Promise.all([startTestSandbox(), startTestSandbox()]);
    [refStores, stores] = await Promise.all([reference.openStores(), sb.openStores()]);
    await Promise.all([seedInstallation(refStores, SEED), seedInstallation(stores, SEED)]);
    const r = await runMgr(['-f', reference.managerToml, ...UPGRADE]);
    expect(r.code, r.stderr).toBe(0);
    [expected, pristine] = await Promise.all([fingerprint(refStores), fingerprint(stores)]);
  });
  afterAll(async () => {
    await Promise.all([refStores?.close(), stores?.close()]);
    await Promise.all([reference?.stop(), sb?.stop()]);
  });

  it('etcd down at start: exit 4 naming its address and [etcd] addr in manager.toml; nothing written anywhere', async () => {
    const endpoint = sb.etcd.endpoint;
    await sb.etcd.stop();
    let r: MgrResult;
    try {
      r = await runMgr(['-f', sb.managerToml, ...UPGRADE]);
    } finally {
      await sb.etcd.start();
    }
    expect(r.code, r.stderr).toBe(EXIT.storeUnreachable);
    expect(r.stderr).toContain(`etcd at ${endpoint} is not reachable`);
    expect(r.stderr).toContain('check [etcd] addr in manager.toml');
    await reopen();
    expect((await stores.pg.pool.query(`SELECT to_regnamespace('mgr') AS s`)).rows[0].s).toBeNull();
    expect(await fingerprint(stores)).toEqual(pristine);
  });

  it('PostgreSQL restarted during the image migration: exit 4 naming it, and upgrade status shows the step interrupted', async () => {
    const r = await upgradeWithFault(sb, {
      step: '22.03/images-from-etcd',
      table: 'images', // the batch's upsert waits on it
      fault: () => sb.pg.stop(),
    });
    // started again only after mgr exited, so it could record nothing more
    await sb.pg.start();
    expect(r.code, r.stderr).toBe(EXIT.storeUnreachable);
    expect(r.stderr).toContain(`mgr: step 22.03/images-from-etcd stopped: PostgreSQL at 127.0.0.1:${sb.pg.port} (database "backend", user "postgres") is not reachable`);
    expect(r.stderr).toMatch(/hint: check \[db\] in manager\.toml .* run `mgr upgrade` again to resume at this step/);
    await reopen();
    const st = await upgradeStatus(sb);
    expect(st).toMatchObject({ release: '21.09', pending: ['22.03'] });
    expect(stepIn(st, '22.03/015d84d5a5ef')).toMatchObject({ status: 'done' });
    // PostgreSQL was gone when the step failed: its row still says running, shown as interrupted
    expect(stepIn(st, '22.03/images-from-etcd')).toMatchObject({ status: 'interrupted', attempts: 1 });
    expect(stepIn(st, '22.03/911023380bc9')).toBeUndefined();
  });

  it('etcd stopped during the resumed image migration: exit 4 naming etcd, the step recorded failed with that message', async () => {
    const endpoint = sb.etcd.endpoint;
    const r = await upgradeWithFault(sb, {
      step: '22.03/images-from-etcd',
      table: 'images',
      fault: () => sb.etcd.stop(), // the next etcd read (the next batch, or the aliases) fails
    });
    await sb.etcd.start();
    expect(r.code, r.stderr).toBe(EXIT.storeUnreachable);
    expect(r.stderr).toContain(`mgr: step 22.03/images-from-etcd stopped: etcd at ${endpoint} is not reachable`);
    expect(r.stderr).toContain('hint: check [etcd] addr in manager.toml');
    await reopen();
    const st = await upgradeStatus(sb);
    expect(stepIn(st, '22.03/images-from-etcd')).toMatchObject({ status: 'failed', attempts: 2, error: expect.stringContaining(`etcd at ${endpoint} is not reachable`) });
    // etcd was gone when the upgrade ended, so maintenance mode could not be turned off: the rerun does it
    expect(await getMaintenance(stores.etcd)).toMatchObject({ by: 'mgr upgrade' });
  });

  it('Redis stopped during the keypair-concurrency step: exit 4 naming Redis; the image migration it passed holds every image once', async () => {
    const address = `127.0.0.1:${sb.redis.port}`;
    const r = await upgradeWithFault(sb, {
      step: '22.03/redis-aof', // the step before; the recount that follows waits on keypairs
      table: 'keypairs',
      fault: () => sb.redis.stop(),
    });
    await sb.redis.start();
    expect(r.code, r.stderr).toBe(EXIT.storeUnreachable);
    expect(r.stderr).toContain(`mgr: step 22.03/keypair-concurrency-to-redis stopped: Redis at ${address} is not reachable`);
    expect(r.stderr).toContain('hint: check config/redis in etcd');
    await reopen();
    const st = await upgradeStatus(sb);
    expect(stepIn(st, '22.03/images-from-etcd')).toMatchObject({ status: 'done', attempts: 3 });
    expect(stepIn(st, '22.03/redis-aof')).toMatchObject({ status: 'done' });
    expect(stepIn(st, '22.03/keypair-concurrency-to-redis')).toMatchObject({ status: 'failed', error: expect.stringContaining(`Redis at ${address} is not reachable`) });
    // the column the counters come from is still there: the drop waits for the verified copy
    expect(stepIn(st, '22.03/d59ff89e7514')).toBeUndefined();
    // three runs of the image step: each tag one row, equal to the uninterrupted run's
    const images = await stores.pg.pool.query<{ n: number; names: number }>('SELECT count(*)::int AS n, count(DISTINCT (name, architecture))::int AS names FROM images');
    expect(images.rows[0]!.n).toBe(expected.postgres.images!.rows);
    expect(images.rows[0]!.names).toBe(images.rows[0]!.n);
    const got = await fingerprint(stores);
    expect(got.postgres.images).toEqual(expected.postgres.images);
    expect(got.postgres.image_aliases).toEqual(expected.postgres.image_aliases);
  });

  it('the rerun finishes, and the end state equals the uninterrupted upgrade', async () => {
    const r = await runMgr(['-f', sb.managerToml, ...UPGRADE, '--json']);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expect(await detectRelease(stores.pg)).toMatchObject({ revision: '81c264528f20' });
    expect(await getMaintenance(stores.etcd)).toBeUndefined();
    expect((await upgradeStatus(sb)).steps.filter((s) => s.status !== 'done' && s.status !== 'skipped')).toEqual([]);
    expect(await fingerprint(stores)).toEqual(expected);
  });

  it('Redis restarted after the upgrade turned AOF on: every key is still there, appendonly is yes', async () => {
    const db0 = await refStores.redis.db(REDIS_DB.stat);
    const counters = await db0.keys(`${CONCURRENCY_KEY_PREFIX}*`);
    expect(counters).toHaveLength(SEED.keypairs);
    const before = await db0.dbsize();
    expect(before).toBeGreaterThan(counters.length); // kernel stat keys too
    await reference.redis.stop();
    await reference.redis.start();
    await refStores.close();
    refStores = await reference.openStores();
    const again = await refStores.redis.db(REDIS_DB.stat);
    expect(await again.config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
    expect(await again.dbsize()).toBe(before);
    expect(await again.mget(...counters)).toEqual(counters.map(() => expect.stringMatching(/^\d+$/)));
    expect((await fingerprint(refStores)).redis).toEqual(expected.redis);
  });
});
