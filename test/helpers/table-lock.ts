import pg from 'pg';
import type { PgEndpoint } from '../../src/sandbox/services.js';

/**
 * A separate session holding an ACCESS EXCLUSIVE lock on one table: mgr stops at the first
 * statement that touches it, so a test can act (stop a store, pause a migration) at a known
 * point of a running mgr process, then let it go on.
 */
export interface TableLock {
  /** Sessions waiting for this table now (pg_locks: pg_stat_activity is snapshotted per transaction). */
  waiters(): Promise<number>;
  /** Ends the session; safe when PostgreSQL is already gone. */
  release(): Promise<void>;
}

export async function holdTableLock(endpoint: PgEndpoint, table: string): Promise<TableLock> {
  const c = new pg.Client({ ...endpoint });
  c.on('error', () => undefined); // the server may be the store a test stops
  await c.connect();
  await c.query('BEGIN');
  await c.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
  return {
    waiters: async () => (await c.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_locks WHERE NOT granted AND relation = $1::regclass', [table])).rows[0]!.n,
    release: () => c.end().catch(() => undefined),
  };
}

/** Polls `cond` every 20 ms; throws naming `what` after `timeoutMs`. */
export async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await cond()); ) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
