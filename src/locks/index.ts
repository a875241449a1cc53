import { MgrError, errorMessage } from '../errors.js';
import { LOCK_BACKENDS, type LockBackendName } from '../config/manager-toml.js';
import { silentLogger, type Logger } from '../log.js';
import type { Stores } from '../stores/index.js';
import { EtcdLockBackend } from './etcd.js';
import { FileLockBackend } from './filelock.js';
import { PgAdvisoryLockBackend } from './pg-advisory.js';
import type { HeldLock, LockBackend, LockRequest } from './types.js';

export type { LockBackend, LockRequest, HeldLock } from './types.js';
export { DEFAULT_LOCK_TTL_MS } from './common.js';
export { EtcdLockBackend, ETCD_LOCK_PREFIX } from './etcd.js';
export { FileLockBackend, registeredManagers } from './filelock.js';
export { PgAdvisoryLockBackend, MGR_PG_LOCK_CLASS, pgLockKey } from './pg-advisory.js';

/**
 * The lock backend of an installation. `kind` defaults to manager.toml's `distributed-lock`,
 * and without one to "pg_advisory": what a 22.03.2+ manager does with no key (M#592).
 * Unknown kinds and "redlock" are refused with the allowed list.
 */
export function lockBackendFor(stores: Stores, kind?: string, opts: { log?: Logger } = {}): LockBackend {
  const chosen = kind ?? stores.config.manager.distributedLock ?? 'pg_advisory';
  const log = opts.log ?? silentLogger;
  switch (checkLockBackendName(chosen)) {
    case 'filelock':
      return new FileLockBackend({ ipcBasePath: stores.config.manager.ipcBasePath, managerId: stores.config.manager.id, etcd: stores.etcd, log });
    case 'etcd':
      return new EtcdLockBackend({ etcd: stores.etcd, log });
    case 'pg_advisory':
      return new PgAdvisoryLockBackend({ db: stores.config.db, pg: stores.pg, log });
  }
}

function checkLockBackendName(kind: string): LockBackendName {
  if ((LOCK_BACKENDS as readonly string[]).includes(kind)) return kind as LockBackendName;
  const allowed = LOCK_BACKENDS.map((b) => `"${b}"`).join(', ');
  if (kind === 'redlock') {
    throw new MgrError('config', `lock backend "redlock" is not supported in 22.03 (its aioredis v2 implementation raises NotImplementedError); use ${allowed}`, {
      hint: 'set [manager] distributed-lock in manager.toml, or pass --lock-backend',
    });
  }
  throw new MgrError('config', `unknown lock backend ${JSON.stringify(kind)}; allowed: ${allowed}`, {
    hint: 'set [manager] distributed-lock in manager.toml, or pass --lock-backend',
  });
}

/**
 * Runs fn while holding the lock and releases it in finally. A failed release is logged and
 * never replaces fn's own error (nor its result: the backend frees the lock anyway when the
 * process, connection or lease behind it ends).
 */
export async function withLock<T>(backend: LockBackend, req: LockRequest, fn: (held: HeldLock) => Promise<T>, log: Logger = silentLogger): Promise<T> {
  const held = await backend.acquire(req);
  try {
    return await fn(held);
  } finally {
    try {
      await held.release();
    } catch (e) {
      log.warn({ lock: req.name, backend: backend.kind, err: errorMessage(e) }, 'lock release failed; the backend frees it when its holder ends');
    }
  }
}
