import { readFileSync } from 'node:fs';
import { decode } from '@msgpack/msgpack';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MgrError } from '../../src/errors.js';
import { openEtcd, openPg, openStores, REDIS_DB, type Stores } from '../../src/stores/index.js';
import { pgClientConfig } from '../../src/stores/pg.js';
import { BASELINE_FILE, baselineSql, schemaAt518, seedInstallation, type SeedSummary } from '../../src/sandbox/seed.js';
import { etcdImageKeys, generateSeedImages, type SeedImage } from '../../src/sandbox/seed-etcd-images.js';
import { Rng } from '../../src/sandbox/seed-random.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

/** Catalog facts compared between databases: columns, constraints, indexes and enum labels. */
async function catalog(client: pg.ClientBase): Promise<Record<string, string[]>> {
  const q = async (sql: string) => (await client.query<{ x: string }>(sql)).rows.map((r) => r.x);
  return {
    columns: await q(`SELECT c.relname || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') AS x
      FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1`),
    constraints: await q(`SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid) AS x FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1`),
    indexes: await q(`SELECT indexdef AS x FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1`),
    enums: await q(`SELECT t.typname || ': ' || string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) AS x FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid GROUP BY t.typname ORDER BY 1`),
  };
}

describe('seeded 21.03 installation on real stores', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let summary: SeedSummary;
  const now = new Date('2022-06-01T12:00:00Z');

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    summary = await seedInstallation(stores, { seed: 7, kernels: 3_000, images: 500, keypairs: 12, agents: 6, now });
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('writes the row counts it reports, for every table', async () => {
    expect(summary.counts.kernels).toBe(3_000);
    expect(summary.counts.keypairs).toBe(12);
    expect(summary.counts.agents).toBe(6);
    for (const table of ['domains', 'groups', 'users', 'keypair_resource_policies', 'scaling_groups', 'sgroups_for_domains', 'resource_presets', 'session_templates', 'vfolders', 'vfolder_attachment', 'session_dependencies', 'error_logs', 'association_groups_users']) {
      expect(summary.counts[table], table).toBeGreaterThan(0);
    }
    await stores.pg.withClient(async (c) => {
      for (const [table, n] of Object.entries(summary.counts)) {
        const r = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
        expect(r.rows[0]!.n, table).toBe(n);
      }
      const d = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM domains WHERE name = 'default' AND dotfiles = '\\x90'::bytea`);
      expect(d.rows[0]!.n).toBe(1);
      const roles = await c.query<{ role: string }>(`SELECT DISTINCT role::text FROM users`);
      expect(roles.rows.map((r) => r.role)).toContain('superadmin');
    });
  });

  it('catalog equals Backend.AI’s own 8679d0a7e22b dump, with its alembic_version row', async () => {
    const fixture = readFileSync(BASELINE_FILE, 'utf8');
    const admin = new pg.Client({ ...pgClientConfig(sb.config.db), database: 'postgres' });
    await admin.connect();
    await admin.query('CREATE DATABASE fixture_8679');
    await admin.end();
    const ref = openPg({ ...sb.config.db, name: 'fixture_8679' });
    try {
      const expected = await ref.withClient(async (c) => {
        await c.query(fixture);
        return catalog(c);
      });
      const actual = await stores.pg.withClient((c) => catalog(c));
      expect(actual).toEqual(expected);
      expect(actual.enums).toContain('kernelstatus: PENDING,SCHEDULED,PREPARING,BUILDING,PULLING,RUNNING,RESTARTING,RESIZING,SUSPENDED,TERMINATING,TERMINATED,ERROR,CANCELLED');
      const rows = await stores.pg.withClient((c) => c.query('SELECT version_num FROM alembic_version'));
      expect(rows.rows).toEqual([{ version_num: '8679d0a7e22b' }]);
    } finally {
      await ref.close();
    }
  });

  it('keeps keypairs.concurrency_used equal to the recount of resource-occupying kernel rows', async () => {
    const r = await stores.pg.withClient((c) =>
      c.query<{ access_key: string; concurrency_used: number; n: number }>(
        `SELECT k.access_key, k.concurrency_used, (SELECT count(*)::int FROM kernels WHERE access_key = k.access_key
           AND status NOT IN ('TERMINATING', 'TERMINATED', 'PENDING', 'CANCELLED')) AS n FROM keypairs k`,
      ),
    );
    expect(r.rows).toHaveLength(12);
    for (const row of r.rows) expect(row.concurrency_used, row.access_key).toBe(row.n);
    expect(r.rows.reduce((s, x) => s + x.n, 0)).toBeGreaterThan(50);
  });

  it('spreads kernels like a real year: terminal ones over the past year, ~3% live with NULL terminated_at', async () => {
    const r = await stores.pg.withClient((c) =>
      c.query<{ status: string; n: number; with_end: number; oldest: Date | null; newest: Date | null }>(
        `SELECT status::text, count(*)::int AS n, count(terminated_at)::int AS with_end, min(terminated_at) AS oldest, max(terminated_at) AS newest FROM kernels GROUP BY status`,
      ),
    );
    const by = Object.fromEntries(r.rows.map((x) => [x.status, x]));
    for (const s of ['RUNNING', 'PENDING', 'SCHEDULED', 'PREPARING', 'TERMINATING']) {
      expect(by[s]?.n, s).toBeGreaterThan(0);
      expect(by[s]!.with_end, s).toBe(0);
    }
    expect(by.RUNNING!.n).toBeGreaterThanOrEqual(80);
    expect(by.RUNNING!.n).toBeLessThanOrEqual(100);
    for (const s of ['TERMINATED', 'CANCELLED', 'ERROR']) {
      expect(by[s]!.with_end, s).toBe(by[s]!.n);
      expect(by[s]!.oldest!.getTime()).toBeGreaterThanOrEqual(now.getTime() - 366 * 86_400_000);
      expect(by[s]!.newest!.getTime()).toBeLessThan(now.getTime());
    }
    const mid = await stores.pg.withClient((c) =>
      c.query<{ n: number }>(`SELECT count(*)::int AS n FROM kernels WHERE terminated_at < $1`, [new Date(now.getTime() - 183 * 86_400_000)]),
    );
    expect(mid.rows[0]!.n / by.TERMINATED!.n).toBeGreaterThan(0.4); // uniform: about half is older than half a year
    const main = await stores.pg.withClient((c) => c.query<{ bad: number }>(`SELECT count(*)::int AS bad FROM kernels WHERE cluster_role = 'main' AND session_id <> id`));
    expect(main.rows[0]!.bad).toBe(0);
    const future = await stores.pg.withClient((c) =>
      c.query<{ n: number }>(`SELECT count(*)::int AS n FROM kernels WHERE greatest(created_at, status_changed, terminated_at) > $1 OR created_at > coalesce(terminated_at, created_at)`, [now]),
    );
    expect(future.rows[0]!.n).toBe(0);
  });

  it('writes the 21.03 image layout in etcd exactly, for a sample image and its alias', async () => {
    const tag = 'images/cr.backend.ai/stable%2Fpython/3.9-ubuntu20.04';
    const kvs = Object.fromEntries((await stores.etcd.getFlat(tag)).map((kv) => [kv.key, kv.value]));
    expect(kvs[tag]).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(kvs[`${tag}/size_bytes`]).toMatch(/^\d+$/);
    expect(kvs[`${tag}/labels/ai.backend.kernelspec`]).toBe('1');
    expect(kvs[`${tag}/labels/ai.backend.base-distro`]).toBe('ubuntu20.04');
    expect(kvs[`${tag}/labels/ai.backend.runtime-type`]).toBe('python');
    expect(kvs[`${tag}/labels/ai.backend.runtime-path`]).toBe('/usr/bin/python3');
    expect(kvs[`${tag}/resource/cpu/min`]).toBe(kvs[`${tag}/labels/ai.backend.resource.min.cpu`]);
    expect(kvs[`${tag}/resource/mem/min`]).toBe(kvs[`${tag}/labels/ai.backend.resource.min.mem`]);
    expect(kvs[`${tag}/accels`]).toBeUndefined();
    const allowed = /^(|\/size_bytes|\/labels\/[a-z.-]+|\/resource\/[a-z.]+\/(min|max))$/;
    for (const k of Object.keys(kvs)) expect(k.slice(tag.length), k).toMatch(allowed);
    expect(await stores.etcd.get('images/cr.backend.ai/stable%2Fpython')).toBe('1');
    expect(await stores.etcd.get('images/_aliases/python')).toBe('cr.backend.ai/stable/python:3.9-ubuntu20.04');

    const gpu = Object.fromEntries((await stores.etcd.getFlat('images/cr.backend.ai/ngc%2Fpytorch/20.01-py3')).map((kv) => [kv.key.split('20.01-py3')[1], kv.value]));
    expect(gpu['/accels']).toBe('cuda');
    expect(gpu['/labels/ai.backend.accelerators']).toBe('cuda');
    expect(gpu['/resource/cuda.device/min']).toBe('1');
    // a registry name with a port is quoted (":" → %3A); the tag is not
    expect(await stores.etcd.get('images/localhost%3A5000/custom%2Flab-env')).toBe('1');
    expect(await stores.etcd.get('images/localhost%3A5000/custom%2Flab-env/1.0-centos7.6')).toMatch(/^sha256:/);

    const imageKeys = await stores.etcd.count('images/');
    const configKeys = await stores.etcd.count('config/');
    expect(imageKeys + configKeys).toBe(summary.etcdKeys);
    expect(await stores.etcd.count('images/_aliases/')).toBe(summary.aliases);
    expect(summary.imageTags).toBe(500);
    expect(summary.aliases).toBeGreaterThan(25);
    expect(await stores.etcd.count('nodes/manager/')).toBe(0);
    expect(await stores.etcd.get('config/redis/addr')).toBe(`127.0.0.1:${sb.redis.port}`);
    expect(await stores.etcd.get('config/docker/registry/cr.backend.ai')).toBe('https://cr.backend.ai');
    expect(await stores.etcd.get('config/docker/registry/cr.backend.ai/type')).toBe('harbor2');
  });

  it('etcdImageKeys lists exactly the keys of backend-ai.md §2.3 for one image', () => {
    const img: SeedImage = {
      registry: 'localhost:5000',
      image: 'ngc/pytorch',
      tag: '21.03-py3',
      digest: 'sha256:' + 'a'.repeat(64),
      sizeBytes: 123,
      labels: { 'ai.backend.kernelspec': '1', 'ai.backend.accelerators': 'cuda', 'ai.backend.resource.min.cuda.device': '1' },
      resources: { 'cuda.device': { min: '1', max: '2' } },
      aliases: ['pytorch:21.03'],
    };
    const base = 'images/localhost%3A5000/ngc%2Fpytorch';
    expect(etcdImageKeys(img)).toEqual([
      { key: base, value: '1' },
      { key: `${base}/21.03-py3`, value: img.digest },
      { key: `${base}/21.03-py3/size_bytes`, value: '123' },
      { key: `${base}/21.03-py3/labels/ai.backend.kernelspec`, value: '1' },
      { key: `${base}/21.03-py3/labels/ai.backend.accelerators`, value: 'cuda' },
      { key: `${base}/21.03-py3/labels/ai.backend.resource.min.cuda.device`, value: '1' },
      { key: `${base}/21.03-py3/accels`, value: 'cuda' },
      { key: `${base}/21.03-py3/resource/cuda.device/min`, value: '1' },
      { key: `${base}/21.03-py3/resource/cuda.device/max`, value: '2' },
      { key: 'images/_aliases/pytorch%3A21.03', value: 'localhost:5000/ngc/pytorch:21.03-py3' },
    ]);
  });

  it('generates the same images for the same seed', () => {
    const a = [...generateSeedImages(new Rng(3), { count: 60 })];
    const b = [...generateSeedImages(new Rng(3), { count: 60 })];
    expect(a).toEqual(b);
    expect(new Set(a.map((i) => `${i.registry}/${i.image}:${i.tag}`)).size).toBe(60);
  });

  it('leaves the Redis keys agents leave: msgpack stat keys without TTL, old agent.last_seen, session last_access', async () => {
    const db0 = await stores.redis.db(REDIS_DB.stat);
    const db2 = await stores.redis.db(REDIS_DB.live);
    const running = await stores.pg.withClient((c) => c.query<{ id: string }>(`SELECT id FROM kernels WHERE status = 'RUNNING' LIMIT 1`));
    const id = running.rows[0]!.id;
    const raw = await db0.getBuffer(id);
    expect(raw).not.toBeNull();
    const stat = decode(raw!) as Record<string, Record<string, string | null>>;
    expect(Object.keys(stat)).toEqual(expect.arrayContaining(['cpu_util', 'mem']));
    expect(stat.cpu_util!.unit_hint).toBe('percent');
    expect(Number(stat.mem!.capacity)).toBeGreaterThan(0);
    expect(await db0.ttl(id)).toBe(-1);
    const old = await stores.pg.withClient((c) =>
      c.query<{ id: string }>(`SELECT id FROM kernels WHERE terminated_at < $1 LIMIT 1`, [new Date(now.getTime() - 120 * 86_400_000)]),
    );
    expect(await db0.exists(old.rows[0]!.id)).toBe(0);

    const seen = await db2.hgetall('agent.last_seen');
    expect(Object.keys(seen).sort()).toEqual(['i-node001', 'i-node002', 'i-node003', 'i-node004', 'i-node005', 'i-node006']);
    for (const t of Object.values(seen)) expect(Number(t)).toBeLessThan(now.getTime() / 1000 - 86_400);
    expect(await db2.exists(`session.${id}.last_access`)).toBe(1);

    const sizes = await Promise.all([0, 1, 2, 3, 4].map(async (n) => (await stores.redis.db(n)).dbsize()));
    expect(sizes.reduce((s, n) => s + n, 0)).toBe(summary.redisKeys);
  });

  it('refuses to seed over an existing installation', async () => {
    const err = await seedInstallation(stores, { kernels: 10 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MgrError);
    expect((err as MgrError).code).toBe('refused');
  });

  it('builds the 21.03.0-21.03.2 variant (518ecf41f567): no SCHEDULED, old unique index, its own alembic row', async () => {
    const sql = baselineSql('518ecf41f567');
    expect(sql).not.toContain("'SCHEDULED'");
    const admin = new pg.Client({ ...pgClientConfig(sb.config.db), database: 'postgres' });
    await admin.connect();
    await admin.query('CREATE DATABASE head_518');
    await admin.end();
    const config = { ...sb.config, db: { ...sb.config.db, name: 'head_518' }, etcd: { ...sb.config.etcd, namespace: 'old' } };
    const etcd = openEtcd(config);
    await etcd.put('config/redis/addr', `127.0.0.1:${sb.redis.port}`);
    etcd.close();
    const old = await openStores(config);
    try {
      const s = await seedInstallation(old, { seed: 2, kernels: 400, images: 20, head: '518ecf41f567', now });
      expect(s.head).toBe('518ecf41f567');
      const cat = await old.pg.withClient((c) => catalog(c));
      expect(cat.enums).toContain('kernelstatus: PENDING,PREPARING,BUILDING,PULLING,RUNNING,RESTARTING,RESIZING,SUSPENDED,TERMINATING,TERMINATED,ERROR,CANCELLED');
      expect(cat.indexes.find((i) => i.includes('ix_kernels_unique_sess_token'))).toContain('(access_key, session_id)');
      const rows = await old.pg.withClient((c) => c.query('SELECT version_num FROM alembic_version'));
      expect(rows.rows).toEqual([{ version_num: '518ecf41f567' }]);
      const sched = await old.pg.withClient((c) => c.query(`SELECT count(*)::int AS n FROM kernels WHERE status::text = 'SCHEDULED'`));
      expect(sched.rows[0].n).toBe(0);
    } finally {
      await old.close();
    }
  });

  it('refuses to derive the 518ecf41f567 schema from a baseline that no longer has the text it replaces', () => {
    const sql = baselineSql('8679d0a7e22b');
    expect(() => schemaAt518(sql)).not.toThrow();
    expect(() => schemaAt518(sql.replace("    'SCHEDULED',\n", ''))).toThrow(/exactly one/);
    expect(() => schemaAt518(sql.replace('(access_key, session_name)', '(session_name, access_key)'))).toThrow(/ix_kernels_unique_sess_token/);
    expect(() => schemaAt518(sql + "\nINSERT INTO public.alembic_version (version_num) VALUES ('8679d0a7e22b');")).toThrow(/alembic_version/);
  });
});
