import { readFileSync } from 'node:fs';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { fingerprint } from '../helpers/fingerprint.js';
import type { Stores } from '../../src/stores/index.js';
import { seedInstallation, type SeedSummary } from '../../src/sandbox/seed.js';
import { upgradeStatus } from '../../src/engine/status.js';
import { runUpgrade, type RunUpgradeOptions } from '../../src/engine/runner.js';
import { detectRelease } from '../../src/engine/detect.js';
import { readCatalog, diffCatalogs } from '../../src/schema/catalog.js';
import { MgrError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { CONCURRENCY_KEY_PREFIX, NON_OCCUPYING_STATUSES } from '../../src/upgrades/keypair-concurrency.js';
import { defaultUpgradeOptions, type UpgradeOptions } from '../../src/engine/types.js';
import path from 'node:path';

/** Flags as `mgr upgrade --no-schedule` would pass them; the manager.toml edited is the sandbox's. */
export function testUpgradeOptions(sb: TestSandbox): UpgradeOptions {
  return defaultUpgradeOptions({ noSchedule: true, cronFile: path.join(sb.dir, 'cron.d-mgr-clear-history'), managerTomlPath: sb.managerToml });
}

function opts(sb: TestSandbox, extra: Partial<RunUpgradeOptions> = {}): RunUpgradeOptions {
  return { backup: false, options: testUpgradeOptions(sb), log: silentLogger, ...extra };
}

/** The 22.03 catalog Backend.AI's own alembic produces (shared/reference/schema-dumps). */
async function referenceCatalog(sb: TestSandbox) {
  const admin = new pg.Client({ ...sb.pg.endpoint, database: 'postgres' });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS ref2203');
  await admin.query('CREATE DATABASE ref2203');
  await admin.end();
  const c = new pg.Client({ ...sb.pg.endpoint, database: 'ref2203' });
  await c.connect();
  try {
    await c.query(readFileSync('test/fixtures/schema-dumps/22.03-81c264528f20-upgraded.sql', 'utf8'));
    return await readCatalog(c);
  } finally {
    await c.end();
  }
}

describe('mgr upgrade of a seeded 21.03 installation (8679d0a7e22b) to 22.03', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let seeded: SeedSummary;
  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    seeded = await seedInstallation(stores, { kernels: 3000, images: 300, keypairs: 40, seed: 11 });
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('--dry-run lists every step with its SQL and writes nothing to any store', async () => {
    const before = await fingerprint(stores);
    const report = await runUpgrade(stores, opts(sb, { dryRun: true }));
    expect(report.modules).toEqual(['21.09', '22.03']);
    const ids = report.steps.map((s) => s.id);
    expect(ids).toContain('22.03/d59ff89e7514');
    expect(ids.indexOf('22.03/keypair-concurrency-to-redis')).toBeLessThan(ids.indexOf('22.03/d59ff89e7514'));
    const drop = report.steps.find((s) => s.id === '22.03/d59ff89e7514')!;
    expect(drop.changes![0]!.detail).toContain('ALTER TABLE keypairs DROP COLUMN concurrency_used');
    expect(await fingerprint(stores)).toEqual(before);
    const schemas = await stores.pg.withClient((c) => c.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'mgr'`));
    expect(schemas.rowCount).toBe(0);
  });

  it('refuses while an agent heartbeats, naming it and how it decided', async () => {
    const live = await stores.redis.db(2);
    const agent = (await stores.pg.withClient((c) => c.query<{ id: string }>('SELECT id FROM agents LIMIT 1'))).rows[0]!.id;
    const old = await live.hget('agent.last_seen', agent);
    await live.hset('agent.last_seen', agent, String(Date.now() / 1000));
    try {
      const err = await runUpgrade(stores, opts(sb)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(MgrError);
      expect((err as MgrError).code).toBe('refused');
      expect((err as MgrError).message).toContain(agent);
      expect((err as MgrError).message).toContain('agent.last_seen');
    } finally {
      if (old === null) await live.hdel('agent.last_seen', agent);
      else await live.hset('agent.last_seen', agent, old);
    }
    expect((await detectRelease(stores.pg)).kind === 'known' && (await detectRelease(stores.pg))).toMatchObject({ revision: '8679d0a7e22b' });
  });

  it('reaches 22.03 with every row kept, counters in Redis, and the catalog Backend.AI 22.03 has', async () => {
    const rowsBefore = await stores.pg.withClient(async (c) => {
      const out: Record<string, number> = {};
      for (const t of ['kernels', 'keypairs', 'agents', 'users', 'groups', 'domains', 'scaling_groups', 'session_dependencies', 'vfolder_attachment', 'keypair_resource_policies']) {
        out[t] = Number((await c.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n);
      }
      return out;
    });
    const expectedCounts = await stores.pg.withClient(async (c) =>
      (
        await c.query<{ access_key: string; n: number }>(
          `SELECT k.access_key, count(x.id)::int AS n FROM keypairs k LEFT JOIN kernels x ON x.access_key = k.access_key AND x.status::text <> ALL ($1::text[]) GROUP BY 1`,
          [NON_OCCUPYING_STATUSES],
        )
      ).rows,
    );
    expect(expectedCounts.some((r) => r.n > 0)).toBe(true);

    const report = await runUpgrade(stores, opts(sb));
    expect(report.steps.filter((s) => s.status === 'failed')).toEqual([]);

    const detected = await detectRelease(stores.pg);
    expect(detected).toMatchObject({ kind: 'known', revision: '81c264528f20', pending: [] });

    const diff = await stores.pg.withClient(async (c) => diffCatalogs(await readCatalog(c), await referenceCatalog(sb)));
    expect(diff).toEqual([]);

    for (const [t, n] of Object.entries(rowsBefore)) {
      expect(Number((await stores.pg.withClient((c) => c.query(`SELECT count(*) AS n FROM ${t}`))).rows[0].n), t).toBe(n);
    }
    const arch = await stores.pg.withClient((c) => c.query(`SELECT count(*) AS n FROM kernels WHERE architecture <> 'x86_64'`));
    expect(Number(arch.rows[0].n)).toBe(0);

    const redis = await stores.redis.db(0);
    for (const { access_key, n } of expectedCounts) {
      expect(await redis.get(CONCURRENCY_KEY_PREFIX + access_key), access_key).toBe(String(n));
    }
    // Every etcd tag became an image row or a quarantine row, and the step's warnings are kept.
    const tags = seeded.imageTags;
    const images = Number((await stores.pg.withClient((c) => c.query('SELECT count(*) AS n FROM images'))).rows[0].n);
    const quarantined = Number((await stores.pg.withClient((c) => c.query('SELECT count(*) AS n FROM mgr.image_quarantine'))).rows[0].n);
    expect(images).toBeGreaterThan(0);
    expect(images + quarantined).toBe(tags);
    const recorded = (await upgradeStatus(stores)).steps.find((s) => s.stepId === '22.03/images-from-etcd')!;
    expect(recorded.warnings.length).toBe(report.steps.find((s) => s.id === '22.03/images-from-etcd')!.warnings.length);
    // Maintenance was on during the run and is off again, manager/status as before.
    expect(await stores.etcd.get('mgr/maintenance')).toBeNull();
  });

  it('a second run finds nothing to do and changes nothing', async () => {
    const before = await fingerprint(stores);
    const report = await runUpgrade(stores, opts(sb));
    expect(report.modules).toEqual([]);
    expect(await fingerprint(stores)).toEqual(before);
  });

  it('refuses when an applied migration file no longer matches its recorded checksum', async () => {
    const name = '22.03/015d84d5a5ef_add_image_table';
    const orig = await stores.pg.withClient((c) => c.query('SELECT checksum FROM mgr.schema_migrations WHERE name = $1', [name]));
    expect(orig.rowCount).toBe(1);
    // Equivalent, from the runner's point of view, to editing the file after it was applied.
    await stores.pg.withClient((c) => c.query(`UPDATE mgr.schema_migrations SET checksum = repeat('0', 64) WHERE name = $1`, [name]));
    try {
      const err = await runUpgrade(stores, opts(sb)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MgrError);
      expect((err as MgrError).code).toBe('integrity');
      expect((err as MgrError).message).toContain('015d84d5a5ef_add_image_table.sql');
    } finally {
      await stores.pg.withClient((c) => c.query('UPDATE mgr.schema_migrations SET checksum = $2 WHERE name = $1', [name, orig.rows[0].checksum]));
    }
  });
});

describe('mgr upgrade of a 21.03.0-21.03.2 database (518ecf41f567)', () => {
  let sb: TestSandbox;
  let stores: Stores;
  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await seedInstallation(stores, { kernels: 500, images: 20, keypairs: 10, seed: 5, head: '518ecf41f567' });
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('--to 21.09 adds SCHEDULED by a new type and moves the unique index to session_name, keeping every kernel status', async () => {
    const statuses = await stores.pg.withClient((c) => c.query(`SELECT status::text AS s, count(*)::int AS n FROM kernels GROUP BY 1 ORDER BY 1`));
    const report = await runUpgrade(stores, opts(sb, { to: '21.09' }));
    expect(report.steps.map((s) => s.id)).toEqual(['21.09/8679d0a7e22b', '21.09/60a1effa77d2']);
    const d = await detectRelease(stores.pg);
    expect(d).toMatchObject({ kind: 'known', revision: '60a1effa77d2', reached: '21.09', pending: ['22.03'] });
    await stores.pg.withClient(async (c) => {
      const labels = await c.query(`SELECT string_agg(enumlabel, ',' ORDER BY enumsortorder) AS l FROM pg_enum WHERE enumtypid = 'kernelstatus'::regtype`);
      expect(labels.rows[0].l).toBe('PENDING,SCHEDULED,PREPARING,BUILDING,PULLING,RUNNING,RESTARTING,RESIZING,SUSPENDED,TERMINATING,TERMINATED,ERROR,CANCELLED');
      const idx = await c.query(`SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_kernels_unique_sess_token'`);
      expect(idx.rows[0].indexdef).toContain('(access_key, session_name)');
      const after = await c.query(`SELECT status::text AS s, count(*)::int AS n FROM kernels GROUP BY 1 ORDER BY 1`);
      expect(after.rows).toEqual(statuses.rows);
    });
  });
});
