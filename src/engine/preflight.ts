import type { Stores } from '../stores/index.js';
import { REDIS_DB } from '../stores/redis.js';
import { MANAGER_STATUS_KEY } from '../maintenance/index.js';

/**
 * "The migration should be done while the managers and agents are shut down" (Backend.AI
 * MIGRATION.md). mgr looks in all three places a live node shows itself and says how it decided.
 */
export interface LiveNode {
  kind: 'manager' | 'agent';
  id: string;
  /** How mgr decided it is live. */
  evidence: string;
}

export interface LivenessReport {
  live: LiveNode[];
  /** Facts that were checked and did not indicate a live node (for the operator). */
  checked: string[];
}

/** Backend.AI's ManagerStatus values that mean a manager process is up. */
const LIVE_MANAGER_STATUSES = new Set(['running', 'preparing']);

export async function findLiveNodes(stores: Stores, now = Date.now()): Promise<LivenessReport> {
  const live: LiveNode[] = [];
  const checked: string[] = [];
  const heartbeatSec = stores.config.manager.heartbeatTimeoutSec;

  const managers = await stores.etcd.getFlat('nodes/manager/');
  for (const { key, value } of managers) {
    const id = key.slice('nodes/manager/'.length);
    if (value === 'up') live.push({ kind: 'manager', id, evidence: `etcd ${stores.etcd.abs(key)} = "up"` });
  }
  checked.push(`etcd nodes/manager/*: ${managers.length} key(s)`);

  const status = await stores.etcd.get(MANAGER_STATUS_KEY);
  if (status !== null && LIVE_MANAGER_STATUSES.has(status)) {
    live.push({ kind: 'manager', id: '(cluster)', evidence: `etcd ${stores.etcd.abs(MANAGER_STATUS_KEY)} = "${status}"` });
  }
  checked.push(`etcd manager/status: ${status === null ? 'absent' : JSON.stringify(status)}`);

  const lastSeen = await (await stores.redis.db(REDIS_DB.live)).hgetall('agent.last_seen');
  const alive = await stores.pg.withClient(async (c) => {
    const t = await c.query(`SELECT to_regclass('public.agents') AS t`);
    if (t.rows[0]?.t === null) return [] as string[];
    return (await c.query<{ id: string }>(`SELECT id FROM agents WHERE status = 'ALIVE'`)).rows.map((r) => r.id);
  });
  const cutoff = now / 1000 - heartbeatSec;
  for (const [id, ts] of Object.entries(lastSeen)) {
    const seen = Number(ts);
    if (Number.isFinite(seen) && seen > cutoff) {
      live.push({
        kind: 'agent',
        id,
        evidence: `Redis DB ${REDIS_DB.live} agent.last_seen = ${new Date(seen * 1000).toISOString()}, within heartbeat-timeout ${heartbeatSec}s`,
      });
    }
  }
  checked.push(
    `agents: ${alive.length} with status ALIVE in PostgreSQL, ${Object.keys(lastSeen).length} in Redis agent.last_seen; live = heartbeat newer than ${heartbeatSec}s ([manager] heartbeat-timeout)`,
  );
  return { live, checked };
}
