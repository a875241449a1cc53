import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { load2203Schema, putRegistry } from '../helpers/registry-push.js';
import { runMgr, spawnMgr } from '../helpers/cli.js';
import type { Stores } from '../../src/stores/index.js';
import { Rng } from '../../src/sandbox/seed-random.js';
import { generateSeedImages, writeEtcdImages } from '../../src/sandbox/seed-etcd-images.js';
import { IMAGES_FROM_ETCD, enqueueImagesFromEtcd } from '../../src/images/etcd-migration.js';

/** `mgr background-migrate …` as an operator runs it (the built CLI): output, exit codes, Ctrl-C. */
const TAGS = 300;

describe('mgr background-migrate (CLI)', () => {
  let sb: TestSandbox;
  let stores: Stores;
  const sql = (text: string, params: unknown[] = []) => stores.pg.withClient((c) => c.query(text, params));
  const mgr = (...args: string[]) => runMgr(['-f', sb.managerToml, 'background-migrate', ...args]);
  const migration = async () => (await sql(`SELECT status, batch_size, rows_done FROM mgr.batched_background_migrations WHERE name = $1`, [IMAGES_FROM_ETCD])).rows[0];
  const imageRows = async () => (await sql('SELECT count(*)::int AS n FROM images')).rows[0].n as number;

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await load2203Schema(stores);
    await putRegistry(stores, 'cr.backend.ai', 'https://cr.backend.ai');
    await putRegistry(stores, 'index.docker.io', 'https://registry-1.docker.io');
    await putRegistry(stores, 'localhost:5000', 'http://localhost:5000');
    await writeEtcdImages(stores.etcd, generateSeedImages(new Rng(7), { count: TAGS }));
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('status before anything is enqueued: an empty list, and a usage error for an unknown name', async () => {
    const all = await mgr('status', '--json');
    expect(all.code, all.stderr).toBe(0);
    expect(JSON.parse(all.stdout)).toEqual({ ok: true, migrations: [] });
    const one = await mgr('status', IMAGES_FROM_ETCD);
    expect(one.code).toBe(2);
    expect(one.stderr).toMatch(/no background migration named "images_from_etcd"/);
  });

  it('set-batch-size: rejects 0, --dry-run changes nothing, then applies', async () => {
    await enqueueImagesFromEtcd(stores, { batchSize: 20 });
    expect((await mgr('set-batch-size', IMAGES_FROM_ETCD, '0')).code).toBe(2);
    const dry = await mgr('set-batch-size', IMAGES_FROM_ETCD, '30', '--dry-run', '--json');
    expect(JSON.parse(dry.stdout)).toEqual({ ok: true, dryRun: true, name: IMAGES_FROM_ETCD, from: 20, to: 30 });
    expect((await migration()).batch_size).toBe(20);
    const real = await mgr('set-batch-size', IMAGES_FROM_ETCD, '30');
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/set batch size of images_from_etcd: 20 → 30/);
    expect((await migration()).batch_size).toBe(30);
  });

  it('pause (all) stops run with exit code 10 and nothing copied; resume lets it go on', async () => {
    const paused = await mgr('pause', '--json');
    expect(JSON.parse(paused.stdout)).toEqual({ ok: true, dryRun: false, changes: [{ name: IMAGES_FROM_ETCD, from: 'active', to: 'paused' }] });
    const run = await mgr('run', IMAGES_FROM_ETCD, '--json');
    expect(run.code).toBe(10);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, outcome: 'paused' });
    expect(await imageRows()).toBe(0);
    const status = await mgr('status');
    expect(status.stdout).toMatch(/^NAME\s+STATUS\s+PROGRESS/);
    expect(status.stdout).toMatch(/images_from_etcd\s+paused\s+0\.0%\s+0\/300/);
    const resumed = await mgr('resume', IMAGES_FROM_ETCD);
    expect(resumed.stdout).toMatch(/changed images_from_etcd: paused → active/);
    expect((await migration()).status).toBe(1);
  });

  it('Ctrl-C stops after the batch in flight with exit code 130, leaving a state the next run resumes', async () => {
    await sql('UPDATE mgr.batched_background_migrations SET batch_size = 1');
    const child = spawnMgr(['-f', sb.managerToml, 'background-migrate', 'run', IMAGES_FROM_ETCD]);
    while (Number((await migration()).rows_done) === 0) await sleep(20);
    child.kill('SIGINT');
    const r = await child.result;
    expect(r.code).toBe(130);
    expect(r.stdout).toMatch(/interrupted: the batches done are kept/);
    const jobs = (await sql('SELECT status, count(*)::int AS n, sum(rows)::int AS rows FROM mgr.batched_background_migration_jobs GROUP BY status')).rows;
    expect(jobs).toHaveLength(1); // no batch left active (in flight) or failed
    expect(jobs[0]).toMatchObject({ status: 2 });
    const m = await migration();
    expect(Number(m.rows_done)).toBe(jobs[0].rows);
    expect(Number(m.rows_done)).toBeLessThan(TAGS);
    expect(await imageRows()).toBe(jobs[0].rows);
  });

  it('a failing write: exit code 7 with the error kept; after the cause is fixed, run finishes it and prints the checked counts', async () => {
    await sql('UPDATE mgr.batched_background_migrations SET batch_size = 50');
    await sql(`ALTER TABLE images ADD CONSTRAINT test_no_python CHECK (image <> 'stable/python')`);
    try {
      const failed = await mgr('run', IMAGES_FROM_ETCD, '--json');
      expect(failed.code).toBe(7);
      const out = JSON.parse(failed.stdout);
      expect(out).toMatchObject({ ok: false, outcome: 'failed', migrations: [{ status: 'failed', failureErrorCode: 4 }] });
      expect(out.migrations[0].failureError).toMatch(/failed 5 times: .*test_no_python/);
      const status = await mgr('status');
      expect(status.stdout).toMatch(/images_from_etcd failed \(code 4\): batch \d+ \[.*\] failed 5 times/);
    } finally {
      await sql('ALTER TABLE images DROP CONSTRAINT test_no_python');
    }
    const done = await mgr('run');
    expect(done.code, done.stderr).toBe(0);
    expect(done.stdout).toMatch(/images_from_etcd\s+finished\s+100\.0%\s+300\/300/);
    expect(done.stdout).toMatch(/images_from_etcd: etcd tags at revision \d+: 300 = 300 image rows written \+ 0 quarantined \(checked\)/);
    expect(await imageRows()).toBe(TAGS);
    const st = JSON.parse((await mgr('status', '--json')).stdout).migrations[0];
    expect(st).toMatchObject({ status: 'finished', progressPct: 100, rowsDone: TAGS, etaSec: 0, jobs: { active: 0, failed: 0 } });
    // run --dry-run with nothing left
    expect((await mgr('run', '--dry-run')).stdout).toMatch(/nothing to run/);
  });
});
