import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { load2203Schema, putRegistry } from '../helpers/registry-push.js';
import { spawnMgr, type MgrResult } from '../helpers/cli.js';
import type { Stores } from '../../src/stores/index.js';
import { Rng } from '../../src/sandbox/seed-random.js';
import { generateSeedImages, imageRef, writeEtcdImages } from '../../src/sandbox/seed-etcd-images.js';
import { getMigration } from '../../src/bbm/index.js';
import { IMAGES_FROM_ETCD, enqueueImagesFromEtcd } from '../../src/images/etcd-migration.js';

/**
 * images_from_etcd run by separate `mgr background-migrate run` processes (the built CLI, as
 * workers on several hosts would run it) over 20,000 tags: claims are exactly-once, and a worker
 * killed with SIGKILL mid-batch loses nothing.
 */
const TAGS = 20_000;

interface JobRow {
  id: number;
  min: string;
  max: string;
  status: number;
  attempts: number;
  rows: number;
  worker: string;
}

describe('images_from_etcd with worker processes (real etcd and PostgreSQL)', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let names: Set<string>;
  const sql = (text: string, params: unknown[] = []) => stores.pg.withClient((c) => c.query(text, params));
  const run = (...extra: string[]) => spawnMgr(['-f', sb.managerToml, 'background-migrate', 'run', IMAGES_FROM_ETCD, '--json', ...extra]);
  const batchJobs = async () =>
    (
      await sql(
        `SELECT id, min_value AS min, max_value AS max, status, attempts, rows, worker FROM mgr.batched_background_migration_jobs
         WHERE kind = 'batch' ORDER BY min_value COLLATE "C"`,
      )
    ).rows as JobRow[];

  /** Every row present exactly once, every batch counted exactly once, job ranges tiling etcd's keys. */
  async function expectCompleteAndTiled(): Promise<JobRow[]> {
    const rows = (await sql('SELECT name FROM images')).rows.map((r) => r.name as string);
    expect(rows).toHaveLength(TAGS);
    expect(new Set(rows)).toEqual(names);
    const m = await stores.pg.withClient((c) => getMigration(c, IMAGES_FROM_ETCD));
    expect(m).toMatchObject({ status: 2, rowsDone: TAGS, totalTupleCount: TAGS });
    const jobs = await batchJobs();
    expect(jobs.every((j) => j.status === 2)).toBe(true);
    expect(jobs.reduce((a, j) => a + Number(j.rows), 0)).toBe(TAGS);
    // every etcd key under images/ (at the pinned revision) lies in exactly one job's range, in order
    let j = 0;
    let page = await stores.etcd.page('images/', { limit: 100_000, revision: m.pinnedRevision! });
    let keys = 0;
    const outside: string[] = [];
    for (;;) {
      for (const { key } of page.kvs) {
        // ASCII keys: JS string order is etcd's byte order
        while (j < jobs.length && key > jobs[j]!.max) j++;
        if (j === jobs.length || key < jobs[j]!.min) outside.push(key);
        keys++;
      }
      if (!page.more) break;
      page = await stores.etcd.page('images/', { limit: 100_000, revision: m.pinnedRevision!, after: page.kvs.at(-1)!.key });
    }
    expect(outside).toEqual([]);
    expect(keys).toBeGreaterThan(TAGS * 5);
    for (let i = 1; i < jobs.length; i++) {
      expect(jobs[i - 1]!.max < jobs[i]!.min, `jobs ${jobs[i - 1]!.id} and ${jobs[i]!.id} overlap`).toBe(true);
    }
    return jobs;
  }

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await load2203Schema(stores);
    await putRegistry(stores, 'cr.backend.ai', 'https://cr.backend.ai');
    await putRegistry(stores, 'index.docker.io', 'https://registry-1.docker.io');
    await putRegistry(stores, 'localhost:5000', 'http://localhost:5000');
    const seeds = [...generateSeedImages(new Rng(2203), { count: TAGS })];
    names = new Set(seeds.map(imageRef));
    await writeEtcdImages(stores.etcd, seeds);
  }, 180_000);
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('three worker processes share 20,000 tags: each tag exactly one row, each batch claimed once, ranges tiling the key space', async () => {
    await enqueueImagesFromEtcd(stores, { batchSize: 250 });
    const results: MgrResult[] = await Promise.all([run(), run(), run()].map((p) => p.result));
    for (const r of results) {
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, outcome: 'finished' });
    }
    const jobs = await expectCompleteAndTiled();
    expect(jobs.length).toBeGreaterThanOrEqual(TAGS / 250);
    expect(jobs.every((j) => j.attempts === 1)).toBe(true);
    // all three took batches
    expect(new Set(jobs.map((j) => j.worker)).size).toBe(3);
    const report = JSON.parse(results[0]!.stdout).migrations[0].report;
    expect(report.lines[0]).toMatch(new RegExp(`: ${TAGS} = ${TAGS} image rows written \\+ 0 quarantined \\(checked\\)$`));
  }, 180_000);

  it('a worker killed with SIGKILL mid-batch: another takes its batch over after the lease, and every row is there once', async () => {
    await sql('DELETE FROM mgr.batched_background_migrations; TRUNCATE images CASCADE');
    await enqueueImagesFromEtcd(stores, { batchSize: 100 });
    // a short lease, so the survivor takes the dead worker's batch over quickly
    const victim = run('--stale-after', '3');
    const survivor = run('--stale-after', '3');
    // Freeze the victim while it holds a batch, check it still does, then kill it: mid-batch for sure.
    let killed: JobRow | undefined;
    while (!killed) {
      const held = (await sql(`SELECT id, min_value AS min, max_value AS max, status, attempts, rows, worker FROM mgr.batched_background_migration_jobs
                               WHERE status = 1 AND worker LIKE '%:' || $1::text`, [victim.pid])).rows[0] as JobRow | undefined;
      if (!held) {
        await sleep(20);
        continue;
      }
      victim.kill('SIGSTOP');
      const still = (await sql('SELECT status, worker, attempts FROM mgr.batched_background_migration_jobs WHERE id = $1', [held.id])).rows[0];
      if (still.status === 1 && still.worker === held.worker && still.attempts === held.attempts) {
        victim.kill('SIGKILL');
        killed = held;
      } else victim.kill('SIGCONT');
    }
    const dead = await victim.result;
    expect(dead.signal).toBe('SIGKILL');
    const done = await survivor.result;
    expect(done.code, done.stderr).toBe(0);
    const jobs = await expectCompleteAndTiled();
    const takenOver = jobs.find((j) => j.id === killed!.id)!;
    expect(takenOver.attempts).toBe(2);
    expect(takenOver.worker).toMatch(new RegExp(`:${survivor.pid}$`));
  }, 180_000);
});
