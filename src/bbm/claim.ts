import os from 'node:os';
import type pg from 'pg';
import { errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import type { Stores } from '../stores/index.js';
import { backgroundMigrationDefinition, registeredBackgroundMigrations } from './registry.js';
import { migrationColumns, toMigrationRow, type MigrationDbRow } from './schema.js';
import {
  BackgroundMigrationFailure,
  FAILURE_CODE,
  MIGRATION_STATUS,
  type BackgroundMigrationDefinition,
  type FailureCode,
  type MigrationRow,
  type WorkResult,
} from './types.js';

/**
 * The bookkeeping of batches. Claiming is exactly-once across processes and machines: one short
 * transaction locks the migration row FOR UPDATE (which also re-reads its status, so a pause
 * from SQL stops the next claim), computes the next range after the last claimed one, inserts
 * the job and commits. The work runs outside that transaction; finishing is a second short
 * transaction that only counts if the job is still this worker's attempt.
 */

export interface ClaimedJob {
  id: number;
  kind: 'batch' | 'final';
  min: string | null;
  max: string | null;
  attempts: number;
  worker: string;
}

export type Claim =
  | { kind: 'job'; job: ClaimedJob; migration: MigrationRow; def: BackgroundMigrationDefinition }
  /** Nothing to take now: batches are in flight elsewhere (they finish or go stale). */
  | { kind: 'wait'; migration: MigrationRow }
  | { kind: 'stop'; status: 'finished' | 'paused' | 'failed'; migration: MigrationRow };

interface JobDbRow {
  id: number;
  kind: 'batch' | 'final';
  min_value: string | null;
  max_value: string | null;
  attempts: number;
  worker: string;
}

function toJob(r: JobDbRow): ClaimedJob {
  return { id: Number(r.id), kind: r.kind, min: r.min_value, max: r.max_value, attempts: r.attempts, worker: r.worker };
}

export async function claimNextJob(
  stores: Stores,
  migrationId: number,
  worker: string,
  opts: { staleAfterMs: number; log: Logger },
): Promise<Claim> {
  return stores.pg.withTransaction(async (c) => {
    const r = await c.query<MigrationDbRow>(`SELECT ${migrationColumns()} FROM mgr.batched_background_migrations WHERE id = $1 FOR UPDATE`, [migrationId]);
    if (!r.rows[0]) throw new Error(`background migration ${migrationId} disappeared`);
    const m = toMigrationRow(r.rows[0]);
    if (m.status === MIGRATION_STATUS.paused) return { kind: 'stop', status: 'paused', migration: m };
    if (m.status === MIGRATION_STATUS.finished) return { kind: 'stop', status: 'finished', migration: m };
    if (m.status === MIGRATION_STATUS.failed) return { kind: 'stop', status: 'failed', migration: m };
    const def = backgroundMigrationDefinition(m.jobSignatureName);
    if (!def) {
      const failed = await failMigration(c, m, FAILURE_CODE.invalidJobSignature, `no work function named "${m.jobSignatureName}" is registered in this mgr (registered: ${registeredBackgroundMigrations().join(', ') || 'none'})`);
      return { kind: 'stop', status: 'failed', migration: failed };
    }
    const ctx = { stores, migration: m, log: opts.log };

    // 1. A new batch, while any is left: every batch runs once before a failed one is retried.
    const last = await c.query<{ max_value: string | null }>(
      `SELECT max_value FROM mgr.batched_background_migration_jobs WHERE migration_id = $1 AND kind = 'batch' ORDER BY id DESC LIMIT 1`,
      [m.id],
    );
    const after = last.rows[0]?.max_value ?? undefined;
    if (m.maxValue !== null && after !== m.maxValue) {
      let range;
      try {
        range = await def.nextBatch({ ...ctx, client: c }, after, m.batchSize);
      } catch (e) {
        if (!(e instanceof BackgroundMigrationFailure)) throw e;
        return { kind: 'stop', status: 'failed', migration: await failMigration(c, m, e.failureCode, e.message) };
      }
      if (range) {
        const job = await c.query<JobDbRow>(
          `INSERT INTO mgr.batched_background_migration_jobs
             (migration_id, kind, min_value, max_value, batch_size, status, attempts, worker, claimed_at, heartbeat_at)
           VALUES ($1, 'batch', $2, $3, $4, 1, 1, $5, now(), now())
           RETURNING id, kind, min_value, max_value, attempts, worker`,
          [m.id, range.min, range.max, m.batchSize, worker],
        );
        return { kind: 'job', job: toJob(job.rows[0]!), migration: await markRunning(c, m), def };
      }
    }

    // 2. A retry: a failed batch with attempts left, or one whose worker stopped heart-beating
    // (or is a process of this host that no longer exists: no need to wait out its lease).
    const inFlight = await c.query<{ worker: string }>(
      `SELECT DISTINCT worker FROM mgr.batched_background_migration_jobs WHERE migration_id = $1 AND status = 1`,
      [m.id],
    );
    const goneHere = inFlight.rows.map((r) => r.worker).filter(isGoneLocalWorker);
    const retry = await c.query<JobDbRow>(
      `UPDATE mgr.batched_background_migration_jobs SET status = 1, attempts = attempts + 1, worker = $2, claimed_at = now(), heartbeat_at = now()
       WHERE id = (
         SELECT id FROM mgr.batched_background_migration_jobs
         WHERE migration_id = $1 AND (
           (status = 3 AND attempts < $3) OR
           (status = 1 AND (heartbeat_at < now() - make_interval(secs => $4::float8 / 1000) OR worker = ANY ($5::text[]))))
         ORDER BY id LIMIT 1)
       RETURNING id, kind, min_value, max_value, attempts, worker`,
      [m.id, worker, m.maxAttempts, opts.staleAfterMs, goneHere],
    );
    if (retry.rows[0]) {
      const job = toJob(retry.rows[0]);
      opts.log.warn({ migration: m.name, job: job.id, attempt: job.attempts, range: [job.min, job.max] }, 'retrying a batch');
      return { kind: 'job', job, migration: await markRunning(c, m), def };
    }

    // 3. Nothing to take: wait for batches in flight, or finalize, or finish.
    const counts = await c.query<{ active: number; failed: number; final: number }>(
      `SELECT count(*) FILTER (WHERE status = 1)::int AS active, count(*) FILTER (WHERE status = 3)::int AS failed,
              count(*) FILTER (WHERE kind = 'final')::int AS final
       FROM mgr.batched_background_migration_jobs WHERE migration_id = $1`,
      [m.id],
    );
    const { active, failed, final } = counts.rows[0]!;
    if (active > 0) return { kind: 'wait', migration: m };
    if (failed > 0) {
      const e = await lastJobError(c, m.id);
      return { kind: 'stop', status: 'failed', migration: await failMigration(c, m, FAILURE_CODE.tooManyRetries, e) };
    }
    if (def.finalize && final === 0) {
      const job = await c.query<JobDbRow>(
        `INSERT INTO mgr.batched_background_migration_jobs (migration_id, kind, status, attempts, worker, claimed_at, heartbeat_at)
         VALUES ($1, 'final', 1, 1, $2, now(), now())
         RETURNING id, kind, min_value, max_value, attempts, worker`,
        [m.id, worker],
      );
      return { kind: 'job', job: toJob(job.rows[0]!), migration: await markRunning(c, m), def };
    }
    const done = await c.query<MigrationDbRow>(
      `UPDATE mgr.batched_background_migrations SET status = 2, finished_at = now(), failure_error_code = NULL, failure_error = NULL
       WHERE id = $1 RETURNING ${migrationColumns()}`,
      [m.id],
    );
    opts.log.info({ migration: m.name, rows: m.rowsDone }, 'background migration finished');
    return { kind: 'stop', status: 'finished', migration: toMigrationRow(done.rows[0]!) };
  });
}

async function markRunning(c: pg.ClientBase, m: MigrationRow): Promise<MigrationRow> {
  if (m.status === MIGRATION_STATUS.running) return m;
  const r = await c.query<MigrationDbRow>(
    `UPDATE mgr.batched_background_migrations SET status = 4, started_at = coalesce(started_at, now()) WHERE id = $1 RETURNING ${migrationColumns()}`,
    [m.id],
  );
  return toMigrationRow(r.rows[0]!);
}

async function failMigration(c: pg.ClientBase, m: MigrationRow, code: FailureCode, error: string): Promise<MigrationRow> {
  const r = await c.query<MigrationDbRow>(
    `UPDATE mgr.batched_background_migrations SET status = 3, failure_error_code = $2, failure_error = $3 WHERE id = $1 RETURNING ${migrationColumns()}`,
    [m.id, code, error],
  );
  return toMigrationRow(r.rows[0]!);
}

async function lastJobError(c: pg.ClientBase, migrationId: number): Promise<string> {
  const r = await c.query<{ id: number; min_value: string | null; max_value: string | null; attempts: number; error: string | null }>(
    `SELECT id, min_value, max_value, attempts, error FROM mgr.batched_background_migration_jobs
     WHERE migration_id = $1 AND status = 3 ORDER BY updated_at DESC LIMIT 1`,
    [migrationId],
  );
  const j = r.rows[0];
  return j ? `batch ${j.id} [${j.min_value ?? ''} .. ${j.max_value ?? ''}] failed ${j.attempts} times: ${j.error ?? 'unknown error'}` : 'a batch failed';
}

/**
 * A worker name (`host:pid` or `host:pid/n`, see worker.ts) of a process on this host that has
 * exited (killed, or failed when a store went away). A reused pid only means waiting for the lease.
 */
function isGoneLocalWorker(worker: string): boolean {
  const m = /^(.*):(\d+)(?:\/\d+)?$/.exec(worker);
  if (!m || m[1] !== os.hostname()) return false;
  try {
    process.kill(Number(m[2]), 0);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/** Keeps the claim fresh; false when the job is no longer this worker's attempt (reclaimed as stale). */
export async function heartbeat(pool: pg.Pool, job: ClaimedJob): Promise<boolean> {
  const r = await pool.query(
    'UPDATE mgr.batched_background_migration_jobs SET heartbeat_at = now() WHERE id = $1 AND worker = $2 AND attempts = $3 AND status = 1',
    [job.id, job.worker, job.attempts],
  );
  return r.rowCount === 1;
}

/**
 * Records a finished batch and adds its rows to the migration's progress, once: if another
 * worker reclaimed the job meanwhile, nothing is counted here (the reclaimer counts it).
 */
export async function finishJob(
  stores: Stores,
  job: ClaimedJob,
  migrationId: number,
  result: WorkResult,
): Promise<{ counted: boolean; rowsDone: number; total: number | null }> {
  return stores.pg.withTransaction(async (c) => {
    const j = await c.query(
      `UPDATE mgr.batched_background_migration_jobs SET status = 2, rows = $4, skipped = $5, finished_at = now(), error = NULL, failure_error_code = NULL
       WHERE id = $1 AND worker = $2 AND attempts = $3 AND status = 1`,
      [job.id, job.worker, job.attempts, result.rows, result.skipped ?? 0],
    );
    const counted = j.rowCount === 1;
    const m = await c.query<{ rows_done: number; total_tuple_count: number | null }>(
      `UPDATE mgr.batched_background_migrations SET rows_done = rows_done + $2 WHERE id = $1 RETURNING rows_done, total_tuple_count`,
      [migrationId, counted && job.kind === 'batch' ? result.rows : 0],
    );
    const row = m.rows[0]!;
    return { counted, rowsDone: Number(row.rows_done), total: row.total_tuple_count === null ? null : Number(row.total_tuple_count) };
  });
}

/**
 * Records a failed attempt. Past the attempt limit the migration fails with code 4 and the
 * error kept; a BackgroundMigrationFailure fails it at once with its own code.
 */
export async function failJob(stores: Stores, job: ClaimedJob, m: MigrationRow, error: unknown): Promise<{ migrationFailed: boolean }> {
  const message = errorMessage(error);
  return stores.pg.withTransaction(async (c) => {
    const j = await c.query(
      `UPDATE mgr.batched_background_migration_jobs SET status = 3, error = $4, failure_error_code = $5
       WHERE id = $1 AND worker = $2 AND attempts = $3 AND status = 1`,
      [job.id, job.worker, job.attempts, message, error instanceof BackgroundMigrationFailure ? error.failureCode : FAILURE_CODE.unknown],
    );
    if (j.rowCount !== 1) return { migrationFailed: false };
    const permanent = error instanceof BackgroundMigrationFailure;
    if (!permanent && job.attempts < m.maxAttempts) return { migrationFailed: false };
    const code = permanent ? error.failureCode : FAILURE_CODE.tooManyRetries;
    const text = permanent ? message : `batch ${job.id} [${job.min ?? ''} .. ${job.max ?? ''}] failed ${job.attempts} times: ${message}`;
    await c.query(`UPDATE mgr.batched_background_migrations SET status = 3, failure_error_code = $2, failure_error = $3 WHERE id = $1 AND status <> 2`, [
      m.id,
      code,
      text,
    ]);
    return { migrationFailed: true };
  });
}

/**
 * Takes a failed migration up again after its cause was fixed: active again, and its failed
 * batches get a fresh attempt budget (their last error stays on the job rows).
 */
export async function reactivateFailedMigration(c: pg.ClientBase, migrationId: number): Promise<boolean> {
  const r = await c.query(
    `UPDATE mgr.batched_background_migrations SET status = 1, failure_error_code = NULL, failure_error = NULL WHERE id = $1 AND status = 3`,
    [migrationId],
  );
  if (r.rowCount !== 1) return false;
  await c.query(`UPDATE mgr.batched_background_migration_jobs SET attempts = 0 WHERE migration_id = $1 AND status = 3`, [migrationId]);
  return true;
}
