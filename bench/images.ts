import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type pg from 'pg';
import { localConfigFromText } from '../src/config/manager-toml.js';
import { PACKAGE_ROOT } from '../src/paths.js';
import { startSandbox } from '../src/sandbox/index.js';
import { copyLine, copyRows } from '../src/sandbox/seed-copy.js';
import { Rng } from '../src/sandbox/seed-random.js';
import { generateSeedImages, imageRef, writeEtcdImages, type SeedImage } from '../src/sandbox/seed-etcd-images.js';
import { EtcdStore, openStores, quote, type Stores } from '../src/stores/index.js';
import { runBackgroundMigrations } from '../src/bbm/index.js';
import { enqueueImagesFromEtcd, IMAGES_FROM_ETCD, upsertImages } from '../src/images/etcd-migration.js';
import type { EtcdImageRow } from '../src/images/etcd-layout.js';
import { median, runCommand } from './measure.js';

/**
 * images_from_etcd on N seeded 21.03 image tags (about 13 etcd keys each, a tenth with an alias,
 * some with a hand-set max), against a floor measured in the same run on the same stores:
 *  - floor = a raw read of every key under images/ (unsorted range reads of 10,000 keys at one
 *    pinned revision, values discarded) + one COPY of the same rows into an empty images table;
 *  - migration = enqueue (the counting scan) + `runBackgroundMigrations` to the end (2 workers,
 *    as the 22.03 step runs it inline), integrity check included.
 * Both run in child processes of their own so their peak RSS (VmHWM) is comparable; comparing the
 * migration's peak RSS at 10,000 and 100,000 tags shows whether memory stays flat.
 * Also measured: the three ways to write one batch of rows (multi-row VALUES, one jsonb
 * parameter, COPY into a temp table + merge), into an empty table and over existing rows.
 */

const SEED = 20210309;
const COLUMNS = ['name', 'image', 'tag', 'registry', 'architecture', 'config_digest', 'size_bytes', 'type', 'accelerators', 'labels', 'resources'] as const;

export interface SizeResult {
  tags: number;
  etcdKeys: number;
  aliases: number;
  seedMs: number;
  floor: { etcdReadMs: number; copyMs: number; totalMs: number; peakRssMiB: number };
  migration: { enqueueMs: number; runMs: number; totalMs: number; peakRssMiB: number; workers: number };
  /** migration total / floor total. */
  ratioToFloor: number;
}

export interface UpsertComparison {
  rows: number;
  batchRows: number;
  /** ms to write all rows in batches, into an empty table / over the same rows again (updates). */
  valuesParams: { insertMs: number; updateMs: number };
  jsonbRecordset: { insertMs: number; updateMs: number };
  copyMerge: { insertMs: number; updateMs: number };
}

export interface ImageBenchResults {
  sizes: SizeResult[];
  upsert: UpsertComparison;
  /** Peak RSS of the migration at the largest size / at the smallest. */
  rssGrowth: number;
}

/** The images row of a seeded tag, as the migration writes it. */
function rowOf(s: SeedImage): EtcdImageRow {
  return {
    name: imageRef(s),
    image: s.image,
    tag: s.tag,
    registry: s.registry,
    architecture: 'x86_64',
    config_digest: s.digest,
    size_bytes: String(s.sizeBytes),
    accelerators: s.labels['ai.backend.accelerators'] ?? null,
    labels: s.labels,
    resources: Object.fromEntries(Object.entries(s.resources).map(([k, v]) => [k, { min: v.min, max: v.max ?? null }])),
  };
}

function copyLineOf(r: EtcdImageRow): string {
  return copyLine([r.name, r.image, r.tag, r.registry, r.architecture, r.config_digest, r.size_bytes, 'COMPUTE', r.accelerators, JSON.stringify(r.labels), JSON.stringify(r.resources)]);
}

async function prepareStores(managerToml: string): Promise<Stores> {
  const config = localConfigFromText(readFileSync(managerToml, 'utf8'), managerToml);
  return openStores(config);
}

// ---- child-process modes: each measured on its own for wall time and peak RSS ----

/** The floor: every key under images/ read once (paged, pinned), then one COPY of the rows. */
async function floorChild(managerToml: string, tags: number): Promise<{ etcdReadMs: number; copyMs: number; keys: number }> {
  const stores = await prepareStores(managerToml);
  try {
    await stores.pg.pool.query('TRUNCATE images CASCADE');
    const etcd = stores.etcd;
    const revision = await etcd.revision();
    const t0 = performance.now();
    let keys = 0;
    let start = etcd.abs('images/');
    for (;;) {
      const res = await etcd.client.kv.range({ key: Buffer.from(start), range_end: Buffer.from(etcd.abs('images0')), limit: '10000', revision });
      keys += res.kvs.length;
      if (!res.more || !res.kvs.length) break;
      start = res.kvs[res.kvs.length - 1]!.key.toString() + '\0';
    }
    const etcdReadMs = performance.now() - t0;
    const t1 = performance.now();
    await stores.pg.withClient(async (c) => {
      function* lines() {
        for (const s of generateSeedImages(new Rng(SEED), { count: tags })) yield copyLineOf(rowOf(s));
      }
      await copyRows(c, 'images', COLUMNS, lines());
    });
    return { etcdReadMs, copyMs: performance.now() - t1, keys };
  } finally {
    await stores.close();
  }
}

/** The migration as the 22.03 step runs it inline: enqueue (count scan, fences), then 2 workers to the end. */
async function migrateChild(managerToml: string, workers: number): Promise<{ enqueueMs: number; runMs: number }> {
  const stores = await prepareStores(managerToml);
  try {
    await stores.pg.pool.query('TRUNCATE images CASCADE');
    const t0 = performance.now();
    await enqueueImagesFromEtcd(stores);
    const enqueueMs = performance.now() - t0;
    const t1 = performance.now();
    const s = await runBackgroundMigrations(stores, { names: [IMAGES_FROM_ETCD], workers });
    if (s.outcome !== 'finished') throw new Error(`migration ended ${s.outcome}: ${s.migrations[0]?.failureError}`);
    return { enqueueMs, runMs: performance.now() - t1 };
  } finally {
    await stores.close();
  }
}

// ---- the three ways to write a batch ----

async function valuesParamsUpsert(c: pg.ClientBase, rows: EtcdImageRow[]): Promise<void> {
  const params: unknown[] = [];
  const tuples = rows.map((r) => {
    const base = params.length;
    params.push(r.name, r.image, r.tag, r.registry, r.architecture, r.config_digest, r.size_bytes, r.accelerators, JSON.stringify(r.labels), JSON.stringify(r.resources));
    return `($${base + 1}, $${base + 2}, $${base + 3}, $${base + 4}, $${base + 5}, $${base + 6}, $${base + 7}::bigint, 'COMPUTE', $${base + 8}, $${base + 9}::jsonb, $${base + 10}::jsonb)`;
  });
  await c.query(
    `INSERT INTO images (${COLUMNS.join(', ')}) VALUES ${tuples.join(', ')}
     ON CONFLICT (name, architecture) DO UPDATE SET image = EXCLUDED.image, tag = EXCLUDED.tag, registry = EXCLUDED.registry,
       config_digest = EXCLUDED.config_digest, size_bytes = EXCLUDED.size_bytes, type = EXCLUDED.type,
       accelerators = EXCLUDED.accelerators, labels = EXCLUDED.labels, resources = EXCLUDED.resources`,
    params,
  );
}

async function copyMergeUpsert(c: pg.ClientBase, rows: EtcdImageRow[]): Promise<void> {
  await c.query('BEGIN');
  try {
    await c.query('CREATE TEMP TABLE IF NOT EXISTS images_stage (LIKE images INCLUDING DEFAULTS) ON COMMIT DELETE ROWS');
    await copyRows(c, 'images_stage', COLUMNS, rows.map(copyLineOf));
    await c.query(
      `INSERT INTO images (${COLUMNS.join(', ')}) SELECT ${COLUMNS.join(', ')} FROM images_stage
       ON CONFLICT (name, architecture) DO UPDATE SET image = EXCLUDED.image, tag = EXCLUDED.tag, registry = EXCLUDED.registry,
         config_digest = EXCLUDED.config_digest, size_bytes = EXCLUDED.size_bytes, type = EXCLUDED.type,
         accelerators = EXCLUDED.accelerators, labels = EXCLUDED.labels, resources = EXCLUDED.resources`,
    );
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK');
    throw e;
  }
}

async function compareUpserts(stores: Stores, tags: number, batchRows = 1000): Promise<UpsertComparison> {
  const rows = [...generateSeedImages(new Rng(SEED), { count: tags })].map(rowOf);
  const writers: [keyof Omit<UpsertComparison, 'rows' | 'batchRows'>, (c: pg.ClientBase, b: EtcdImageRow[]) => Promise<unknown>][] = [
    ['valuesParams', valuesParamsUpsert],
    ['jsonbRecordset', (c, b) => upsertImages(c, b)],
    ['copyMerge', copyMergeUpsert],
  ];
  const out = { rows: tags, batchRows } as UpsertComparison;
  for (const [name, write] of writers) {
    const once = async () => {
      const t0 = performance.now();
      await stores.pg.withClient(async (c) => {
        for (let i = 0; i < rows.length; i += batchRows) await write(c, rows.slice(i, i + batchRows));
      });
      return performance.now() - t0;
    };
    const inserts: number[] = [];
    const updates: number[] = [];
    for (let run = 0; run < 3; run++) {
      await stores.pg.pool.query('TRUNCATE images CASCADE');
      inserts.push(await once());
      updates.push(await once());
    }
    out[name] = { insertMs: Math.round(median(inserts)), updateMs: Math.round(median(updates)) };
  }
  await stores.pg.pool.query('TRUNCATE images CASCADE');
  return out;
}

// ---- the parent ----

export async function benchImageMigration(opts: { sizes?: number[]; workers?: number; upsertRows?: number } = {}): Promise<ImageBenchResults> {
  const sizes = opts.sizes ?? [10_000, 100_000];
  const workers = opts.workers ?? 2;
  const results: SizeResult[] = [];
  let upsert: UpsertComparison | undefined;
  for (const tags of sizes) {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-bench-images-'));
    const sb = await startSandbox({ dir, withRegistry: false });
    try {
      const etcd = new EtcdStore(sb.etcd.endpoint, sb.namespace);
      for (const [name, url] of [['cr.backend.ai', 'https://cr.backend.ai'], ['index.docker.io', 'https://registry-1.docker.io'], ['localhost:5000', 'http://localhost:5000']]) {
        await etcd.put(`config/docker/registry/${quote(name!)}`, url!);
      }
      const t0 = performance.now();
      const written = await writeEtcdImages(etcd, generateSeedImages(new Rng(SEED), { count: tags }));
      const seedMs = performance.now() - t0;
      etcd.close();
      const stores = await prepareStores(sb.managerToml);
      try {
        await stores.pg.withClient(async (c) => c.query(readFileSync(path.join(PACKAGE_ROOT, 'test/fixtures/schema-dumps/22.03-81c264528f20-upgraded.sql'), 'utf8')));
        if (!upsert && tags === Math.min(...sizes)) upsert = await compareUpserts(stores, opts.upsertRows ?? tags);
      } finally {
        await stores.close();
      }
      const self = pathToFileURL(process.argv[1] ?? '').href === import.meta.url ? process.argv[1]! : path.join(PACKAGE_ROOT, 'dist', 'bench', 'images.js');
      const child = async (mode: string, ...args: string[]) => {
        const r = await runCommand(process.execPath, [self, mode, sb.managerToml, ...args], { MGR_LOG_LEVEL: 'warn' });
        if (r.code !== 0) throw new Error(`${mode} exited ${r.code}: ${r.stderr.slice(-2000)}`);
        return { ...(JSON.parse(r.stdout) as Record<string, number>), peakRssMiB: r.peakRss / 2 ** 20 };
      };
      const floor = await child('floor', String(tags));
      const mig = await child('migrate', String(workers));
      const n = (r: Record<string, number>, k: string) => Math.round(r[k] ?? NaN);
      const floorTotal = n(floor, 'etcdReadMs') + n(floor, 'copyMs');
      const migTotal = n(mig, 'enqueueMs') + n(mig, 'runMs');
      results.push({
        tags,
        etcdKeys: written.keys,
        aliases: written.aliases,
        seedMs: Math.round(seedMs),
        floor: { etcdReadMs: n(floor, 'etcdReadMs'), copyMs: n(floor, 'copyMs'), totalMs: floorTotal, peakRssMiB: n(floor, 'peakRssMiB') },
        migration: { enqueueMs: n(mig, 'enqueueMs'), runMs: n(mig, 'runMs'), totalMs: migTotal, peakRssMiB: n(mig, 'peakRssMiB'), workers },
        ratioToFloor: Math.round((migTotal / floorTotal) * 100) / 100,
      });
    } finally {
      await sb.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }
  const first = results[0]!;
  const last = results[results.length - 1]!;
  return { sizes: results, upsert: upsert!, rssGrowth: Math.round((last.migration.peakRssMiB / first.migration.peakRssMiB) * 100) / 100 };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [mode, managerToml, arg] = process.argv.slice(2);
  if (mode === 'floor') process.stdout.write(JSON.stringify(await floorChild(managerToml!, Number(arg))) + '\n');
  else if (mode === 'migrate') process.stdout.write(JSON.stringify(await migrateChild(managerToml!, Number(arg))) + '\n');
  else {
    const sizes = mode ? mode.split(',').map(Number) : undefined;
    process.stdout.write(JSON.stringify(await benchImageMigration({ sizes }), null, 2) + '\n');
  }
}
