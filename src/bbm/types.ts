import type pg from 'pg';
import type { Logger } from '../log.js';
import type { Stores } from '../stores/index.js';

/**
 * Batched background migrations: long data copies split into batches that any number of worker
 * processes take one at a time, tracked in `mgr.batched_background_migrations` and
 * `mgr.batched_background_migration_jobs` (GitLab container registry's design, seed 003).
 */

/** Migration status, with GitLab's values so its runbooks' SQL works unchanged. */
export const MIGRATION_STATUS = { paused: 0, active: 1, finished: 2, failed: 3, running: 4 } as const;
export type MigrationStatusName = keyof typeof MIGRATION_STATUS;

/** `failure_error_code`, GitLab's values. */
export const FAILURE_CODE = { unknown: 0, invalidTable: 1, invalidColumn: 2, invalidJobSignature: 3, tooManyRetries: 4 } as const;
export type FailureCode = (typeof FAILURE_CODE)[keyof typeof FAILURE_CODE];

export const CURSOR_KINDS = ['pg_keyset', 'etcd_range'] as const;
export type CursorKind = (typeof CURSOR_KINDS)[number];

/** One row of mgr.batched_background_migrations. */
export interface MigrationRow {
  id: number;
  name: string;
  createdAt: Date;
  updatedAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  /** First cursor value (inclusive); null when there was nothing to migrate. */
  minValue: string | null;
  /** Last cursor value (inclusive), fixed at enqueue so items added later are not chased. */
  maxValue: string | null;
  batchSize: number;
  status: number;
  jobSignatureName: string;
  cursorKind: CursorKind;
  tableName: string | null;
  columnName: string | null;
  etcdPrefix: string | null;
  /** etcd revision every read of this migration is pinned to (one consistent snapshot). */
  pinnedRevision: string | null;
  failureErrorCode: number | null;
  failureError: string | null;
  totalTupleCount: number | null;
  rowsDone: number;
  maxAttempts: number;
}

/** An inclusive range of cursor values: one batch. */
export interface BatchRange {
  min: string;
  max: string;
}

export interface WorkResult {
  /** Items handled, counted towards progress. */
  rows: number;
  /** Of those, items set aside instead of written (e.g. quarantined); default 0. */
  skipped?: number;
}

/** What a work function gets: the stores, its migration's row (bounds, pinned revision) and a logger. */
export interface BbmContext {
  stores: Stores;
  migration: MigrationRow;
  log: Logger;
}

/**
 * What nextBatch gets: the claim's own connection, inside the transaction that holds the
 * migration row. Queries must use it, not the pool: claimers blocked on that row each hold a
 * pooled connection, so asking the pool for another could wait forever.
 */
export interface ClaimContext extends BbmContext {
  client: pg.ClientBase;
}

/** A migration's own summary once finished: counts and lines for the operator. */
export interface MigrationReport {
  counts: Record<string, number>;
  lines: string[];
  details?: Record<string, unknown>;
}

/**
 * The code of one kind of background migration, found by `job_signature_name`. Work functions
 * are idempotent by contract: a batch may run again after a worker died mid-batch.
 */
export interface BackgroundMigrationDefinition {
  name: string;
  cursorKind: CursorKind;
  /**
   * The next batch after `after` (undefined: start at the migration's min_value), `size` items
   * long and clamped to max_value; undefined when nothing is left. Called when the batch is
   * claimed, so a changed batch size applies to the next batch.
   */
  nextBatch(ctx: ClaimContext, after: string | undefined, size: number): Promise<BatchRange | undefined>;
  work(ctx: BbmContext, batch: BatchRange): Promise<WorkResult>;
  /** Items in the migration's range, for progress (called when enqueued without a total). */
  estimateTotal(ctx: BbmContext): Promise<number>;
  /**
   * Runs once after every batch finished, before the migration is marked finished, as one more
   * job with the same retry rules (for work that needs all batches done, e.g. references).
   */
  finalize?(ctx: BbmContext): Promise<WorkResult>;
  /** Summary counts and lines of a finished migration; throws MgrError('integrity') on a mismatch. */
  report?(ctx: BbmContext): Promise<MigrationReport>;
}

/** A failure that is not worth retrying: the migration fails at once with this code. */
export class BackgroundMigrationFailure extends Error {
  constructor(
    readonly failureCode: FailureCode,
    message: string,
  ) {
    super(message);
    this.name = 'BackgroundMigrationFailure';
  }
}

export function statusName(status: number): MigrationStatusName | 'unknown' {
  const hit = Object.entries(MIGRATION_STATUS).find(([, v]) => v === status);
  return hit ? (hit[0] as MigrationStatusName) : 'unknown';
}
