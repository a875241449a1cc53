import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { MgrError } from '../errors.js';
import { MIGRATIONS_DIR } from '../paths.js';
import { PG_ERROR, pgErrorCode } from '../stores/pg.js';
import { ALEMBIC_ROWS_AFTER, revisionIndex, type Revision } from './releases.js';

/**
 * mgr's own runner for the SQL files in drizzle/<release>/<revision>_<slug>.sql. drizzle's
 * migrator is not used: it takes no lock, skips an out-of-order file behind its high-water mark,
 * never checks hashes and runs all pending files in one transaction. Here:
 * - pending = files whose name is not recorded (a set difference, not a high-water mark);
 * - each file's sha256 is recorded and compared on every run: an edited applied file is an error;
 * - one transaction per file, under a transaction-scoped advisory lock, with lock_timeout so DDL
 *   never queues behind a long reader (and with it every later query); a lock timeout is retried;
 * - alembic_version follows each file exactly as alembic would write it, so Backend.AI's own
 *   alembic can take over afterwards, and a database alembic already migrated is adopted.
 */

export interface SqlMigration {
  /** e.g. "22.03/015d84d5a5ef_add_image_table" */
  name: string;
  release: string;
  revision: Revision;
  file: string;
  sql: string;
  checksum: string;
  /** `-- verify:` lines: queries returning one boolean that must be true after the file ran. */
  verify: string[];
  /** The file's leading comment, for plans. */
  description: string;
}

/** Key for pg_advisory_xact_lock(classid, objid): mgr's class id, far from Backend.AI's LockID values. */
export const MGR_LOCK_CLASS = 0x6d6772; // "mgr"
export const SCHEMA_MIGRATION_LOCK = 1;

export function loadSqlMigrations(dir = MIGRATIONS_DIR): SqlMigration[] {
  const out: SqlMigration[] = [];
  for (const release of readdirSync(dir).filter((d) => /^\d+\.\d+$/.test(d))) {
    for (const f of readdirSync(path.join(dir, release)).filter((x) => x.endsWith('.sql'))) {
      const m = /^([0-9a-f]{12})_(.+)\.sql$/.exec(f);
      if (!m || revisionIndex(m[1]!) < 0) {
        throw new MgrError('integrity', `unexpected migration file ${release}/${f}: names are <alembic revision>_<slug>.sql for a known revision`);
      }
      const file = path.join(dir, release, f);
      const sql = readFileSync(file, 'utf8');
      const comments = sql.split('\n').filter((l) => l.startsWith('--'));
      out.push({
        name: `${release}/${f.replace(/\.sql$/, '')}`,
        release,
        revision: m[1] as Revision,
        file,
        sql,
        checksum: createHash('sha256').update(sql).digest('hex'),
        verify: comments.filter((l) => l.startsWith('-- verify:')).map((l) => l.slice('-- verify:'.length).trim()),
        description: comments
          .filter((l) => !l.startsWith('-- verify:'))
          .map((l) => l.replace(/^--\s?/, ''))
          .join(' '),
      });
    }
  }
  return out.sort((a, b) => revisionIndex(a.revision) - revisionIndex(b.revision));
}

export const MGR_TABLES_DDL = `
CREATE SCHEMA IF NOT EXISTS mgr;
CREATE TABLE IF NOT EXISTS mgr.schema_migrations (
  name text PRIMARY KEY,
  release text NOT NULL,
  revision text NOT NULL,
  checksum text NOT NULL,
  adopted boolean NOT NULL DEFAULT false,
  applied_at timestamptz NOT NULL DEFAULT now(),
  duration_ms integer
);
CREATE TABLE IF NOT EXISTS mgr.upgrade_steps (
  step_id text PRIMARY KEY,
  module text NOT NULL,
  title text NOT NULL,
  kind text NOT NULL,
  status text NOT NULL CHECK (status IN ('running', 'done', 'failed', 'skipped')),
  attempts integer NOT NULL DEFAULT 0,
  started_at timestamptz,
  finished_at timestamptz,
  duration_ms integer,
  detail jsonb,
  result jsonb,
  error text
);
CREATE TABLE IF NOT EXISTS mgr.upgrade_runs (
  id bigserial PRIMARY KEY,
  target text NOT NULL,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  outcome text,
  host text NOT NULL,
  pid integer NOT NULL,
  backup_path text,
  from_release text
);
`;

export async function ensureMgrTables(client: pg.ClientBase): Promise<void> {
  // Serialised: two first-ever runs must not race on CREATE TABLE IF NOT EXISTS.
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [MGR_LOCK_CLASS, SCHEMA_MIGRATION_LOCK]);
    await client.query(MGR_TABLES_DDL);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw e;
  }
}

export interface AppliedMigration {
  name: string;
  checksum: string;
  adopted: boolean;
}

export async function appliedMigrations(client: pg.ClientBase): Promise<Map<string, AppliedMigration>> {
  const exists = await client.query(`SELECT to_regclass('mgr.schema_migrations') AS t`);
  if (exists.rows[0]?.t === null) return new Map();
  const r = await client.query<AppliedMigration>('SELECT name, checksum, adopted FROM mgr.schema_migrations');
  return new Map(r.rows.map((row) => [row.name, row]));
}

/** An applied file whose content changed since is an error: history must not be rewritten silently. */
export function checkChecksums(files: SqlMigration[], applied: Map<string, AppliedMigration>): void {
  const edited = files.filter((f) => applied.has(f.name) && applied.get(f.name)!.checksum !== f.checksum);
  if (edited.length) {
    throw new MgrError(
      'integrity',
      `applied migration file${edited.length > 1 ? 's were' : ' was'} edited after being applied: ${edited
        .map((f) => `${f.file} (recorded sha256 ${applied.get(f.name)!.checksum.slice(0, 12)}…, now ${f.checksum.slice(0, 12)}…)`)
        .join('; ')}`,
      { hint: 'restore the file as it was when applied (git checkout), or reinstall this mgr version; never edit an applied migration' },
    );
  }
}

/**
 * Records files that alembic already applied (revision at or before the database's alembic
 * position) as adopted, without running them.
 */
export async function adoptAlembicHistory(client: pg.ClientBase, files: SqlMigration[], alembicPosition: number): Promise<string[]> {
  const applied = await appliedMigrations(client);
  const adopted: string[] = [];
  for (const f of files) {
    if (revisionIndex(f.revision) <= alembicPosition && !applied.has(f.name)) {
      await client.query(
        `INSERT INTO mgr.schema_migrations (name, release, revision, checksum, adopted) VALUES ($1, $2, $3, $4, true) ON CONFLICT (name) DO NOTHING`,
        [f.name, f.release, f.revision, f.checksum],
      );
      adopted.push(f.name);
    }
  }
  return adopted;
}

export interface ApplyOptions {
  /** lock_timeout for the DDL (default 5 s); a timeout is retried `lockRetries` times. */
  lockTimeoutMs?: number;
  lockRetries?: number;
  onRetry?: (attempt: number, error: unknown) => void;
}

/**
 * Runs one file in one transaction, with alembic_version updated in the same transaction.
 * Returns false when it was already recorded (idempotent).
 */
export async function applySqlMigration(client: pg.ClientBase, m: SqlMigration, opts: ApplyOptions = {}): Promise<boolean> {
  const retries = opts.lockRetries ?? 5;
  for (let attempt = 1; ; attempt++) {
    const started = Date.now();
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1, $2)', [MGR_LOCK_CLASS, SCHEMA_MIGRATION_LOCK]);
      const done = await client.query('SELECT checksum FROM mgr.schema_migrations WHERE name = $1', [m.name]);
      if (done.rowCount) {
        await client.query('ROLLBACK');
        checkChecksums([m], new Map([[m.name, { name: m.name, checksum: done.rows[0].checksum as string, adopted: false }]]));
        return false;
      }
      await client.query(`SET LOCAL lock_timeout = '${Math.max(1, Math.floor(opts.lockTimeoutMs ?? 5000))}ms'`);
      await client.query(m.sql);
      await client.query('DELETE FROM alembic_version');
      for (const row of ALEMBIC_ROWS_AFTER[m.revision]) {
        await client.query('INSERT INTO alembic_version (version_num) VALUES ($1)', [row]);
      }
      await client.query(
        'INSERT INTO mgr.schema_migrations (name, release, revision, checksum, duration_ms) VALUES ($1, $2, $3, $4, $5)',
        [m.name, m.release, m.revision, m.checksum, Date.now() - started],
      );
      await client.query('COMMIT');
      return true;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (pgErrorCode(e) === PG_ERROR.lockNotAvailable && attempt <= retries) {
        opts.onRetry?.(attempt, e);
        await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** attempt)));
        continue;
      }
      throw new MgrError('stepFailed', `migration ${m.name} failed: ${(e as Error).message}`, {
        cause: e,
        hint:
          pgErrorCode(e) === PG_ERROR.lockNotAvailable
            ? 'another session holds a lock on the table; find it in pg_stat_activity and end it, then rerun'
            : 'the transaction was rolled back; fix the cause and rerun `mgr upgrade` to resume',
      });
    }
  }
}

/** Runs the file's `-- verify:` queries; returns the ones that did not hold. */
export async function verifySqlMigration(client: pg.ClientBase, m: SqlMigration): Promise<string[]> {
  const failed: string[] = [];
  for (const q of m.verify) {
    const r = await client.query(q);
    const v = r.rows[0] ? Object.values(r.rows[0])[0] : false;
    if (v !== true) failed.push(q);
  }
  return failed;
}
