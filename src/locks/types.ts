import type { LockHolderInfo } from '../errors.js';

/**
 * One distributed-lock interface over the backends Backend.AI names (filelock, etcd,
 * pg_advisory); redlock is refused. mgr's own jobs take their locks through it.
 */
export interface LockRequest {
  /** What the lock guards, e.g. "mgr.upgrade", "mgr.clear-history". */
  name: string;
  /** How long to wait for a holder to let go; 0 = try once. */
  waitMs: number;
  /** Lease TTL where the backend has one (etcd); ignored elsewhere. */
  ttlMs?: number;
  /** Written as holder info where the backend can carry it. */
  purpose?: string;
}

export interface HeldLock {
  readonly name: string;
  readonly holder: LockHolderInfo;
  /** Aborted when the lock is lost (etcd lease expired): guarded work must stop. */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

export interface LockBackend {
  readonly kind: 'filelock' | 'etcd' | 'pg_advisory';
  /** Throws LockBusyError (naming the holder when known) when waitMs passes. */
  acquire(req: LockRequest): Promise<HeldLock>;
  /** Who holds it now, if the backend can tell. */
  holder(name: string): Promise<LockHolderInfo | undefined>;
}
