import { createHash } from 'node:crypto';
import pg from 'pg';
import { MgrError, type LockHolderInfo } from '../errors.js';
import type { Logger } from '../log.js';
import { pgClientConfig, pgUnreachable, type PgConfig, type PgStore } from '../stores/pg.js';
import { currentHolder, lockBusy, monotonicMs, sleep } from './common.js';
import type { HeldLock, LockBackend, LockRequest } from './types.js';

/**
 * mgr's advisory-lock key space: the two-int4 form `pg_advisory_lock(classid, objid)` with
 * classid = "mgr\0" as an int4. Backend.AI's LockID values (42, 91, 92, 191, 192, 195, 196)
 * use the single-bigint form, which pg_locks keeps apart (objsubid 1 vs 2), so no mgr key can
 * ever collide with a manager lock whatever objid a name hashes to.
 *
 * Mapping to the manager's LockIDs: none of mgr's jobs is the same job as a manager timer
 * (mgr's clear-history is not the manager's error-log cleanup, LOCKID_LOG_CLEANUP_TIMER; an
 * upgrade is not a scheduler tick), so every mgr lock lives in this key space.
 */
export const MGR_PG_LOCK_CLASS = 0x6d677200;

/** The two int4 keys of a lock name: mgr's class and the first 4 bytes of sha256(name). */
export function pgLockKey(name: string): { classid: number; objid: number } {
  return { classid: MGR_PG_LOCK_CLASS, objid: createHash('sha256').update(name).digest().readInt32BE(0) };
}

/** `mgr:{host}:{pid}:{purpose}` — PostgreSQL keeps the first 63 bytes. */
const APP_NAME_RE = /^mgr:([^:]*):(\d+):(.*)$/;

/** First delay between pg_try_advisory_lock attempts, and its cap (the delay grows ×1.5). */
const POLL_MIN_MS = 20;
const POLL_MAX_MS = 250;

/**
 * Session-level advisory lock on a dedicated connection (not from the pool, whose clients are
 * shared and recycled): PostgreSQL drops it the moment that connection ends, so a crashed
 * holder frees it at once. Waiting is pg_try_advisory_lock in a loop until the wait limit.
 * Holder info comes from pg_locks joined with pg_stat_activity: application_name names the
 * mgr process, state_change is when it took the lock (the connection runs nothing after).
 */
export class PgAdvisoryLockBackend implements LockBackend {
  readonly kind = 'pg_advisory' as const;

  constructor(private readonly opts: { db: PgConfig; pg: PgStore; log: Logger }) {}

  async acquire(req: LockRequest): Promise<HeldLock> {
    const { classid, objid } = pgLockKey(req.name);
    const holder = currentHolder(req.purpose);
    const client = new pg.Client({
      ...pgClientConfig(this.opts.db),
      application_name: `mgr:${holder.host}:${holder.pid}:${req.purpose ?? req.name}`,
    });
    const lost = new AbortController();
    let released = false;
    const loseLock = (why: string) => {
      if (released || lost.signal.aborted) return;
      this.opts.log.error({ lock: req.name }, `pg_advisory lock lost: ${why}`);
      lost.abort(new MgrError('stepFailed', `lock "${req.name}" (pg_advisory ${classid},${objid}) was lost: ${why}`));
    };
    client.on('error', (e) => loseLock(`its PostgreSQL connection failed (${e.message})`));
    client.on('end', () => loseLock('its PostgreSQL connection ended'));
    try {
      await client.connect();
    } catch (e) {
      throw pgUnreachable(this.opts.db, e);
    }
    try {
      const deadline = monotonicMs() + req.waitMs;
      let delay = POLL_MIN_MS;
      for (;;) {
        const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::int4, $2::int4) AS ok', [classid, objid]);
        if (r.rows[0]!.ok) break;
        const remaining = deadline - monotonicMs();
        if (remaining <= 0) throw lockBusy('pg_advisory', req.name, req.waitMs, await queryHolder(client, classid, objid));
        await sleep(Math.min(remaining, delay * (0.8 + 0.4 * Math.random())), req.signal);
        delay = Math.min(POLL_MAX_MS, delay * 1.5);
      }
    } catch (e) {
      released = true;
      await client.end().catch(() => undefined);
      throw e;
    }
    return {
      name: req.name,
      holder,
      lost: lost.signal,
      release: async () => {
        if (released) return;
        released = true;
        try {
          const r = await client.query<{ ok: boolean }>('SELECT pg_advisory_unlock($1::int4, $2::int4) AS ok', [classid, objid]);
          if (!r.rows[0]!.ok) this.opts.log.warn({ lock: req.name }, 'pg_advisory_unlock found no lock to release');
        } finally {
          // Ending the session releases its locks even when the unlock query failed.
          await client.end().catch(() => undefined);
        }
      },
    };
  }

  async holder(name: string): Promise<LockHolderInfo | undefined> {
    const { classid, objid } = pgLockKey(name);
    return this.opts.pg.withClient((c) => queryHolder(c, classid, objid));
  }
}

async function queryHolder(c: pg.ClientBase, classid: number, objid: number): Promise<LockHolderInfo | undefined> {
  // pg_locks shows the two int4 keys as unsigned oids.
  const r = await c.query<{ pid: number; application_name: string | null; client_addr: string | null; state_change: Date | null }>(
    `SELECT a.pid, a.application_name, host(a.client_addr) AS client_addr, a.state_change
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid`,
    [classid >>> 0, objid >>> 0],
  );
  const row = r.rows[0];
  if (!row) return undefined;
  const since = row.state_change?.toISOString() ?? 'unknown';
  const m = APP_NAME_RE.exec(row.application_name ?? '');
  if (m) return { host: m[1]!, pid: Number(m[2]), since, purpose: m[3]! };
  return {
    host: row.client_addr ?? 'local socket',
    pid: row.pid,
    since,
    purpose: `not mgr: PostgreSQL backend pid ${row.pid}, application_name ${JSON.stringify(row.application_name ?? '')}`,
  };
}
