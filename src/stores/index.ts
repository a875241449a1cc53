import type { LocalConfig } from '../config/manager-toml.js';
import { loadSharedConfig, type SharedConfig } from '../config/shared.js';
import { GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
import { MgrError } from '../errors.js';
import { EtcdStore, etcdUnreachable } from './etcd.js';
import { openPg, pgErrorCode, pgUnreachable, type PgStore } from './pg.js';
import { RedisStore, redisUnreachable } from './redis.js';

export { EtcdStore, quote, unquote } from './etcd.js';
export type { EtcdTree, EtcdKV } from './etcd.js';
export { openPg, PG_ERROR, pgErrorCode } from './pg.js';
export type { PgStore } from './pg.js';
export { RedisStore, REDIS_DB, MANAGER_REDIS_DBS } from './redis.js';

/** The three stores of one installation, opened from its manager.toml; nothing else talks to drivers. */
export interface Stores {
  config: LocalConfig;
  shared: SharedConfig;
  pg: PgStore;
  etcd: EtcdStore;
  redis: RedisStore;
  close(): Promise<void>;
}

export function openEtcd(config: LocalConfig): EtcdStore {
  const e = config.etcd;
  return new EtcdStore(`http://${e.host}:${e.port}`, e.namespace, e.user ? { username: e.user, password: e.password } : undefined);
}

/** Opens etcd first (it holds the Redis address), then PostgreSQL and Redis. */
export async function openStores(config: LocalConfig): Promise<Stores> {
  const etcd = openEtcd(config);
  let shared: SharedConfig;
  try {
    await etcd.revision();
  } catch (e) {
    etcd.close();
    throw etcdUnreachable(etcd.endpoint, e);
  }
  try {
    shared = await loadSharedConfig(etcd);
  } catch (e) {
    etcd.close();
    throw e;
  }
  const pg = openPg(config.db);
  const redis = new RedisStore(shared.redis);
  return {
    config,
    shared,
    pg,
    etcd,
    redis,
    close: async () => {
      await Promise.allSettled([pg.close(), redis.close()]);
      etcd.close();
    },
  };
}

/** SQLSTATEs of a server going away under an open connection: admin/crash shutdown, not accepting connections. */
const PG_GONE = new Set(['57P01', '57P02', '57P03']);
const PG_GONE_MESSAGE = /^Connection terminated|connection error and is not queryable/;
const SOCKET_GONE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

/**
 * A driver error that means a store went away mid-work (a server stopped or restarted), as the
 * storeUnreachable MgrError naming that store, its address and where it is configured; undefined
 * for any other error. The drivers' own messages ("14 UNAVAILABLE", "Reached the max retries per
 * request limit", "terminating connection due to administrator command") name no store.
 */
export function storeFault(stores: Stores, e: unknown): MgrError | undefined {
  for (let err = e, depth = 0; err instanceof Error && depth < 4; err = err.cause, depth++) {
    if (err instanceof MgrError) {
      if (err.code === 'storeUnreachable') return err;
      continue;
    }
    if (err instanceof GRPCUnavailableError || err instanceof GRPCDeadlineExceededError || (err as { isBrokenCircuitError?: boolean }).isBrokenCircuitError) {
      return etcdUnreachable(stores.etcd.endpoint, err);
    }
    if (err.name === 'MaxRetriesPerRequestError' || err.message === 'Connection is closed.') return redisUnreachable(stores.shared.redis, err);
    const code = pgErrorCode(err);
    if ((code && (PG_GONE.has(code) || code.startsWith('08'))) || PG_GONE_MESSAGE.test(err.message)) return pgUnreachable(stores.config.db, err);
    // A refused or reset socket: the store whose port it is.
    const port = (err as { port?: number }).port;
    if (code && SOCKET_GONE.has(code) && port !== undefined) {
      if (port === stores.config.db.port) return pgUnreachable(stores.config.db, err);
      if (port === stores.shared.redis.port) return redisUnreachable(stores.shared.redis, err);
      if (stores.etcd.endpoint.endsWith(`:${port}`)) return etcdUnreachable(stores.etcd.endpoint, err);
    }
  }
  return undefined;
}
