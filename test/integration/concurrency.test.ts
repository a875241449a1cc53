import { readFileSync } from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { runMgr, spawnMgr, type MgrResult } from '../helpers/cli.js';
import { holdTableLock, until } from '../helpers/table-lock.js';
import { quote, type Stores } from '../../src/stores/index.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { detectRelease } from '../../src/engine/detect.js';
import { tagKeyOf } from '../../src/images/etcd-layout.js';
import { IMAGES_FROM_ETCD } from '../../src/images/etcd-migration.js';
import { getMigration } from '../../src/bbm/index.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { EXIT } from '../../src/errors.js';

/**
 * Separate mgr processes racing on one installation (the built CLI, real stores): two upgrades
 * at once, then the image migration they leave to background workers run by three worker
 * processes, paused from SQL while batches are in flight, resumed, and run to the end.
 * (Five upgrades at once: upgrade-cli.test.ts. Three clear-history runs at once:
 * clear-history-cli.test.ts.)
 */
const SEED = { kernels: 2000, images: 400, keypairs: 20, seed: 99, now: new Date('2026-06-01T00:00:00Z') };
const UPGRADE = ['upgrade', '--yes', '--no-backup', '--no-schedule', '--json'];
const BATCH = 20;

/** A statement of GitLab's bbm runbook, verbatim from the fixture, for images_from_etcd. */
function runbookStatement(label: 'pause' | 'start'): string {
  const text = readFileSync(path.join(PACKAGE_ROOT, 'test/fixtures/gitlab-bbm-runbook.sql'), 'utf8');
  return new RegExp(`^-- ${label}\\n([\\s\\S]*?;)`, 'm').exec(text)![1]!.replace('<migration_name>', IMAGES_FROM_ETCD);
}

interface BatchJob {
  id: number;
  min: string;
  max: string;
  status: number;
  attempts: number;
  rows: number;
  worker: string;
}

describe('mgr processes racing on one installation', () => {
  let sb: TestSandbox;
  let stores: Stores;
  const sql = <T extends pg.QueryResultRow>(text: string, params: unknown[] = []) => stores.pg.pool.query<T>(text, params);
  const workers = () => [0, 1, 2].map(() => spawnMgr(['-f', sb.managerToml, 'background-migrate', 'run', IMAGES_FROM_ETCD, '--json']));
  const batchJobs = async () =>
    (
      await sql<BatchJob>(
        `SELECT id, min_value AS min, max_value AS max, status, attempts, rows, worker FROM mgr.batched_background_migration_jobs
          WHERE kind = 'batch' ORDER BY min_value COLLATE "C"`,
      )
    ).rows;

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await seedInstallation(stores, SEED);
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('two `mgr upgrade --background` at once: one upgrades, the other exits 6 naming it as the holder', async () => {
    // The winner blocks on keypairs (a 22.03 schema step) while it holds the upgrade lock, so the
    // other one meets the lock however the two are scheduled.
    const keypairs = await holdTableLock(sb.pg.endpoint, 'keypairs');
    const runs = [0, 1].map(() => spawnMgr(['-f', sb.managerToml, ...UPGRADE, '--background']));
    let first: MgrResult;
    try {
      first = await Promise.race(runs.map((r) => r.result));
    } finally {
      await keypairs.release();
    }
    const results = await Promise.all(runs.map((r) => r.result));
    const loser = results.findIndex((r) => r === first);
    const winner = 1 - loser;
    expect(first.code, first.stderr + first.stdout).toBe(EXIT.lockBusy);
    const err = JSON.parse(first.stdout) as { error: { message: string; holder: { pid: number; purpose: string } } };
    expect(err.error.message).toMatch(/lock "mgr\.upgrade" .* is busy held by .* pid \d+/);
    expect(err.error.holder).toMatchObject({ pid: runs[winner]!.pid, purpose: 'mgr upgrade to 22.03' });
    // the winner did every step, and stops at the last one: the images are left to the workers
    const won = results[winner]!;
    expect(won.code, won.stderr + won.stdout).toBe(EXIT.pending);
    expect(JSON.parse(won.stdout).error.message).toMatch(/22\.03 is not complete: background migration images_from_etcd is active/);
    expect(await detectRelease(stores.pg)).toMatchObject({ revision: '81c264528f20' });
    expect((await sql('SELECT count(*)::int AS n FROM images')).rows[0]!.n).toBe(0);
  });

  it('three worker processes, paused by the runbook UPDATE with batches in flight, resumed, run to the end: every etcd tag once, no gap', async () => {
    const set = await runMgr(['-f', sb.managerToml, 'background-migrate', 'set-batch-size', IMAGES_FROM_ETCD, String(BATCH)]);
    expect(set.code, set.stderr).toBe(0);
    const m = await stores.pg.withClient((c) => getMigration(c, IMAGES_FROM_ETCD));
    const tags = m.totalTupleCount!;
    expect(tags).toBeGreaterThan(10 * BATCH);

    // Each worker claims a batch and blocks on its upsert; the operator pauses meanwhile.
    const images = await holdTableLock(sb.pg.endpoint, 'images');
    const first = workers();
    try {
      await until('each worker holds a batch', async () => (await images.waiters()) === 3);
      await stores.pg.withClient(async (c) => {
        await c.query('SET search_path = mgr, public'); // as the runbook statements expect
        expect((await c.query(runbookStatement('pause'))).rowCount).toBe(1);
      });
    } finally {
      await images.release();
    }
    for (const r of await Promise.all(first.map((w) => w.result))) {
      expect(r.code, r.stderr + r.stdout).toBe(EXIT.pending);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, outcome: 'paused' });
    }
    // the three batches in flight finished; nothing else was claimed
    const paused = await batchJobs();
    expect(paused.map((j) => j.status)).toEqual([2, 2, 2]);
    expect(new Set(paused.map((j) => j.worker)).size).toBe(3);
    const st = await runMgr(['-f', sb.managerToml, 'background-migrate', 'status', IMAGES_FROM_ETCD, '--json']);
    const mid = (JSON.parse(st.stdout) as { migrations: { status: string; rowsDone: number; progressPct: number }[] }).migrations[0]!;
    expect(mid).toMatchObject({ status: 'paused', rowsDone: paused.reduce((a, j) => a + j.rows, 0) });
    expect(mid.progressPct).toBeLessThan(100);
    expect((await sql('SELECT count(*)::int AS n FROM images')).rows[0]!.n).toBeLessThanOrEqual(3 * BATCH);

    await stores.pg.withClient(async (c) => {
      await c.query('SET search_path = mgr, public');
      expect((await c.query(runbookStatement('start'))).rowCount).toBe(1);
    });
    const second = await Promise.all(workers().map((w) => w.result));
    for (const r of second) {
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, outcome: 'finished' });
    }
    const report = JSON.parse(second[0]!.stdout).migrations[0].report as { lines: string[]; counts: { imagesWritten: number; tagsQuarantined: number } };
    expect(report.lines[0]).toMatch(new RegExp(`: ${tags} = ${report.counts.imagesWritten} image rows written \\+ ${report.counts.tagsQuarantined} quarantined \\(checked\\)$`));

    // every tag key in etcd (at the pinned revision) is one images row or one quarantined tag
    const etcdTags = new Set<string>();
    for (let page = await stores.etcd.page('images/', { limit: 1000, revision: m.pinnedRevision! }); ; ) {
      for (const { key } of page.kvs) {
        const t = tagKeyOf(key);
        if (t) etcdTags.add(t);
      }
      if (!page.more) break;
      page = await stores.etcd.page('images/', { limit: 1000, revision: m.pinnedRevision!, after: page.kvs.at(-1)!.key });
    }
    const rows = (await sql<{ registry: string; image: string; tag: string }>('SELECT registry, image, tag FROM images')).rows;
    const quarantined = (await sql<{ key: string }>(`SELECT key FROM mgr.image_quarantine WHERE migration_name = $1 AND kind = 'tag'`, [IMAGES_FROM_ETCD])).rows;
    const found = [...rows.map((r) => `images/${quote(r.registry)}/${quote(r.image)}/${r.tag}`), ...quarantined.map((q) => q.key)].sort();
    expect(etcdTags.size).toBe(tags);
    expect(found).toEqual([...etcdTags].sort());

    // each batch claimed and counted once, and the batches tile the key range without a gap
    const jobs = await batchJobs();
    expect(jobs.every((j) => j.status === 2 && j.attempts === 1)).toBe(true);
    expect(jobs.slice(0, 3)).toEqual(paused);
    expect(jobs[0]!.min).toBe(m.minValue);
    expect(jobs.at(-1)!.max).toBe(m.maxValue);
    for (let i = 1; i < jobs.length; i++) {
      const next = await stores.etcd.page('images/', { after: jobs[i - 1]!.max, limit: 1, revision: m.pinnedRevision! });
      expect(next.kvs[0]?.key, `between batches ${jobs[i - 1]!.id} and ${jobs[i]!.id}`).toBe(jobs[i]!.min);
    }
    expect((await stores.pg.withClient((c) => getMigration(c, IMAGES_FROM_ETCD))).rowsDone).toBe(tags);

    // and the upgrade, run again, now completes 22.03
    const done = await runMgr(['-f', sb.managerToml, ...UPGRADE]);
    expect(done.code, done.stderr + done.stdout).toBe(0);
    expect(JSON.parse(done.stdout).steps.at(-1)).toMatchObject({ id: '22.03/images-from-etcd-finished', status: 'done' });
  });
});
