import type pg from 'pg';
import { MgrError } from '../errors.js';
import { bbmTablesExist, migrationColumns, toMigrationRow, type MigrationDbRow } from './schema.js';
import { MIGRATION_STATUS, statusName, type CursorKind, type MigrationRow, type MigrationStatusName } from './types.js';

/** Default attempts per batch before the migration fails with code 4 (GitLab's default). */
export const DEFAULT_MAX_ATTEMPTS = 5;
/** A running job whose heartbeat is older than this belongs to a dead worker (overridable per run). */
export const DEFAULT_STALE_AFTER_MS = 60_000;
/** Window of finished jobs the rate (and so the ETA) is computed over. */
const RATE_WINDOW_SEC = 300;

export interface EnqueueOptions {
  name: string;
  /** The registered work function (usually the same as name). */
  jobSignatureName: string;
  batchSize: number;
  cursorKind: CursorKind;
  /** Bounds of the cursor (inclusive); null when there is nothing to migrate. */
  minValue: string | null;
  maxValue: string | null;
  /** pg_keyset: the table and column batches page over. */
  tableName?: string;
  columnName?: string;
  /** etcd_range: the key prefix (relative to /sorna/{ns}/) and the revision reads are pinned to. */
  etcdPrefix?: string;
  pinnedRevision?: string;
  /** Items in range, for progress; left null the first worker asks the definition. */
  totalEstimate?: number;
  /** @default 5 */
  maxAttempts?: number;
}

/**
 * Enqueues a migration unless one with this name exists (then returns that one unchanged), so
 * an upgrade step can call it on every rerun.
 */
export async function enqueueBackgroundMigration(
  client: pg.ClientBase,
  o: EnqueueOptions,
): Promise<{ migration: MigrationRow; created: boolean }> {
  const inserted = await client.query<MigrationDbRow>(
    `INSERT INTO mgr.batched_background_migrations
       (name, job_signature_name, batch_size, cursor_kind, min_value, max_value, table_name, column_name, etcd_prefix,
        pinned_revision, total_tuple_count, max_attempts)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
     ON CONFLICT (name) DO NOTHING
     RETURNING ${migrationColumns()}`,
    [
      o.name,
      o.jobSignatureName,
      o.batchSize,
      o.cursorKind,
      o.minValue,
      o.maxValue,
      o.tableName ?? null,
      o.columnName ?? null,
      o.etcdPrefix ?? null,
      o.pinnedRevision ?? null,
      o.totalEstimate ?? null,
      o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
    ],
  );
  if (inserted.rows[0]) return { migration: toMigrationRow(inserted.rows[0]), created: true };
  return { migration: await getMigration(client, o.name), created: false };
}

export async function findMigration(client: pg.ClientBase, name: string): Promise<MigrationRow | undefined> {
  if (!(await bbmTablesExist(client))) return undefined;
  const r = await client.query<MigrationDbRow>(`SELECT ${migrationColumns()} FROM mgr.batched_background_migrations WHERE name = $1`, [name]);
  return r.rows[0] ? toMigrationRow(r.rows[0]) : undefined;
}

export async function getMigration(client: pg.ClientBase, name: string): Promise<MigrationRow> {
  const m = await findMigration(client, name);
  if (!m) throw unknownMigration(name, await listMigrationNames(client));
  return m;
}

export async function listMigrations(client: pg.ClientBase): Promise<MigrationRow[]> {
  if (!(await bbmTablesExist(client))) return [];
  const r = await client.query<MigrationDbRow>(`SELECT ${migrationColumns()} FROM mgr.batched_background_migrations ORDER BY id`);
  return r.rows.map(toMigrationRow);
}

async function listMigrationNames(client: pg.ClientBase): Promise<string[]> {
  return (await listMigrations(client)).map((m) => m.name);
}

function unknownMigration(name: string, known: string[]): MgrError {
  return new MgrError('usage', `no background migration named "${name}"`, {
    hint: known.length ? `known: ${known.join(', ')}` : 'none has been enqueued yet (the 22.03 upgrade enqueues images_from_etcd)',
  });
}

export interface MigrationStatus {
  name: string;
  status: MigrationStatusName | 'unknown';
  statusCode: number;
  /** Below 100 until the migration is really finished. */
  progressPct: number;
  rowsDone: number;
  totalEstimate: number | null;
  /** Items per second over the last 5 minutes of finished batches (whole run once finished). */
  ratePerSec: number | null;
  etaSec: number | null;
  batchSize: number;
  jobs: { active: number; finished: number; failed: number };
  /** Workers holding a batch with a fresh heartbeat. */
  liveWorkers: string[];
  failureErrorCode: number | null;
  failureError: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  updatedAt: string;
}

interface StatusDbRow extends MigrationDbRow {
  active: number;
  finished: number;
  failed: number;
  live_workers: string[] | null;
  window_rows: number | null;
  window_sec: number | null;
  run_sec: number | null;
}

/** Status of one migration (name) or all, oldest first. Read-only: creates nothing. */
export async function backgroundMigrationStatus(
  client: pg.ClientBase,
  name?: string,
  opts: { staleAfterMs?: number } = {},
): Promise<MigrationStatus[]> {
  if (!(await bbmTablesExist(client))) {
    if (name !== undefined) throw unknownMigration(name, []);
    return [];
  }
  const r = await client.query<StatusDbRow>(
    `SELECT ${migrationColumns('m')},
       count(*) FILTER (WHERE j.status = 1)::int AS active,
       count(*) FILTER (WHERE j.status = 2)::int AS finished,
       count(*) FILTER (WHERE j.status = 3)::int AS failed,
       array_agg(DISTINCT j.worker) FILTER (WHERE j.status = 1 AND j.heartbeat_at >= now() - make_interval(secs => $2::float8 / 1000)) AS live_workers,
       sum(j.rows) FILTER (WHERE j.status = 2 AND j.finished_at >= now() - make_interval(secs => $3)) AS window_rows,
       extract(epoch FROM now() - greatest(m.started_at, now() - make_interval(secs => $3)))::float8 AS window_sec,
       extract(epoch FROM coalesce(m.finished_at, now()) - m.started_at)::float8 AS run_sec
     FROM mgr.batched_background_migrations m
     LEFT JOIN mgr.batched_background_migration_jobs j ON j.migration_id = m.id
     WHERE $1::text IS NULL OR m.name = $1
     GROUP BY m.id
     ORDER BY m.id`,
    [name ?? null, opts.staleAfterMs ?? DEFAULT_STALE_AFTER_MS, RATE_WINDOW_SEC],
  );
  if (name !== undefined && r.rows.length === 0) throw unknownMigration(name, await listMigrationNames(client));
  return r.rows.map((row) => {
    const m = toMigrationRow(row);
    const finished = m.status === MIGRATION_STATUS.finished;
    const total = m.totalTupleCount;
    const rate = finished
      ? row.run_sec
        ? m.rowsDone / row.run_sec
        : null
      : row.window_sec && row.window_sec > 0
        ? Number(row.window_rows ?? 0) / row.window_sec
        : null;
    const remaining = total === null ? null : Math.max(0, total - m.rowsDone);
    return {
      name: m.name,
      status: statusName(m.status),
      statusCode: m.status,
      progressPct: progressPct(m.rowsDone, total, finished),
      rowsDone: m.rowsDone,
      totalEstimate: total,
      ratePerSec: rate === null ? null : Math.round(rate * 10) / 10,
      etaSec: finished ? 0 : remaining !== null && rate ? Math.ceil(remaining / rate) : null,
      batchSize: m.batchSize,
      jobs: { active: row.active, finished: row.finished, failed: row.failed },
      liveWorkers: (row.live_workers ?? []).filter((w): w is string => w !== null),
      failureErrorCode: m.failureErrorCode,
      failureError: m.failureError,
      startedAt: m.startedAt?.toISOString() ?? null,
      finishedAt: m.finishedAt?.toISOString() ?? null,
      updatedAt: m.updatedAt.toISOString(),
    };
  });
}

/** 100 only when finished: an estimate that is reached early shows 99.9, never a premature 100. */
export function progressPct(done: number, total: number | null, finished: boolean): number {
  if (finished) return 100;
  if (!total || total <= 0) return 0;
  return Math.min(99.9, Math.floor((done * 1000) / total) / 10);
}

export interface StatusChange {
  name: string;
  from: MigrationStatusName | 'unknown';
  to: MigrationStatusName;
}

/**
 * Pauses one migration (or all that are active or running): workers stop before their next
 * batch; a batch in flight may finish. Returns what changed (or would, with dryRun).
 */
export function pauseBackgroundMigration(client: pg.ClientBase, name?: string, opts: { dryRun?: boolean } = {}): Promise<StatusChange[]> {
  return changeStatus(client, name, [MIGRATION_STATUS.active, MIGRATION_STATUS.running], MIGRATION_STATUS.paused, opts.dryRun);
}

/** Resumes one paused migration (or all): workers take batches again. */
export function resumeBackgroundMigration(client: pg.ClientBase, name?: string, opts: { dryRun?: boolean } = {}): Promise<StatusChange[]> {
  return changeStatus(client, name, [MIGRATION_STATUS.paused], MIGRATION_STATUS.active, opts.dryRun);
}

async function changeStatus(client: pg.ClientBase, name: string | undefined, from: number[], to: number, dryRun = false): Promise<StatusChange[]> {
  if (name !== undefined) await getMigration(client, name);
  else if (!(await bbmTablesExist(client))) return [];
  const selected = `SELECT id, name, status FROM mgr.batched_background_migrations
    WHERE status = ANY($1::smallint[]) AND ($2::text IS NULL OR name = $2)`;
  const r = dryRun
    ? await client.query<{ name: string; status: number }>(`${selected} ORDER BY id`, [from, name ?? null])
    : await client.query<{ name: string; status: number }>(
        `WITH prev AS (${selected} FOR UPDATE)
         UPDATE mgr.batched_background_migrations m SET status = $3 FROM prev WHERE m.id = prev.id
         RETURNING m.name, prev.status`,
        [from, name ?? null, to],
      );
  return r.rows.map((row) => ({ name: row.name, from: statusName(row.status), to: statusName(to) as MigrationStatusName }));
}

/** Changes the batch size; the next batch any worker claims uses it. */
export async function setBatchSize(
  client: pg.ClientBase,
  name: string,
  batchSize: number,
  opts: { dryRun?: boolean } = {},
): Promise<{ name: string; from: number; to: number }> {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new MgrError('usage', `batch size must be a whole number ≥ 1, got ${batchSize}`);
  const m = await getMigration(client, name);
  if (!opts.dryRun) await client.query('UPDATE mgr.batched_background_migrations SET batch_size = $2 WHERE id = $1', [m.id, batchSize]);
  return { name, from: m.batchSize, to: batchSize };
}
