import type { Etcd3, Lease } from 'etcd3';
import { MgrError, type LockHolderInfo } from '../errors.js';
import type { Logger } from '../log.js';
import { etcdUnreachable, quote, type EtcdStore } from '../stores/etcd.js';
import { currentHolder, DEFAULT_LOCK_TTL_MS, lockBusy, monotonicMs, parseHolder } from './common.js';
import type { HeldLock, LockBackend, LockRequest } from './types.js';

/** Where mgr's etcd locks live, relative to /sorna/{namespace}/. */
export const ETCD_LOCK_PREFIX = 'mgr/locks/';

/** Longest single watch before the loop retries the create anyway (a missed event costs at most this). */
const MAX_WATCH_MS = 2_000;

/**
 * Lease-based etcd lock: the key `mgr/locks/{quote(name)}` is created only if absent
 * (`Create == 0` in a txn) and attached to a lease kept alive every TTL/3. A crashed holder's
 * lease expires after the TTL and etcd deletes the key; waiters watch for that delete.
 *
 * Backend.AI's own etcd locks (etcetra's Lock RPC on the raw name "LockID.…") are a different
 * key space: this backend guards mgr's jobs, not the manager's scheduler.
 */
export class EtcdLockBackend implements LockBackend {
  readonly kind = 'etcd' as const;

  constructor(private readonly opts: { etcd: EtcdStore; log: Logger }) {}

  lockKey(name: string): string {
    return ETCD_LOCK_PREFIX + quote(name);
  }

  async acquire(req: LockRequest): Promise<HeldLock> {
    const { etcd, log } = this.opts;
    const client = etcd.client;
    const key = etcd.abs(this.lockKey(req.name));
    const ttlMs = req.ttlMs ?? DEFAULT_LOCK_TTL_MS;
    // etcd leases count whole seconds (and etcd raises TTLs below its own minimum).
    const lease = client.lease(Math.max(1, Math.ceil(ttlMs / 1000)));
    const lost = new AbortController();
    let released = false;
    const loseLock = (why: string) => {
      if (released || lost.signal.aborted) return;
      log.error({ lock: req.name, key }, `etcd lock lost: ${why}`);
      lost.abort(new MgrError('stepFailed', `lock "${req.name}" (etcd ${key}) was lost: ${why}`));
    };
    lease.on('lost', (e) => loseLock(`its lease was revoked or expired (${e.message})`));
    let leaseId: string;
    try {
      leaseId = await lease.grant();
    } catch (e) {
      throw etcdUnreachable(etcd.endpoint, e);
    }
    const holder = currentHolder(req.purpose);
    const deadline = monotonicMs() + req.waitMs;
    try {
      for (;;) {
        if (lost.signal.aborted) throw lost.signal.reason;
        const res = await client
          .if(key, 'Create', '==', 0)
          .then(client.put(key).value(JSON.stringify(holder)).lease(leaseId))
          .else(client.get(key))
          .commit();
        if (res.succeeded) break;
        const current = res.responses[0]?.response_range?.kvs[0];
        const remaining = deadline - monotonicMs();
        if (remaining <= 0) throw lockBusy('etcd', req.name, req.waitMs, holderOf(current?.value.toString()));
        await waitForDelete(client, key, (BigInt(res.header.revision) + 1n).toString(), Math.min(remaining, MAX_WATCH_MS), req.signal);
      }
    } catch (e) {
      released = true;
      await lease.revoke().catch(() => undefined);
      throw e;
    }
    const stopWatchdog = keepaliveWatchdog(lease, ttlMs, loseLock);
    return {
      name: req.name,
      holder,
      lost: lost.signal,
      release: async () => {
        if (released) return;
        released = true;
        stopWatchdog();
        try {
          await lease.revoke(); // deletes the key with it
        } catch (e) {
          throw new MgrError('storeUnreachable', `could not revoke the lease of lock "${req.name}" (${key}); it expires by itself within ${ttlMs} ms`, {
            cause: e,
          });
        }
      },
    };
  }

  async holder(name: string): Promise<LockHolderInfo | undefined> {
    const raw = await this.opts.etcd.get(this.lockKey(name));
    return raw === null ? undefined : holderOf(raw);
  }
}

function holderOf(raw: string | undefined): LockHolderInfo | undefined {
  if (raw === undefined) return undefined;
  return parseHolder(raw) ?? { host: 'unknown', pid: 0, since: 'unknown', purpose: `unreadable holder value ${JSON.stringify(raw.slice(0, 80))}` };
}

/**
 * etcd3 reports a lost lease only after 2×TTL without a keep-alive; by then etcd has long
 * expired it and another process may hold the lock. Abort as soon as a full TTL passes
 * without a successful keep-alive.
 */
function keepaliveWatchdog(lease: Lease, ttlMs: number, loseLock: (why: string) => void): () => void {
  let lastOk = monotonicMs();
  const onOk = () => (lastOk = monotonicMs());
  lease.on('keepaliveSucceeded', onOk);
  const timer = setInterval(() => {
    const silent = monotonicMs() - lastOk;
    if (silent >= ttlMs) loseLock(`no keep-alive succeeded for ${silent} ms (TTL ${ttlMs} ms): the lease may have expired`);
  }, Math.max(250, Math.floor(ttlMs / 6)));
  timer.unref();
  return () => {
    clearInterval(timer);
    lease.off('keepaliveSucceeded', onOk);
  };
}

/** Resolves when the key is deleted after `fromRevision`, or after ms; rejects on abort. */
async function waitForDelete(client: Etcd3, key: string, fromRevision: string, ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) throw signal.reason;
  const watcher = await client.watch().key(key).startRevision(fromRevision).create();
  try {
    await new Promise<void>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal!.reason);
      };
      const timer = setTimeout(done, ms);
      watcher.on('delete', done);
      watcher.on('error', done); // the loop retries the create and re-watches
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  } finally {
    await watcher.cancel().catch(() => undefined);
  }
}
