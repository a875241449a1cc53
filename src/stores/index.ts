import type { LocalConfig } from '../config/manager-toml.js';
import { loadSharedConfig, type SharedConfig } from '../config/shared.js';
import { EtcdStore, etcdUnreachable } from './etcd.js';
import { openPg, type PgStore } from './pg.js';
import { RedisStore } from './redis.js';

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
