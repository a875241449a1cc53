import os from 'node:os';
import { z } from 'zod';
import { LockBusyError, type LockHolderInfo } from '../errors.js';
import type { LockBackendName } from '../config/manager-toml.js';

/** Lease TTL of etcd locks when the request names none: a crashed holder blocks at most this long. */
export const DEFAULT_LOCK_TTL_MS = 15_000;

/** Holder info for a lock this process takes now. */
export function currentHolder(purpose: string | undefined): LockHolderInfo {
  return { host: os.hostname(), pid: process.pid, since: new Date().toISOString(), ...(purpose ? { purpose } : {}) };
}

const holderSchema = z.object({
  host: z.string(),
  pid: z.number().int(),
  since: z.string(),
  purpose: z.string().optional(),
});

/**
 * Holder info as another process wrote it (lock file, etcd value). Unreadable info is not an
 * error: the lock still works, only the name of its holder is unknown.
 */
export function parseHolder(raw: string | null | undefined): LockHolderInfo | undefined {
  if (!raw) return undefined;
  try {
    const r = holderSchema.safeParse(JSON.parse(raw));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}

export function lockBusy(kind: LockBackendName, name: string, waitMs: number, holder: LockHolderInfo | undefined): LockBusyError {
  const freed =
    kind === 'etcd'
      ? 'a crashed holder frees it when its etcd lease expires'
      : kind === 'pg_advisory'
        ? 'a crashed holder frees it when its PostgreSQL connection ends'
        : 'a crashed holder frees it at once (the kernel drops its flock)';
  return new LockBusyError(`lock "${name}" (${kind}, waited ${waitMs} ms)`, holder, `another run holds it; wait for it to finish and retry (${freed})`);
}

/** Resolves after ms, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Milliseconds on a monotonic clock (immune to wall-clock jumps while waiting). */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint() / 1_000_000n);
}
