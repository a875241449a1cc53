import type { LockHolderInfo } from '../errors.js';
import type { LockBackendName } from '../config/manager-toml.js';

/**
 * One distributed-lock interface over the backends Backend.AI names (filelock, etcd,
 * pg_advisory); redlock is refused. mgr's own jobs take their locks through it.
 */
export interface LockRequest {
  /** What the lock guards, e.g. "mgr.upgrade", "mgr.clear-history". */
  name: string;
  /** How long to wait for a holder to let go; 0 = try once. */
  waitMs: number;
  /**
   * Lease TTL where the backend has one (etcd): how long the lock outlives a crashed holder.
   * Ignored elsewhere (filelock and pg_advisory are freed the moment the holder dies).
   * @default 15000
   */
  ttlMs?: number;
  /** Written as holder info where the backend can carry it. */
  purpose?: string;
  /** Aborting it stops the wait (the acquire rejects with the signal's reason). */
  signal?: AbortSignal;
}

export interface HeldLock {
  readonly name: string;
  readonly holder: LockHolderInfo;
  /**
   * Aborted when the lock is lost (etcd lease expired or revoked, the pg connection or the
   * flock process died): guarded work must stop.
   */
  readonly lost: AbortSignal;
  /** Idempotent; frees the lock even when it throws (the resources behind it are closed). */
  release(): Promise<void>;
}

export interface LockBackend {
  readonly kind: LockBackendName;
  /** Throws LockBusyError (naming the holder when known) when waitMs passes. */
  acquire(req: LockRequest): Promise<HeldLock>;
  /** Who holds it now, if the backend can tell; undefined when it is free. */
  holder(name: string): Promise<LockHolderInfo | undefined>;
}
