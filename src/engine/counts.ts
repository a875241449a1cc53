import type { Stores } from '../stores/index.js';
import { MANAGER_REDIS_DBS } from '../stores/redis.js';

/** Row and key counts of everything an upgrade touches, for the before/after summary. */
export interface StoreCounts {
  postgres: Record<string, number>;
  etcd: Record<string, number>;
  redis: Record<string, number>;
}

const ETCD_SPACES = ['config/', 'images/', 'nodes/', 'volumes/'];

export async function takeCounts(stores: Stores): Promise<StoreCounts> {
  const postgres = await stores.pg.withClient(async (c) => {
    const tables = await c.query<{ t: string }>(
      `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS t FROM information_schema.tables
        WHERE table_schema IN ('public') AND table_type = 'BASE TABLE' ORDER BY 1`,
    );
    const out: Record<string, number> = {};
    for (const { t } of tables.rows) {
      out[t.replace(/^public\./, '')] = Number((await c.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n);
    }
    return out;
  });
  const etcd: Record<string, number> = {};
  for (const p of ETCD_SPACES) etcd[p] = await stores.etcd.count(p);
  const redis: Record<string, number> = {};
  for (const db of MANAGER_REDIS_DBS) redis[`db${db}`] = await (await stores.redis.db(db)).dbsize();
  return { postgres, etcd, redis };
}
