import type pg from 'pg';
import { MGR_LOCK_CLASS } from '../engine/sql-migrations.js';
import { CURSOR_KINDS, type MigrationRow } from './types.js';

/** objid under MGR_LOCK_CLASS serialising the first creation of these tables (1 is the schema runner's). */
const BBM_DDL_LOCK = 2;

/**
 * mgr's own bookkeeping, in schema `mgr` so `public` stays exactly Backend.AI's catalog. The
 * status and error-code values are GitLab's, so `UPDATE batched_background_migrations SET status
 * = 0 WHERE name = '…'` pauses a migration (with `mgr` on the session's search_path).
 */
const BBM_DDL = `
CREATE SCHEMA IF NOT EXISTS mgr;
CREATE TABLE IF NOT EXISTS mgr.batched_background_migrations (
  id bigserial PRIMARY KEY,
  name text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  started_at timestamptz,
  finished_at timestamptz,
  min_value text,
  max_value text,
  batch_size integer NOT NULL CHECK (batch_size > 0),
  status smallint NOT NULL DEFAULT 1 CHECK (status IN (0, 1, 2, 3, 4)),
  job_signature_name text NOT NULL,
  cursor_kind text NOT NULL CHECK (cursor_kind IN (${CURSOR_KINDS.map((k) => `'${k}'`).join(', ')})),
  table_name text,
  column_name text,
  etcd_prefix text,
  pinned_revision bigint,
  failure_error_code smallint CHECK (failure_error_code IN (0, 1, 2, 3, 4)),
  failure_error text,
  total_tuple_count bigint,
  rows_done bigint NOT NULL DEFAULT 0,
  max_attempts integer NOT NULL DEFAULT 5 CHECK (max_attempts > 0)
);
CREATE TABLE IF NOT EXISTS mgr.batched_background_migration_jobs (
  id bigserial PRIMARY KEY,
  migration_id bigint NOT NULL REFERENCES mgr.batched_background_migrations (id) ON DELETE CASCADE,
  kind text NOT NULL DEFAULT 'batch' CHECK (kind IN ('batch', 'final')),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  min_value text,
  max_value text,
  batch_size integer,
  status smallint NOT NULL CHECK (status IN (1, 2, 3)), -- 1 active (claimed), 2 finished, 3 failed
  failure_error_code smallint,
  error text,
  attempts integer NOT NULL DEFAULT 0,
  rows bigint,
  skipped bigint,
  worker text,
  claimed_at timestamptz,
  heartbeat_at timestamptz
);
CREATE INDEX IF NOT EXISTS batched_background_migration_jobs_migration_status
  ON mgr.batched_background_migration_jobs (migration_id, status);
-- updated_at also moves when an operator pauses or resumes from SQL.
CREATE OR REPLACE FUNCTION mgr.bbm_touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
CREATE OR REPLACE TRIGGER bbm_touch_updated_at BEFORE UPDATE ON mgr.batched_background_migrations
  FOR EACH ROW EXECUTE FUNCTION mgr.bbm_touch_updated_at();
CREATE OR REPLACE TRIGGER bbm_touch_updated_at BEFORE UPDATE ON mgr.batched_background_migration_jobs
  FOR EACH ROW EXECUTE FUNCTION mgr.bbm_touch_updated_at();
`;

/** Creates the tables if missing; safe to call from many workers at once (serialised by an advisory lock). */
export async function ensureBbmTables(client: pg.ClientBase): Promise<void> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [MGR_LOCK_CLASS, BBM_DDL_LOCK]);
    await client.query(BBM_DDL);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

/** True when the tables exist (read-only callers such as status and --dry-run must not create them). */
export async function bbmTablesExist(client: pg.ClientBase): Promise<boolean> {
  const r = await client.query<{ t: string | null }>(`SELECT to_regclass('mgr.batched_background_migrations')::text AS t`);
  return r.rows[0]?.t != null;
}

const MIGRATION_COLUMN_NAMES = [
  'id', 'name', 'created_at', 'updated_at', 'started_at', 'finished_at', 'min_value', 'max_value', 'batch_size', 'status',
  'job_signature_name', 'cursor_kind', 'table_name', 'column_name', 'etcd_prefix', 'pinned_revision', 'failure_error_code',
  'failure_error', 'total_tuple_count', 'rows_done', 'max_attempts',
] as const;

/** The select list of a migration row (optionally qualified by a table alias); revisions as text. */
export function migrationColumns(alias?: string): string {
  const p = alias ? `${alias}.` : '';
  return MIGRATION_COLUMN_NAMES.map((c) => (c === 'pinned_revision' ? `${p}pinned_revision::text AS pinned_revision` : p + c)).join(', ');
}

export interface MigrationDbRow {
  id: number;
  name: string;
  created_at: Date;
  updated_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
  min_value: string | null;
  max_value: string | null;
  batch_size: number;
  status: number;
  job_signature_name: string;
  cursor_kind: MigrationRow['cursorKind'];
  table_name: string | null;
  column_name: string | null;
  etcd_prefix: string | null;
  pinned_revision: string | null;
  failure_error_code: number | null;
  failure_error: string | null;
  total_tuple_count: number | null;
  rows_done: number;
  max_attempts: number;
}

export function toMigrationRow(r: MigrationDbRow): MigrationRow {
  return {
    id: Number(r.id),
    name: r.name,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    minValue: r.min_value,
    maxValue: r.max_value,
    batchSize: r.batch_size,
    status: r.status,
    jobSignatureName: r.job_signature_name,
    cursorKind: r.cursor_kind,
    tableName: r.table_name,
    columnName: r.column_name,
    etcdPrefix: r.etcd_prefix,
    pinnedRevision: r.pinned_revision,
    failureErrorCode: r.failure_error_code,
    failureError: r.failure_error,
    totalTupleCount: r.total_tuple_count === null ? null : Number(r.total_tuple_count),
    rowsDone: Number(r.rows_done),
    maxAttempts: r.max_attempts,
  };
}
