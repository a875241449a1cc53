import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { to as copyTo, from as copyFrom } from 'pg-copy-streams';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import { type LocalConfig } from '../src/config/manager-toml.js';
import type { UpgradeReport } from '../src/engine/runner.js';
import { loadSqlMigrations } from '../src/engine/sql-migrations.js';
import { IMAGES_PREFIX } from '../src/images/etcd-layout.js';
import { countEtcdImages } from '../src/images/etcd-migration.js';
import { PACKAGE_ROOT } from '../src/paths.js';
import { startSandbox } from '../src/sandbox/index.js';
import { seedInstallation } from '../src/sandbox/seed.js';
import { pgClientConfig } from '../src/stores/pg.js';
import { CONCURRENCY_KEY_PREFIX, NON_OCCUPYING_STATUSES } from '../src/upgrades/keypair-concurrency.js';
import { MODULES } from '../src/upgrades/index.js';
import { prefixEnd } from '../src/stores/etcd.js';
import { EtcdStore, openStores, REDIS_DB, type Stores } from '../src/stores/index.js';
import { median, runCommand } from './measure.js';

/**
 * The whole `mgr upgrade` (21.03 → 21.09 → 22.03) on a seeded installation, as an operator runs
 * it: the CLI in its own process (`--yes --json --no-backup --no-schedule --force`; --force
 * because the seed leaves fresh agent heartbeats in Redis). Every run starts from the same seeded
 * state: the database is a fresh copy (CREATE DATABASE … TEMPLATE), Redis has AOF off again and
 * no concurrency counters; etcd is only read by the upgrade (the maintenance marker it writes is
 * removed at the end).
 *
 * The floor is the work no upgrade can avoid, done by hand with no bookkeeping, checks or
 * batching, step by step in the module's order on its own copy:
 *  - schema steps: the same SQL files run as they are, one query each;
 *  - images-from-etcd: one read of every images/ key and value at one revision plus a COPY of
 *    the same images and image_aliases rows (taken from a finished mgr run) into the empty tables.
 *    The read goes range by range between key boundaries found beforehand (every 2,000th key, not
 *    timed, like the COPY data): etcd 3.4 walks its index to the end of the requested range on
 *    every request, so plain limit-paging over the whole prefix grows with the square of the keys
 *    and would make a floor slower than mgr;
 *  - keypair concurrency: one GROUP BY over kernels plus one MSET;
 *  - Redis AOF: CONFIG SET appendonly yes and the wait for its rewrite;
 *  - config-only steps (manager.toml lock backend, schedule, checks): nothing.
 * The pre-upgrade backup is left out of both (--no-backup): it is the backup's own cost.
 */

export interface UpgradeStepTiming {
  id: string;
  kind: string;
  /** Median over the runs of the step's duration in mgr's report. */
  mgrMs: number;
  /** Median over the floor runs; null for steps whose floor is nothing (config edits, checks, steps mgr skipped). */
  floorMs: number | null;
}

export interface UpgradeBenchResults {
  kernels: number;
  images: number;
  aliases: number;
  statKeys: number;
  seedMs: number;
  databaseBytes: number;
  runs: number;
  /** Wall time of every `mgr upgrade` process (start to exit). */
  mgrWallMs: number[];
  /** The report's durationMs of every run (lock to summary, without process start-up). */
  mgrReportMs: number[];
  mgrPeakRssMiB: number[];
  floorMs: number[];
  /** The two parts of the images-from-etcd floor, every run. */
  floorImageReadMs: number[];
  floorImageCopyMs: number[];
  steps: UpgradeStepTiming[];
  medianMgrWallMs: number;
  medianFloorMs: number;
  /** median mgr wall time / median floor. */
  ratio: number;
}

const SEED_DB = 'bench_upgrade_seed';

export async function benchUpgrade(opts: { kernels?: number; images?: number; runs?: number; log?: (msg: string) => void } = {}): Promise<UpgradeBenchResults> {
  const kernels = opts.kernels ?? 1_000_000;
  const images = opts.images ?? 100_000;
  const runs = opts.runs ?? 3;
  const say = opts.log ?? ((m: string) => process.stderr.write(`[bench upgrade] ${m}\n`));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-bench-upgrade-'));
  const sb = await startSandbox({ dir, withRegistry: false });
  try {
    const config = sb.config;

    const t = performance.now();
    const seeded = await withStores(config, (stores) =>
      seedInstallation(stores, {
        kernels,
        images,
        statKeysFor: 'all',
        onProgress: (phase, p) => p.done % 100_000 === 0 && say(`seed ${phase} ${p.done}/${p.total ?? '?'}`),
      }),
    );
    const seedMs = Math.round(performance.now() - t);
    say(`seeded ${kernels} kernels, ${seeded.imageTags} image tags, ${seeded.aliases} aliases, ${seeded.redisKeys} Redis keys in ${seedMs} ms`);

    const admin = new pg.Client({ ...pgClientConfig(config.db), database: 'postgres' });
    await admin.connect();
    try {
      // The seeded database becomes the template; every run gets a fresh copy under the configured name.
      await admin.query(`ALTER DATABASE ${config.db.name} RENAME TO ${SEED_DB}`);
      const databaseBytes = Number((await admin.query<{ n: string }>(`SELECT pg_database_size('${SEED_DB}') AS n`)).rows[0]!.n);
      const freshCopy = async () => {
        await admin.query(`DROP DATABASE IF EXISTS ${config.db.name}`);
        await admin.query(`CREATE DATABASE ${config.db.name} TEMPLATE ${SEED_DB}`);
        await withStores(config, resetRedis);
      };

      // mgr and floor runs alternate, so a change in the (shared) machine's load hits both alike.
      const reports: UpgradeReport[] = [];
      const mgrWallMs: number[] = [];
      const mgrPeakRssMiB: number[] = [];
      const floors: FloorRun[] = [];
      let input: FloorInput | undefined;
      for (let i = 0; i < runs; i++) {
        await freshCopy();
        const toml = path.join(dir, `manager-run-${i}.toml`);
        await copyFile(sb.managerToml, toml);
        const r = await runCommand(
          process.execPath,
          [path.join(PACKAGE_ROOT, 'bin', 'mgr.js'), '-f', toml, 'upgrade', '--yes', '--json', '--no-backup', '--no-schedule', '--force'],
          { MGR_LOG_LEVEL: 'warn' },
        );
        if (r.code !== 0) throw new Error(`mgr upgrade exited ${r.code}: ${r.stderr.slice(-2000)}`);
        const report = JSON.parse(r.stdout) as UpgradeReport;
        if (report.to !== '22.03' || report.steps.some((s) => s.status !== 'done' && s.status !== 'skipped')) {
          throw new Error(`mgr upgrade did not finish every step: ${report.steps.map((s) => `${s.id}=${s.status}`).join(', ')}`);
        }
        reports.push(report);
        mgrWallMs.push(Math.round(r.ms));
        mgrPeakRssMiB.push(Math.round((r.peakRss / 2 ** 20) * 10) / 10);
        say(`run ${i + 1}/${runs}: ${Math.round(r.ms)} ms wall, ${report.durationMs} ms in the report, peak RSS ${mgrPeakRssMiB.at(-1)} MiB`);
        input ??= await withStores(config, floorInput);

        await freshCopy();
        // Steps mgr skipped (a revision the seeded head already has) have no floor either.
        const applied = new Set(report.steps.filter((s) => s.status === 'done').map((s) => s.id));
        const floor = await withStores(config, (stores) => floorRun(stores, input!, applied));
        floors.push(floor);
        say(`floor ${i + 1}/${runs}: ${Math.round(sum([...floor.steps.values()]))} ms (${[...floor.steps].map(([id, ms]) => `${id} ${Math.round(ms)}`).join(', ')}; images: etcd read ${Math.round(floor.imageReadMs)}, COPY ${Math.round(floor.imageCopyMs)})`);
      }
      await admin.query(`DROP DATABASE IF EXISTS ${config.db.name}`);

      const steps: UpgradeStepTiming[] = reports[0]!.steps.map((s) => ({
        id: s.id,
        kind: s.kind,
        mgrMs: median(reports.map((r) => r.steps.find((x) => x.id === s.id)?.durationMs ?? 0)),
        floorMs: floors[0]!.steps.has(s.id) ? Math.round(median(floors.map((f) => f.steps.get(s.id)!))) : null,
      }));
      const floorMs = floors.map((f) => Math.round(sum([...f.steps.values()])));
      const medianMgrWallMs = median(mgrWallMs);
      const medianFloorMs = median(floorMs);
      return {
        kernels,
        images: seeded.imageTags,
        aliases: seeded.aliases,
        statKeys: seeded.redisKeys,
        seedMs,
        databaseBytes,
        runs,
        mgrWallMs,
        mgrReportMs: reports.map((r) => r.durationMs),
        mgrPeakRssMiB,
        floorMs,
        floorImageReadMs: floors.map((f) => Math.round(f.imageReadMs)),
        floorImageCopyMs: floors.map((f) => Math.round(f.imageCopyMs)),
        steps,
        medianMgrWallMs,
        medianFloorMs,
        ratio: Math.round((medianMgrWallMs / medianFloorMs) * 100) / 100,
      };
    } finally {
      await admin.end();
    }
  } finally {
    await sb.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function withStores<T>(config: LocalConfig, fn: (stores: Stores) => Promise<T>): Promise<T> {
  const stores = await openStores(config);
  try {
    return await fn(stores);
  } finally {
    await stores.close();
  }
}

/** Redis as the seed left it: AOF off (in the running server and its config file), no concurrency counters. */
async function resetRedis(stores: Stores): Promise<void> {
  const stat = await stores.redis.db(REDIS_DB.stat);
  await stat.call('CONFIG', 'SET', 'appendonly', 'no');
  await stat.call('CONFIG', 'REWRITE');
  const counters = await stat.keys(`${CONCURRENCY_KEY_PREFIX}*`);
  if (counters.length) await stat.unlink(...counters);
}

/** What the floor gets for free: the rows a finished upgrade wrote (COPY text) and key boundaries under images/. */
interface FloorInput {
  images: Buffer;
  aliases: Buffer;
  /** Every 2,000th key under images/ (relative), in key order. */
  bounds: string[];
  keys: number;
}

const IMAGE_COLUMNS = 'id, name, image, tag, registry, architecture, config_digest, size_bytes, type, accelerators, labels, resources';

async function floorInput(stores: Stores): Promise<FloorInput> {
  const scan = await countEtcdImages(stores.etcd);
  return stores.pg.withClient(async (c) => {
    const out = async (sql: string) => {
      const chunks: Buffer[] = [];
      const sink = new Writable({
        write(chunk: Buffer, _enc, done) {
          chunks.push(chunk);
          done();
        },
      });
      await pipeline(c.query(copyTo(`COPY (${sql}) TO STDOUT`)), sink);
      return Buffer.concat(chunks);
    };
    return {
      images: await out(`SELECT ${IMAGE_COLUMNS} FROM images`),
      aliases: await out('SELECT id, alias, image FROM image_aliases'),
      bounds: scan.fences,
      keys: scan.keys,
    };
  });
}

interface FloorRun {
  /** ms per step id (steps with no floor are absent). */
  steps: Map<string, number>;
  imageReadMs: number;
  imageCopyMs: number;
}

/** One floor run of the applied steps, in the module's order. */
async function floorRun(stores: Stores, input: FloorInput, applied: Set<string>): Promise<FloorRun> {
  const sqlByRevision = new Map(loadSqlMigrations().map((m) => [m.revision, m.sql]));
  const out: FloorRun = { steps: new Map(), imageReadMs: 0, imageCopyMs: 0 };
  await stores.pg.withClient(async (c) => {
    for (const m of MODULES) {
      for (const step of m.steps.filter((s) => applied.has(s.id))) {
        const t0 = performance.now();
        if (step.kind === 'schema') {
          const sql = sqlByRevision.get(step.id.split('/')[1]! as never);
          if (!sql) throw new Error(`no SQL file for schema step ${step.id}`);
          await c.query(sql);
        } else if (step.id === '22.03/images-from-etcd') {
          const keys = await readEveryKey(stores.etcd, IMAGES_PREFIX, input.bounds);
          if (keys !== input.keys) throw new Error(`the floor read ${keys} keys under ${IMAGES_PREFIX}, mgr's scan counted ${input.keys}`);
          out.imageReadMs = performance.now() - t0;
          await pipeline(Readable.from([input.images]), c.query(copyFrom(`COPY images (${IMAGE_COLUMNS}) FROM STDIN`)));
          await pipeline(Readable.from([input.aliases]), c.query(copyFrom('COPY image_aliases (id, alias, image) FROM STDIN')));
          out.imageCopyMs = performance.now() - t0 - out.imageReadMs;
        } else if (step.id === '22.03/keypair-concurrency-to-redis') {
          const r = await c.query<{ access_key: string; n: number }>(
            `SELECT k.access_key, count(x.id)::int AS n FROM keypairs k
               LEFT JOIN kernels x ON x.access_key = k.access_key AND x.status::text <> ALL ($1::text[]) GROUP BY k.access_key`,
            [NON_OCCUPYING_STATUSES],
          );
          await (await stores.redis.db(REDIS_DB.stat)).mset(...r.rows.flatMap((row) => [CONCURRENCY_KEY_PREFIX + row.access_key, String(row.n)]));
        } else if (step.id === '22.03/redis-aof') {
          await enableAof(stores);
        } else {
          continue; // no unavoidable work: a manager.toml edit, a cron entry or a check
        }
        out.steps.set(step.id, performance.now() - t0);
      }
    }
  });
  return out;
}

/** Every key and value under prefix at one revision, one unlimited range read between each pair of bounds. */
async function readEveryKey(etcd: EtcdStore, prefix: string, bounds: string[]): Promise<number> {
  const revision = await etcd.revision();
  const edges = [Buffer.from(etcd.abs(prefix)), ...bounds.map((k) => Buffer.from(etcd.abs(k) + '\0')), prefixEnd(etcd.abs(prefix))];
  let keys = 0;
  for (let i = 0; i + 1 < edges.length; i++) {
    const res = await etcd.client.kv.range({ key: edges[i]!, range_end: edges[i + 1]!, revision });
    keys += res.kvs.length;
  }
  return keys;
}

async function enableAof(stores: Stores): Promise<void> {
  const redis = await stores.redis.db(REDIS_DB.stat);
  await redis.call('CONFIG', 'SET', 'appendonly', 'yes');
  for (;;) {
    const info = await redis.info('persistence');
    if (/aof_rewrite_in_progress:0/.test(info) && /aof_rewrite_scheduled:0/.test(info) && /aof_enabled:1/.test(info)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // node dist/bench/upgrade.js [kernels] [images] [runs]
  const results = await benchUpgrade({ kernels: Number(process.argv[2] ?? 1_000_000), images: Number(process.argv[3] ?? 100_000), runs: Number(process.argv[4] ?? 3) });
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}
