import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { fingerprint, type Fingerprint } from '../helpers/fingerprint.js';
import { runMgr, spawnMgr } from '../helpers/cli.js';
import type { Stores } from '../../src/stores/index.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { detectRelease } from '../../src/engine/detect.js';
import { EXIT } from '../../src/errors.js';

/** The same installation every time: same PRNG seed, same clock. */
const SEED = { kernels: 4000, images: 600, keypairs: 30, seed: 42, now: new Date('2026-06-01T00:00:00Z') };

function upgradeArgs(sb: TestSandbox): string[] {
  return ['-f', sb.managerToml, 'upgrade', '--yes', '--no-backup', '--no-schedule', '--json'];
}

/** Image-migration batches finished so far (the long data step of 22.03). */
async function imageBatchesDone(stores: Stores): Promise<number> {
  return stores.pg.withClient(async (c) => {
    if ((await c.query(`SELECT to_regclass('mgr.batched_background_migration_jobs') AS t`)).rows[0]?.t === null) return 0;
    return (await c.query(`SELECT count(*)::int AS n FROM mgr.batched_background_migration_jobs WHERE status = 2`)).rows[0].n as number;
  });
}

/** Lines the CLI prints to stderr when a step ends ("  → done: …"). */
const stepEnds = (stderr: string) => (stderr.match(/^ {2}→ /gm) ?? []).length;

/**
 * Starts `mgr upgrade` and SIGKILLs it the moment `until` holds: checked on every chunk of
 * stderr (a step just ended) and every few ms. Returns whether it was killed or finished.
 */
async function upgradeKilledWhen(sb: TestSandbox, until: (stderr: string) => Promise<boolean>): Promise<'killed' | 'finished'> {
  const child = spawnMgr(['-f', sb.managerToml, 'upgrade', '--yes', '--no-backup', '--no-schedule']);
  let stderr = '';
  let exited = false;
  let killed = false;
  const check = async () => {
    if (!killed && !exited && (await until(stderr))) {
      killed = true;
      child.kill('SIGKILL');
    }
  };
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    void check();
  });
  void child.result.then(() => (exited = true));
  while (!exited) {
    await check();
    await new Promise((r) => setTimeout(r, 5));
  }
  const r = await child.result;
  if (!killed) expect(r.code, r.stderr).toBe(0);
  return killed ? 'killed' : 'finished';
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
    if ((await upgradeKilledWhen(crashed, async () => (await imageBatchesDone(crashStores)) >= 1)) === 'killed') kills.push('inside images-from-etcd');
    // Then at each step boundary in turn: each rerun skips what is done and dies after one more step.
    for (let i = 0; i < 40; i++) {
      const outcome = await upgradeKilledWhen(crashed, async (stderr) => stepEnds(stderr) >= 1 && /→ (done|skipped)/.test(stderr));
      if (outcome === 'finished') break;
      kills.push(`boundary ${i + 1}`);
    }
    // Fast steps can end together before the kill lands; most boundaries are still hit one by one.
    expect(kills.length, kills.join(', ')).toBeGreaterThanOrEqual(10);
    const last = await runMgr(upgradeArgs(crashed));
    expect(last.code, last.stderr).toBe(0);
    expect(await detectRelease(crashStores.pg)).toMatchObject({ revision: '81c264528f20' });
    const keys = async (st: Stores) =>
      (await st.etcd.getFlat('')).filter((kv) => !kv.key.startsWith('mgr/') && kv.key !== 'config/redis/addr').map((kv) => `${kv.key}=${kv.value}`);
    const [mine, theirs] = [await keys(crashStores), await keys(refStores)];
    expect(mine.filter((k) => !theirs.includes(k))).toEqual(theirs.filter((k) => !mine.includes(k)));
    const got = await fingerprint(crashStores);
    const differing = Object.keys(expected.postgres).filter((t) => JSON.stringify(got.postgres[t]) !== JSON.stringify(expected.postgres[t]));
    expect(differing, `kills: ${kills.join(', ')}`).toEqual([]);
    expect(got).toEqual(expected);
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
    const odd = results.filter((r) => r.code !== EXIT.ok && r.code !== EXIT.lockBusy);
    expect(odd.map((r) => r.stderr + r.stdout)).toEqual([]);
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
