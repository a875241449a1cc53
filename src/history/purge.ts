import { setTimeout as delay } from 'node:timers/promises';
import type pg from 'pg';
import { ReplyError } from 'ioredis';
import { MgrError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Progress } from '../engine/types.js';
import { lockBackendFor } from '../locks/index.js';
import type { HeldLock } from '../locks/types.js';
import { getMaintenance, refuseDuringMaintenance } from '../maintenance/index.js';
import { REDIS_DB, type Stores } from '../stores/index.js';
import { cutoffFor, parseRetention, type Retention } from './retention.js';

/** Backend.AI's default retention (`backend.ai mgr clear-history`). */
export const DEFAULT_RETENTION = '1yr';
/**
 * The most kernels per batch. Measured with bench/clear-history.ts (200k kernels, half past the
 * retention): with the cascade triggers skipped a 1,000-kernel batch's longest statement is ≈ 8 ms
 * and larger batches are no faster; with them firing the statement-time target decides instead.
 */
export const DEFAULT_BATCH_SIZE = 1000;
export const MAX_BATCH_SIZE = 50_000;
export const DEFAULT_PAUSE_MS = 0;
/**
 * What one DELETE statement of a batch may take. Deleting a kernel fires Backend.AI's ON DELETE
 * CASCADE trigger on vfolder_attachment, which has no index on `kernel`: every kernel row costs a
 * scan of that table, so the time per row depends on the installation. Batches adapt to it.
 */
export const DEFAULT_TARGET_STATEMENT_MS = 100;
/** Batches start this small and at most double while statements stay under the target. */
const FIRST_BATCH_SIZE = 50;
export const LOCK_NAME = 'mgr.clear-history';
/** A batch waits at most this long for a row lock held by someone else, then the run fails (rerun resumes). */
const LOCK_TIMEOUT_MS = 5_000;
/** Keys per UNLINK command (the fastest shape measured in stores-here.md). */
const UNLINK_CHUNK = 1000;
/** The tables whose rows go with a kernel (ON DELETE CASCADE to kernels.id, backend-ai.md §1.3). */
export const DEPENDENT_TABLES = ['session_dependencies', 'vfolder_attachment'] as const;
export const VACUUMED_TABLES = ['kernels', ...DEPENDENT_TABLES] as const;

export interface ClearHistoryOptions {
  /** Retention text (backend-ai.md §4.3 grammar) or a parsed one; default "1yr". */
  retention?: string | Retention;
  /** The "now" the cutoff is computed from (default: the current time). */
  now?: Date;
  /** The most kernels one batch deletes (batches shrink below it to keep statements under targetStatementMs). */
  batchSize?: number;
  /** Batches are sized so their longest statement stays near this (default 100 ms). */
  targetStatementMs?: number;
  /** Pause between batches, so replicas and autovacuum keep up. */
  pauseMs?: number;
  /** Count what would go and write nothing (takes no lock). */
  dryRun?: boolean;
  /** Redis compaction and VACUUM (ANALYZE) after deleting (default true). */
  vacuum?: boolean;
  /**
   * Delete the dependent rows with session_replication_role = replica, so Backend.AI's cascade
   * triggers do not run once per kernel, when the role may set it and the catalog allows it
   * (see chooseCascadeMode). Default true; false always fires the triggers.
   */
  replicaRole?: boolean;
  /** How long to wait for another run's lock (default 0: try once). */
  waitLockMs?: number;
  /** Aborting stops after the current batch; the report says interrupted. */
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
  log?: Logger;
}

export type CompactionCommand = 'BGREWRITEAOF' | 'BGSAVE';
export type CascadeMode = 'explicit' | 'triggers';

export interface ClearHistoryReport {
  dryRun: boolean;
  retention: string;
  /** Kernels terminated before this instant (ISO, UTC) go. */
  cutoff: string;
  /** Kernel rows deleted (dry run: that would be deleted). */
  kernelsDeleted: number;
  /** Rows of the dependent tables that went with them (dry run: that would go). */
  dependentRows: Record<(typeof DEPENDENT_TABLES)[number], number>;
  /** Sum of UNLINK replies in Redis DB 0 (dry run: stat keys that exist for those kernels). */
  redisKeysDeleted: number;
  /**
   * explicit: the batches delete the dependent rows themselves and skip the per-kernel cascade
   * triggers (session_replication_role = replica); triggers: the cascade triggers fire as usual.
   */
  cascadeMode: CascadeMode;
  /** Why that mode was chosen. */
  cascadeModeReason: string;
  /** Batches committed (dry run: the fewest it could take, at the full batch size). */
  batches: number;
  batchSize: number;
  targetStatementMs: number;
  /** The most kernels one batch deleted. */
  largestBatch: number;
  /** Longest single SQL statement of the batches. */
  longestStatementMs: number;
  /** Which statement that was: "select batch", "delete session_dependencies", "delete vfolder_attachment" or "delete kernels". */
  longestStatement: string | null;
  /** Longest batch transaction, from SELECT … FOR UPDATE to COMMIT (includes the UNLINK round trip). */
  longestBatchMs: number;
  /** terminated_at of the first and last kernel deleted (µs, UTC); null when none. */
  oldestTerminatedAt: string | null;
  newestTerminatedAt: string | null;
  durationMs: number;
  /** What Redis was asked to do after deleting; null when skipped (dry run, nothing deleted, --no-vacuum, interrupted). */
  compaction: CompactionCommand | null;
  /** Redis's reply to it (or the "already in progress" error it tolerated). */
  compactionReply: string | null;
  vacuumed: string[];
  vacuumMs: number;
  /** Stopped early by the signal; what was deleted so far is committed and counted. */
  interrupted: boolean;
  /** Problems after the data was deleted (compaction or VACUUM refused); the deletes stand. */
  warnings: string[];
}

interface BatchRow {
  id: string;
  terminated_at: string;
}

// terminated_at as an exact UTC ISO string (µs): the keyset cursor goes back to PostgreSQL as text,
// so no precision is lost to JS Dates.
const ISO = `to_char(terminated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/**
 * One keyset page over ix_kernels_terminated_at, ordered by (terminated_at, id). The explicit
 * `terminated_at >= cursor` bounds the index scan, so a batch never re-walks the index entries of
 * rows deleted by earlier batches. SKIP LOCKED: rows another transaction holds are left for a later run.
 */
function pageQuery(cutoff: string, limit: number, after: BatchRow | undefined, forUpdate: boolean): [string, unknown[]] {
  const where = after
    ? 'terminated_at < $1::timestamptz AND terminated_at >= $3::timestamptz AND (terminated_at, id) > ($3::timestamptz, $4::uuid)'
    : 'terminated_at < $1::timestamptz';
  // ORDER BY names the table's columns: bare names would mean the text output columns of the same
  // names, and sorting those needs every row before the cutoff, not just the next index entries.
  const sql = `SELECT id::text AS id, ${ISO} AS terminated_at FROM kernels WHERE ${where}
    ORDER BY kernels.terminated_at, kernels.id LIMIT $2${forUpdate ? ' FOR UPDATE SKIP LOCKED' : ''}`;
  return [sql, after ? [cutoff, limit, after.terminated_at, after.id] : [cutoff, limit]];
}

/**
 * Deletes the history of kernels terminated before now − retention, in PostgreSQL and Redis, in
 * bounded batches under the `mgr.clear-history` lock. Kernels whose terminated_at is NULL are
 * never touched, whatever their status.
 *
 * Crash-safe order, per batch, in one PostgreSQL transaction:
 *   1. SELECT the batch's kernels FOR UPDATE SKIP LOCKED (keyset by terminated_at, id);
 *   2. DELETE their session_dependencies and vfolder_attachment rows (what ON DELETE CASCADE
 *      would remove, deleted explicitly so they can be counted) and then the kernel rows, with
 *      the per-kernel cascade triggers skipped when that provably changes nothing (chooseCascadeMode);
 *   3. UNLINK the kernels' stat keys in Redis DB 0;
 *   4. COMMIT.
 * A crash before COMMIT rolls the rows back while their keys may be gone: the next run finds the
 * rows again and UNLINK of a missing key is harmless. Committing first would be the unsafe order:
 * a crash after COMMIT would leave stat keys whose kernel rows no later run can find.
 */
export async function clearHistory(stores: Stores, opts: ClearHistoryOptions = {}): Promise<ClearHistoryReport> {
  const started = performance.now();
  const log = opts.log ?? silentLogger;
  const retention = typeof opts.retention === 'object' ? opts.retention : parseRetention(opts.retention ?? DEFAULT_RETENTION);
  const cutoff = cutoffFor(retention, opts.now ?? new Date()).toISOString();
  const batchSize = opts.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH_SIZE) {
    throw new MgrError('usage', `batch size must be a whole number from 1 to ${MAX_BATCH_SIZE}, got ${batchSize}`);
  }
  const targetStatementMs = opts.targetStatementMs ?? DEFAULT_TARGET_STATEMENT_MS;
  if (!(targetStatementMs > 0)) throw new MgrError('usage', `target statement time must be a positive number of ms, got ${targetStatementMs}`);
  const report: ClearHistoryReport = {
    dryRun: Boolean(opts.dryRun),
    retention: retention.text,
    cutoff,
    kernelsDeleted: 0,
    dependentRows: { session_dependencies: 0, vfolder_attachment: 0 },
    redisKeysDeleted: 0,
    cascadeMode: 'triggers',
    cascadeModeReason: '',
    batches: 0,
    batchSize,
    targetStatementMs,
    largestBatch: 0,
    longestStatementMs: 0,
    longestStatement: null,
    longestBatchMs: 0,
    oldestTerminatedAt: null,
    newestTerminatedAt: null,
    durationMs: 0,
    compaction: null,
    compactionReply: null,
    vacuumed: [],
    vacuumMs: 0,
    interrupted: false,
    warnings: [],
  };
  await refuseDuringMaintenance(stores.etcd, 'clear-history');
  await requireTables(stores);
  if (opts.dryRun) {
    Object.assign(report, await chooseCascadeMode(stores, opts.replicaRole ?? true));
    await countWouldDelete(stores, report, opts.signal);
    report.durationMs = Math.round(performance.now() - started);
    return report;
  }

  const locks = lockBackendFor(stores, undefined, { log });
  const held = await locks.acquire({ name: LOCK_NAME, waitMs: opts.waitLockMs ?? 0, purpose: 'clear-history', signal: opts.signal });
  try {
    log.info({ cutoff, retention: retention.text, batchSize, targetStatementMs, lock: locks.kind }, 'clear-history: started');
    // The upgrade may have entered maintenance while this run waited for the lock.
    await refuseDuringMaintenance(stores.etcd, 'clear-history');
    Object.assign(report, await chooseCascadeMode(stores, opts.replicaRole ?? true));
    const total = await countTotal(stores, cutoff);
    opts.onProgress?.({ done: 0, total: total.kernels, unit: 'kernels' });
    await deleteInBatches(stores, report, { ...opts, batchSize, total: total.kernels, held, log });
    if (!report.interrupted && report.kernelsDeleted > 0 && opts.vacuum !== false) {
      await compactRedis(stores, report);
      await vacuumTables(stores, report);
    }
  } finally {
    await held.release();
  }
  report.durationMs = Math.round(performance.now() - started);
  log.info({ ...report, event: 'clear-history.done' }, 'clear-history: done');
  return report;
}

async function deleteInBatches(
  stores: Stores,
  report: ClearHistoryReport,
  o: ClearHistoryOptions & { batchSize: number; total: number; held: HeldLock; log: Logger },
): Promise<void> {
  const stat = await stores.redis.db(REDIS_DB.stat);
  // One connection for the whole run: the batches follow each other.
  await stores.pg.withClient(async (c) => {
    let cursor: BatchRow | undefined;
    let size = Math.min(o.batchSize, FIRST_BATCH_SIZE);
    for (;;) {
      if (o.signal?.aborted) {
        report.interrupted = true;
        return;
      }
      await checkStillAllowed(stores, report, o.held);
      const started = performance.now();
      const batch = await runBatch(c, stat, report, size, cursor);
      if (!batch) return;
      const ms = round(performance.now() - started);
      report.longestBatchMs = Math.max(report.longestBatchMs, ms);
      report.batches++;
      report.kernelsDeleted += batch.deleted;
      report.redisKeysDeleted += batch.unlinked;
      report.dependentRows.session_dependencies += batch.dependents.session_dependencies;
      report.dependentRows.vfolder_attachment += batch.dependents.vfolder_attachment;
      report.largestBatch = Math.max(report.largestBatch, batch.deleted);
      report.oldestTerminatedAt ??= batch.rows[0]!.terminated_at;
      cursor = batch.rows[batch.rows.length - 1]!;
      report.newestTerminatedAt = cursor.terminated_at;
      o.log.debug({ batch: report.batches, kernels: batch.deleted, keys: batch.unlinked, ms, slowestStatementMs: batch.slowestMs }, 'clear-history: batch committed');
      o.onProgress?.({ done: report.kernelsDeleted, total: Math.max(o.total, report.kernelsDeleted), unit: 'kernels' });
      if (batch.rows.length < size) return;
      size = nextBatchSize(size, batch.slowestMs / batch.rows.length, o.batchSize, report.targetStatementMs);
      if (o.pauseMs) await delay(o.pauseMs, undefined, { signal: o.signal }).catch(() => undefined);
    }
  });
}

/** A database without Backend.AI's tables is the wrong database, not an internal error. */
async function requireTables(stores: Stores): Promise<void> {
  const r = await stores.pg.pool.query<{ name: string; found: boolean }>(
    `SELECT t AS name, to_regclass('public.' || t) IS NOT NULL AS found FROM unnest($1::text[]) AS t`,
    [VACUUMED_TABLES],
  );
  const missing = r.rows.filter((x) => !x.found).map((x) => x.name);
  if (missing.length) {
    const db = stores.config.db;
    throw new MgrError('config', `database "${db.name}" at ${db.host}:${db.port} has no ${missing.join(', ')} table${missing.length > 1 ? 's' : ''}: it is not a Backend.AI manager database`, {
      hint: `check [db] in ${stores.config.path}`,
    });
  }
}

/** The foreign keys that reference kernels in Backend.AI 21.03–22.03, all ON DELETE CASCADE. */
const KERNEL_REFERENCES = ['session_dependencies.depends_on', 'session_dependencies.session_id', 'vfolder_attachment.kernel'];

/**
 * Whether batches may skip the cascade triggers. Each deleted kernel fires them once, and the one
 * on vfolder_attachment scans that whole table (it has no index on `kernel`): on a large
 * installation that is most of the cost of a delete. The batches delete the dependent rows
 * themselves while holding FOR UPDATE on the kernels (a concurrent insert of a dependent row
 * waits on that lock and then fails its foreign-key check), so the triggers would find nothing.
 * Skipping them is only done when it provably changes nothing:
 *  - the foreign keys that reference kernels are exactly Backend.AI's three, all CASCADE;
 *  - kernels and the two dependent tables have no triggers or rules of their own (replica mode
 *    would skip those too);
 *  - this role may set session_replication_role (superuser, or GRANT SET on PostgreSQL 15+).
 */
async function chooseCascadeMode(stores: Stores, allowed: boolean): Promise<{ cascadeMode: CascadeMode; cascadeModeReason: string }> {
  const triggers = (reason: string) => ({ cascadeMode: 'triggers' as const, cascadeModeReason: reason });
  if (!allowed) return triggers('session_replication_role not used (disabled by option)');
  return stores.pg.withClient(async (c) => {
    const fks = await c.query<{ ref: string; cascade: boolean }>(
      `SELECT c.conrelid::regclass::text || '.' || a.attname AS ref, c.confdeltype = 'c' AS cascade
         FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
        WHERE c.contype = 'f' AND c.confrelid = 'public.kernels'::regclass ORDER BY 1`,
    );
    const refs = fks.rows.map((r) => r.ref);
    if (refs.join() !== KERNEL_REFERENCES.join() || !fks.rows.every((r) => r.cascade)) {
      return triggers(`foreign keys referencing kernels are not Backend.AI's (${refs.join(', ') || 'none'})`);
    }
    const own = await c.query<{ what: string }>(
      `SELECT 'trigger ' || tgname || ' on ' || tgrelid::regclass::text AS what FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid = ANY (ARRAY['public.kernels', 'public.session_dependencies', 'public.vfolder_attachment']::regclass[])
       UNION ALL
       SELECT 'rule ' || rulename || ' on ' || ev_class::regclass::text FROM pg_rewrite
        WHERE rulename <> '_RETURN' AND ev_class = ANY (ARRAY['public.kernels', 'public.session_dependencies', 'public.vfolder_attachment']::regclass[])`,
    );
    if (own.rows.length) return triggers(`${own.rows.map((r) => r.what).join(', ')} must fire`);
    await c.query('BEGIN');
    try {
      await c.query('SET LOCAL session_replication_role = replica');
      return { cascadeMode: 'explicit' as const, cascadeModeReason: "the batches delete the dependent rows themselves under session_replication_role = replica; the catalog has only Backend.AI's foreign keys to kernels and no triggers of its own" };
    } catch (e) {
      return triggers(`this role may not set session_replication_role (${errorMessage(e)})`);
    } finally {
      await c.query('ROLLBACK');
    }
  });
}

/** Slow start: double while the statements stay under the target, shrink to what the target allows once they do not. */
export function nextBatchSize(current: number, msPerKernel: number, max: number, targetMs: number): number {
  const fits = msPerKernel > 0 ? Math.floor(targetMs / msPerKernel) : max;
  return Math.max(1, Math.min(max, current * 2, fits));
}

/** Between batches: the lock must still be ours and maintenance must not have begun. */
async function checkStillAllowed(stores: Stores, report: ClearHistoryReport, held: HeldLock): Promise<void> {
  if (held.lost.aborted) {
    throw new MgrError('lockBusy', `lost the lock "${LOCK_NAME}" after deleting ${report.kernelsDeleted} kernels; stopped before the next batch`, {
      hint: 'rerun mgr clear-history: it resumes where this run stopped',
      details: { report },
    });
  }
  const marker = await getMaintenance(stores.etcd);
  if (marker) {
    throw new MgrError('refused', `clear-history stopped: maintenance mode was turned on (${marker.reason}, by ${marker.by}) after ${report.kernelsDeleted} kernels were deleted`, {
      hint: 'rerun mgr clear-history after the maintenance ends: it resumes where this run stopped',
      details: { report },
    });
  }
}

/** One batch in the crash-safe order (see clearHistory); undefined when no kernel is left. */
async function runBatch(
  c: pg.PoolClient,
  stat: RedisClient,
  report: ClearHistoryReport,
  batchSize: number,
  after: BatchRow | undefined,
): Promise<{ rows: BatchRow[]; deleted: number; unlinked: number; dependents: DependentCounts; slowestMs: number } | undefined> {
  const [sql, params] = pageQuery(report.cutoff, batchSize, after, true);
  await c.query('BEGIN');
  try {
    await c.query(`SET LOCAL lock_timeout = ${LOCK_TIMEOUT_MS}`);
    if (report.cascadeMode === 'explicit') await c.query('SET LOCAL session_replication_role = replica');
    const slowest = { ms: 0 };
    const sel = await timed(report, slowest, 'select batch', () => c.query<BatchRow>(sql, params));
    if (sel.rows.length === 0) {
      await c.query('ROLLBACK');
      return undefined;
    }
    const { deleted, dependents } = await deleteRows(c, report, slowest, sel.rows.map((r) => r.id));
    const unlinked = await unlinkKeys(stat, deleted);
    await c.query('COMMIT');
    return { rows: sel.rows, deleted: deleted.length, unlinked, dependents, slowestMs: slowest.ms };
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

type DependentCounts = ClearHistoryReport['dependentRows'];

/** Deletes the dependent rows, then the kernels; returns the ids of the kernels actually deleted. */
async function deleteRows(
  c: pg.PoolClient,
  report: ClearHistoryReport,
  slowest: { ms: number },
  ids: string[],
): Promise<{ deleted: string[]; dependents: DependentCounts }> {
  const sd = await timed(report, slowest, 'delete session_dependencies', () =>
    c.query('DELETE FROM session_dependencies WHERE session_id = ANY($1::uuid[]) OR depends_on = ANY($1::uuid[])', [ids]),
  );
  const va = await timed(report, slowest, 'delete vfolder_attachment', () => c.query('DELETE FROM vfolder_attachment WHERE kernel = ANY($1::uuid[])', [ids]));
  const k = await timed(report, slowest, 'delete kernels', () => c.query<{ id: string }>('DELETE FROM kernels WHERE id = ANY($1::uuid[]) RETURNING id::text AS id', [ids]));
  return { deleted: k.rows.map((r) => r.id), dependents: { session_dependencies: sd.rowCount ?? 0, vfolder_attachment: va.rowCount ?? 0 } };
}

type RedisClient = Awaited<ReturnType<Stores['redis']['db']>>;

/** UNLINKs the stat keys (key = kernel UUID string, backend-ai.md §6.2); returns the sum of the replies. */
async function unlinkKeys(stat: RedisClient, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const pipe = stat.pipeline();
  for (let i = 0; i < ids.length; i += UNLINK_CHUNK) pipe.unlink(...ids.slice(i, i + UNLINK_CHUNK));
  return sumReplies(await pipe.exec());
}

/** How many of these stat keys exist (multi-key EXISTS counts each present key). */
async function countKeys(stat: RedisClient, ids: string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const pipe = stat.pipeline();
  for (let i = 0; i < ids.length; i += UNLINK_CHUNK) pipe.exists(...ids.slice(i, i + UNLINK_CHUNK));
  return sumReplies(await pipe.exec());
}

function sumReplies(replies: [Error | null, unknown][] | null): number {
  let n = 0;
  for (const [err, v] of replies ?? []) {
    if (err) throw err;
    n += Number(v);
  }
  return n;
}

async function countTotal(stores: Stores, cutoff: string): Promise<{ kernels: number; oldest: string | null; newest: string | null }> {
  const r = await stores.pg.pool.query<{ n: number; oldest: string | null; newest: string | null }>(
    `SELECT count(*)::int AS n, min(${ISO}) AS oldest, max(${ISO}) AS newest FROM kernels WHERE terminated_at < $1::timestamptz`,
    [cutoff],
  );
  const row = r.rows[0]!;
  return { kernels: row.n, oldest: row.oldest, newest: row.newest };
}

/** Dry run: what a real run would delete, read in the same keyset pages, writing nothing. */
async function countWouldDelete(stores: Stores, report: ClearHistoryReport, signal: AbortSignal | undefined): Promise<void> {
  const total = await countTotal(stores, report.cutoff);
  report.kernelsDeleted = total.kernels;
  report.oldestTerminatedAt = total.oldest;
  report.newestTerminatedAt = total.newest;
  report.batches = Math.ceil(total.kernels / report.batchSize);
  report.largestBatch = Math.min(total.kernels, report.batchSize);
  const doomed = 'SELECT id FROM kernels WHERE terminated_at < $1::timestamptz';
  const dep = await stores.pg.pool.query<{ sd: number; va: number }>(
    `SELECT (SELECT count(*)::int FROM session_dependencies WHERE session_id IN (${doomed}) OR depends_on IN (${doomed})) AS sd,
            (SELECT count(*)::int FROM vfolder_attachment WHERE kernel IN (${doomed})) AS va`,
    [report.cutoff],
  );
  report.dependentRows = { session_dependencies: dep.rows[0]!.sd, vfolder_attachment: dep.rows[0]!.va };
  const stat = await stores.redis.db(REDIS_DB.stat);
  let cursor: BatchRow | undefined;
  const page = report.batchSize;
  for (;;) {
    if (signal?.aborted) {
      report.interrupted = true;
      return;
    }
    const sel = await stores.pg.pool.query<BatchRow>(...pageQuery(report.cutoff, page, cursor, false));
    report.redisKeysDeleted += await countKeys(stat, sel.rows.map((r) => r.id));
    if (sel.rows.length < page) return;
    cursor = sel.rows[sel.rows.length - 1]!;
  }
}

/**
 * Redis frees memory at once, but its persistence files keep the deleted keys until rewritten:
 * BGREWRITEAOF when AOF is on, else BGSAVE SCHEDULE (as Backend.AI does). "Already in progress"
 * is fine (that rewrite will not contain the keys either); other refusals become warnings.
 */
async function compactRedis(stores: Stores, report: ClearHistoryReport): Promise<void> {
  const r = await stores.redis.db(REDIS_DB.stat);
  try {
    const [, appendonly] = (await r.config('GET', 'appendonly')) as [string, string];
    report.compaction = appendonly === 'yes' ? 'BGREWRITEAOF' : 'BGSAVE';
    report.compactionReply = report.compaction === 'BGREWRITEAOF' ? await r.bgrewriteaof() : String(await r.bgsave('SCHEDULE'));
  } catch (e) {
    if (e instanceof ReplyError && /in progress/i.test(errorMessage(e))) {
      report.compactionReply = errorMessage(e);
    } else {
      report.warnings.push(`Redis compaction${report.compaction ? ` (${report.compaction})` : ''} failed: ${errorMessage(e)}`);
    }
  }
}

/** VACUUM (ANALYZE), not FULL: it takes no lock that blocks the manager's reads and writes. */
async function vacuumTables(stores: Stores, report: ClearHistoryReport): Promise<void> {
  const t = performance.now();
  try {
    await stores.pg.pool.query(`VACUUM (ANALYZE) ${VACUUMED_TABLES.join(', ')}`);
    report.vacuumed = [...VACUUMED_TABLES];
  } catch (e) {
    report.warnings.push(`VACUUM (ANALYZE) ${VACUUMED_TABLES.join(', ')} failed: ${errorMessage(e)}`);
  }
  report.vacuumMs = round(performance.now() - t);
}

/** Runs one statement, keeping the run's and the batch's longest statement time. */
async function timed<T>(report: ClearHistoryReport, batch: { ms: number }, label: string, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await fn();
  } finally {
    const ms = round(performance.now() - t);
    batch.ms = Math.max(batch.ms, ms);
    if (ms > report.longestStatementMs) {
      report.longestStatementMs = ms;
      report.longestStatement = label;
    }
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
