import { mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, TEST_SANDBOX_PREFIX, type TestSandbox } from '../helpers/sandbox.js';
import { etcdChecksum, pgChecksums, redisChecksums, redisTtls } from '../helpers/checksums.js';
import type { Stores } from '../../src/stores/index.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { createBackup, rehearseUpgrade, type RehearsalEvent } from '../../src/backup/index.js';
import { detectRelease } from '../../src/engine/detect.js';

async function sums(stores: Stores) {
  return {
    pg: await stores.pg.withClient(pgChecksums),
    etcd: await etcdChecksum(stores.etcd),
    redis: await redisChecksums(stores.redis, { ttl: 'presence' }),
    ttls: await redisTtls(stores.redis),
    at: Date.now(),
  };
}

/** Equal data, and every TTL only ran down with the clock (none was set again). */
function expectUntouched(after: Awaited<ReturnType<typeof sums>>, before: Awaited<ReturnType<typeof sums>>): void {
  expect({ pg: after.pg, etcd: after.etcd, redis: after.redis }).toEqual({ pg: before.pg, etcd: before.etcd, redis: before.redis });
  const elapsed = after.at - before.at;
  for (const [db, keys] of Object.entries(before.ttls)) {
    expect(Object.keys(after.ttls[Number(db)]!).sort()).toEqual(Object.keys(keys).sort());
    for (const [k, ttl] of Object.entries(keys)) expect(Math.abs(ttl - after.ttls[Number(db)]![k]! - elapsed)).toBeLessThan(1_000);
  }
}

describe('mgr upgrade rehearse', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let work: string;

  beforeAll(async () => {
    sb = await startTestSandbox({ redisPassword: 'rehearse-redis-pw' });
    stores = await sb.openStores();
    work = await mkdtemp(TEST_SANDBOX_PREFIX + 'rehearse-');
    await seedInstallation(stores, { kernels: 300, images: 20, keypairs: 8, agents: 3 });
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });

  it('upgrades a fresh copy of a seeded 21.03 installation, reports each step, and leaves the source as it was', async () => {
    const before = await sums(stores);
    const events: RehearsalEvent[] = [];
    const report = await rehearseUpgrade(sb.config, { workDir: work, onEvent: (e) => events.push(e) });

    expect(report.failure).toBeUndefined();
    expect(report.ok).toBe(true);
    expect(report.source).toMatchObject({ kind: 'fresh-backup', release: '21.03' });
    expect(report.steps.length).toBeGreaterThan(3);
    for (const s of report.steps) {
      expect(s.status).toMatch(/^(done|skipped)$/);
      expect(s.durationMs).toBeGreaterThanOrEqual(0);
      expect(Array.isArray(s.warnings)).toBe(true);
    }
    expect(report.steps.map((s) => s.module)).toEqual(expect.arrayContaining(['21.09', '22.03']));
    expect(Object.keys(report.phases)).toEqual(['backup', 'sandbox', 'restore', 'upgrade', 'cleanup']);
    expect(report.totalMs).toBeGreaterThan(0);
    expect(events.filter((e) => e.type === 'phase').map((e) => (e as { phase: string }).phase)).toEqual(['backup', 'sandbox', 'restore', 'upgrade', 'cleanup']);

    // production untouched, and still at 21.03; the sandbox and the temporary backup are gone
    expectUntouched(await sums(stores), before);
    const detected = await detectRelease(stores.pg);
    expect(detected.kind === 'known' && detected.reached).toBe('21.03');
    expect(await readdir(work)).toEqual([]);
  });

  it('rehearses from an existing bundle without reading the source stores', async () => {
    const bundle = await createBackup(stores, { outDir: path.join(work, 'bundles') });
    const before = await sums(stores);
    // a config whose stores do not exist: the rehearsal must not need them
    const unreachable = { ...sb.config, db: { ...sb.config.db, port: 1 }, etcd: { ...sb.config.etcd, port: 1 } };
    const report = await rehearseUpgrade(unreachable, { fromBackup: bundle.path, workDir: work, to: '21.09' });
    expect(report.ok).toBe(true);
    expect(report.source).toMatchObject({ kind: 'backup', bundle: bundle.path, release: '21.03' });
    expect(new Set(report.steps.map((s) => s.module))).toEqual(new Set(['21.09']));
    expect(report.phases.backup).toBeUndefined();
    expect(await readdir(bundle.path)).not.toContain('restore-state.json'); // the operator's bundle is left as it was
    expectUntouched(await sums(stores), before);
  });
});
