import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { fingerprint, type Fingerprint } from '../helpers/fingerprint.js';
import { runMgr, spawnMgr } from '../helpers/cli.js';
import type { Stores } from '../../src/stores/index.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { detectRelease } from '../../src/engine/detect.js';
import { EXIT } from '../../src/errors.js';

/** The same installation every time: same PRNG seed, same clock. */
const SEED = { kernels: 4000, images: 600, keypairs: 30, seed: 42, now: Date.parse('2026-06-01T00:00:00Z') };

function upgradeArgs(sb: TestSandbox): string[] {
  return ['-f', sb.managerToml, 'upgrade', '--yes', '--no-backup', '--no-schedule', '--json'];
}

async function stepsFinished(stores: Stores): Promise<number> {
  return stores.pg.withClient(async (c) => {
    if ((await c.query(`SELECT to_regclass('mgr.upgrade_steps') AS t`)).rows[0]?.t === null) return 0;
    return (await c.query(`SELECT count(*)::int AS n FROM mgr.upgrade_steps WHERE status IN ('done', 'skipped')`)).rows[0].n as number;
  });
}

/** Image-migration batches finished so far (the long data step of 22.03). */
async function imageBatchesDone(stores: Stores): Promise<number> {
  return stores.pg.withClient(async (c) => {
    if ((await c.query(`SELECT to_regclass('mgr.batched_background_migration_jobs') AS t`)).rows[0]?.t === null) return 0;
    return (await c.query(`SELECT count(*)::int AS n FROM mgr.batched_background_migration_jobs WHERE status = 2`)).rows[0].n as number;
  });
}

/** Starts `mgr upgrade`, SIGKILLs it as soon as `until` holds (or lets it finish). */
async function upgradeKilledWhen(sb: TestSandbox, stores: Stores, until: () => Promise<boolean>): Promise<'killed' | 'finished'> {
  const child = spawnMgr(upgradeArgs(sb));
  let exited = false;
  void child.result.then(() => (exited = true));
  while (!exited) {
    if (await until()) {
      child.kill('SIGKILL');
      await child.result;
      return 'killed';
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const r = await child.result;
  expect(r.code, r.stderr).toBe(0);
  return 'finished';
}

describe('mgr upgrade as a process: crashes, concurrency', () => {
  let reference: TestSandbox;
  let crashed: TestSandbox;
  let refStores: Stores;
  let crashStores: Stores;
  let expected: Fingerprint;

  beforeAll(async () => {
    [reference, crashed] = await Promise.all([startTestSandbox(), startTestSandbox()]);
    [refStores, crashStores] = await Promise.all([reference.openStores(), crashed.openStores()]);
    await Promise.all([seedInstallation(refStores, SEED), seedInstallation(crashStores, SEED)]);
    const r = await runMgr(upgradeArgs(reference));
    expect(r.code, r.stderr).toBe(0);
    expected = await fingerprint(refStores);
  });
  afterAll(async () => {
    await Promise.all([refStores?.close(), crashStores?.close()]);
    await Promise.all([reference?.stop(), crashed?.stop()]);
  });

  it('kill -9 at every step boundary and inside the image migration, then a rerun, ends where an uninterrupted run ends', async () => {
    expect(await fingerprint(crashStores)).not.toEqual(expected);
    const kills: string[] = [];
    // Inside the long data step: after the first image batch, before the last.
    if ((await upgradeKilledWhen(crashed, crashStores, async () => (await imageBatchesDone(crashStores)) >= 1)) === 'killed') kills.push('images:batch1');
    for (let boundary = 1; boundary <= 40; boundary++) {
      const done = await stepsFinished(crashStores);
      if (boundary <= done) continue;
      const outcome = await upgradeKilledWhen(crashed, crashStores, async () => (await stepsFinished(crashStores)) >= boundary);
      if (outcome === 'finished') break;
      kills.push(`after step ${boundary}`);
    }
    expect(kills.length).toBeGreaterThan(10);
    const last = await runMgr(upgradeArgs(crashed));
    expect(last.code, last.stderr).toBe(0);
    expect(await detectRelease(crashStores.pg)).toMatchObject({ revision: '81c264528f20' });
    expect(await fingerprint(crashStores)).toEqual(expected);
  });
});

describe('concurrent upgrades', () => {
  let sb: TestSandbox;
  let stores: Stores;
  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await seedInstallation(stores, { ...SEED, images: 3000, kernels: 20000 });
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('five at once: exactly one upgrades, the others exit with the lock code naming the holder', async () => {
    const results = await Promise.all(Array.from({ length: 5 }, () => runMgr(upgradeArgs(sb))));
    const winners = results.filter((r) => r.code === EXIT.ok);
    const losers = results.filter((r) => r.code === EXIT.lockBusy);
    expect(winners).toHaveLength(1);
    expect(losers).toHaveLength(4);
    for (const l of losers) {
      const err = JSON.parse(l.stdout) as { error: { message: string; holder?: { pid: number } } };
      expect(err.error.message).toMatch(/held by .* pid \d+/);
    }
    expect(JSON.parse(winners[0]!.stdout).steps.length).toBeGreaterThan(10);
    expect(await detectRelease(stores.pg)).toMatchObject({ revision: '81c264528f20' });
  });
});
