import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { type LocalConfig } from '../src/config/manager-toml.js';
import { clearHistory, DEFAULT_BATCH_SIZE, DEFAULT_TARGET_STATEMENT_MS, type ClearHistoryReport } from '../src/history/index.js';
import { startSandbox } from '../src/sandbox/index.js';
import { seedInstallation } from '../src/sandbox/seed.js';
import { pgClientConfig } from '../src/stores/pg.js';
import { openStores, REDIS_DB, type Stores } from '../src/stores/index.js';

/**
 * clear-history on a seeded installation (kernels terminated over a year, a stat key per kernel),
 * half of the terminated kernels past the retention (seedInstallation with statKeysFor 'all').
 * Every run works on its own copy of the seeded
 * database (CREATE DATABASE … TEMPLATE) with the doomed stat keys put back in Redis first:
 *  - the floor: one `DELETE FROM kernels WHERE terminated_at < cutoff` (what Backend.AI runs) plus
 *    one UNLINK pass over the same keys in pipelined chunks of 1,000;
 *  - mgr's batched clearHistory for each configuration asked for (by default: cascade triggers
 *    skipped, as with a superuser role, and fired, as with a role that may not set
 *    session_replication_role); no VACUUM/compaction in the timed part, the VACUUM (ANALYZE)
 *    that follows a real run is timed on its own.
 * During every run a second connection inserts one kernel row every ~10 ms; the latency of those
 * inserts is what the manager would feel.
 */

export interface InsertLatency {
  inserts: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface MgrRun {
  batchSize: number;
  targetStatementMs: number;
  cascadeMode: string;
  wallMs: number;
  kernelsDeleted: number;
  redisKeysDeleted: number;
  batches: number;
  longestStatementMs: number;
  longestStatement: string | null;
  longestBatchMs: number;
  /** mgr wall time / floor wall time. */
  ratioToFloor: number;
  inserts: InsertLatency;
  /** ≤ 2× the floor, no statement over 200 ms, no concurrent insert over 200 ms. */
  goalsMet: { withinTwiceFloor: boolean; noStatementOver200Ms: boolean; insertsNeverBlockedOver200Ms: boolean };
}

export interface ClearHistoryBenchResults {
  kernels: number;
  doomedKernels: number;
  doomedStatKeys: number;
  vfolderAttachmentRows: number;
  seedMs: number;
  floor: { wallMs: number; deleteMs: number; unlinkMs: number; inserts: InsertLatency };
  runs: MgrRun[];
  /** VACUUM (ANALYZE) of kernels, session_dependencies, vfolder_attachment after the last mgr run. */
  vacuumMs: number;
}

const SEED_DB = 'backend';

/** One mgr run: the most kernels per batch, the statement-time target batches adapt to, and whether the cascade triggers may be skipped. */
export interface MgrRunConfig {
  batchSize: number;
  targetStatementMs: number;
  replicaRole: boolean;
}

export async function benchClearHistory(
  opts: { kernels?: number; runs?: MgrRunConfig[]; log?: (msg: string) => void } = {},
): Promise<ClearHistoryBenchResults> {
  const kernels = opts.kernels ?? 1_000_000;
  const configs = opts.runs ?? [
    { batchSize: DEFAULT_BATCH_SIZE, targetStatementMs: DEFAULT_TARGET_STATEMENT_MS, replicaRole: true },
    { batchSize: DEFAULT_BATCH_SIZE, targetStatementMs: DEFAULT_TARGET_STATEMENT_MS, replicaRole: false },
  ];
  const say = opts.log ?? ((m: string) => process.stderr.write(`[bench clear-history] ${m}\n`));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-bench-clear-history-'));
  const sb = await startSandbox({ dir, withRegistry: false });
  try {
    const config = sb.config;

    const now = new Date();
    let seedMs = 0;
    let cutoff: string;
    let doomedIds: string[];
    let vfolderAttachmentRows: number;
    let statValue: Buffer;
    {
      const stores = await openStores(config);
      try {
        const t = performance.now();
        await seedInstallation(stores, { kernels, statKeysFor: 'all', images: 50, now, onProgress: (phase, p) => p.done % 100_000 === 0 && say(`seed ${phase} ${p.done}/${p.total ?? '?'}`) });
        seedMs = Math.round(performance.now() - t);
        // The median terminated_at: half of the terminated kernels are past the retention.
        const m = await stores.pg.pool.query<{ cutoff: Date }>('SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY terminated_at) AS cutoff FROM kernels WHERE terminated_at IS NOT NULL');
        cutoff = m.rows[0]!.cutoff.toISOString();
        doomedIds = (await stores.pg.pool.query<{ id: string }>('SELECT id::text AS id FROM kernels WHERE terminated_at < $1', [cutoff])).rows.map((r) => r.id);
        vfolderAttachmentRows = (await stores.pg.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM vfolder_attachment')).rows[0]!.n;
        statValue = (await (await stores.redis.db(REDIS_DB.stat)).getBuffer(doomedIds[0]!))!;
        await stores.pg.pool.query('VACUUM ANALYZE');
      } finally {
        await stores.close();
      }
    }
    say(`seeded ${kernels} kernels in ${seedMs} ms; ${doomedIds.length} terminated before ${cutoff}; ${vfolderAttachmentRows} vfolder_attachment rows`);
    const retentionSeconds = String((now.getTime() - new Date(cutoff).getTime()) / 1000);

    const admin = new pg.Client({ ...pgClientConfig(config.db), database: 'postgres' });
    await admin.connect();
    const copyOf = async (name: string): Promise<LocalConfig> => {
      await admin.query(`DROP DATABASE IF EXISTS ${name}`);
      await admin.query(`CREATE DATABASE ${name} TEMPLATE ${SEED_DB}`);
      // Every run starts without the previous one's dirty buffers to write out.
      await admin.query('CHECKPOINT');
      return { ...config, db: { ...config.db, name } };
    };
    try {
      // Floor.
      const floorConfig = await copyOf('bench_floor');
      const floor = await withStores(floorConfig, statValue, doomedIds, async (stores) => {
        const inserter = startInserter(floorConfig);
        try {
          const t0 = performance.now();
          await stores.pg.pool.query('DELETE FROM kernels WHERE terminated_at < $1', [cutoff]);
          const t1 = performance.now();
          const stat = await stores.redis.db(REDIS_DB.stat);
          const pipe = stat.pipeline();
          for (let i = 0; i < doomedIds.length; i += 1000) pipe.unlink(...doomedIds.slice(i, i + 1000));
          await pipe.exec();
          const t2 = performance.now();
          return { wallMs: Math.round(t2 - t0), deleteMs: Math.round(t1 - t0), unlinkMs: Math.round(t2 - t1), inserts: await inserter.stop() };
        } finally {
          await inserter.stop();
        }
      });
      say(`floor: ${JSON.stringify(floor)}`);
      await admin.query('DROP DATABASE bench_floor');

      const runs: MgrRun[] = [];
      let vacuumMs = 0;
      for (const [i, { batchSize, targetStatementMs, replicaRole }] of configs.entries()) {
        const runConfig = await copyOf(`bench_mgr_${i}`);
        const run = await withStores(runConfig, statValue, doomedIds, async (stores) => {
          const inserter = startInserter(runConfig);
          let report: ClearHistoryReport;
          const t0 = performance.now();
          try {
            report = await clearHistory(stores, { retention: retentionSeconds, now, batchSize, targetStatementMs, replicaRole, vacuum: false });
          } finally {
            await inserter.stop();
          }
          const wallMs = Math.round(performance.now() - t0);
          if (report.kernelsDeleted !== doomedIds.length) throw new Error(`mgr deleted ${report.kernelsDeleted} kernels, expected ${doomedIds.length}`);
          const t1 = performance.now();
          await stores.pg.pool.query('VACUUM (ANALYZE) kernels, session_dependencies, vfolder_attachment');
          vacuumMs = Math.round(performance.now() - t1);
          const inserts = await inserter.stop();
          return {
            batchSize,
            targetStatementMs,
            cascadeMode: report.cascadeMode,
            wallMs,
            kernelsDeleted: report.kernelsDeleted,
            redisKeysDeleted: report.redisKeysDeleted,
            batches: report.batches,
            longestStatementMs: report.longestStatementMs,
            longestStatement: report.longestStatement,
            longestBatchMs: report.longestBatchMs,
            ratioToFloor: Math.round((wallMs / floor.wallMs) * 100) / 100,
            inserts,
            goalsMet: {
              withinTwiceFloor: wallMs <= 2 * floor.wallMs,
              noStatementOver200Ms: report.longestStatementMs <= 200,
              insertsNeverBlockedOver200Ms: inserts.maxMs <= 200,
            },
          };
        });
        say(`mgr: ${JSON.stringify(run)}`);
        runs.push(run);
        await admin.query(`DROP DATABASE bench_mgr_${i}`);
      }
      return {
        kernels,
        doomedKernels: doomedIds.length,
        doomedStatKeys: doomedIds.length,
        vfolderAttachmentRows,
        seedMs,
        floor,
        runs,
        vacuumMs,
      };
    } finally {
      await admin.end();
    }
  } finally {
    await sb.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Opens stores on a database copy after putting the doomed stat keys (back) into Redis DB 0. */
async function withStores<T>(config: LocalConfig, value: Buffer, ids: string[], fn: (stores: Stores) => Promise<T>): Promise<T> {
  const stores = await openStores(config);
  try {
    const stat = await stores.redis.db(REDIS_DB.stat);
    for (let i = 0; i < ids.length; i += 10_000) {
      const pipe = stat.pipeline();
      for (let j = i; j < Math.min(i + 10_000, ids.length); j += 500) pipe.mset(...ids.slice(j, j + 500).flatMap((id) => [id, value]));
      await pipe.exec();
    }
    return await fn(stores);
  } finally {
    await stores.close();
  }
}

/** One kernel row every ~10 ms on its own connection (a live kernel, cloned from a live one); latencies kept. */
function startInserter(config: LocalConfig): { stop(): Promise<InsertLatency> } {
  const client = new pg.Client(pgClientConfig(config.db));
  const latencies: number[] = [];
  let running = true;
  const loop = (async () => {
    await client.connect();
    const template = (await client.query<{ id: string }>('SELECT id::text AS id FROM kernels WHERE terminated_at IS NULL LIMIT 1')).rows[0]!.id;
    while (running) {
      const t = performance.now();
      await client.query(
        `INSERT INTO kernels SELECT (jsonb_populate_record(NULL::kernels, to_jsonb(k) || jsonb_build_object('id', gen_random_uuid(), 'session_name', NULL, 'status', 'PENDING'))).* FROM kernels k WHERE id = $1`,
        [template],
      );
      latencies.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 10));
    }
    await client.end();
  })();
  let result: Promise<InsertLatency> | undefined;
  return {
    stop: () =>
      (result ??= (async () => {
        running = false;
        await loop;
        const s = [...latencies].sort((a, b) => a - b);
        const q = (p: number) => Math.round((s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0) * 10) / 10;
        return { inserts: s.length, p50Ms: q(0.5), p99Ms: q(0.99), maxMs: Math.round((s.at(-1) ?? 0) * 10) / 10 };
      })()),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // node dist/bench/clear-history.js [kernels] [batchSize:targetMs:replica|triggers,…]
  const kernels = Number(process.argv[2] ?? 1_000_000);
  const runs = process.argv[3]?.split(',').map((r) => {
    const [batchSize, targetStatementMs, mode] = r.split(':');
    return { batchSize: Number(batchSize), targetStatementMs: Number(targetStatementMs ?? DEFAULT_TARGET_STATEMENT_MS), replicaRole: mode !== 'triggers' };
  });
  const results = await benchClearHistory({ kernels, runs });
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}
