import type { LocalConfig } from '../config/manager-toml.js';
import { loadSharedConfig } from '../config/shared.js';
import { detectRelease } from '../engine/detect.js';
import { findLiveNodes, type LiveNode } from '../engine/preflight.js';
import { compareReleases, type Detected } from '../engine/releases.js';
import { ConfigError, errorMessage } from '../errors.js';
import { getMaintenance, MANAGER_STATUS_KEY, type MaintenanceMarker } from '../maintenance/index.js';
import { openEtcd, openPg, RedisStore, REDIS_DB, unquote, type EtcdStore, type PgStore, type Stores } from '../stores/index.js';

/**
 * `mgr status`: what an operator needs before and after an upgrade, in one report — the release
 * read from alembic_version, whether each store answers (and its version), whether managers and
 * agents look alive and how that was decided, maintenance mode, and what is still to apply.
 * A store that does not answer is reported, never thrown.
 */

export type StoreName = 'postgresql' | 'etcd' | 'redis';

export interface StoreStatus {
  store: StoreName;
  endpoint: string;
  reachable: boolean;
  version?: string;
  /** Why it is not reachable. */
  error?: string;
}

export type ReleaseStatus =
  | {
      kind: 'known';
      /** The last release fully reached, e.g. "21.03". */
      release: string;
      /** Backend.AI versions with this head, e.g. "21.03.0-21.03.2"; absent between heads (an interrupted upgrade). */
      versions?: string;
      revision: string;
      rows: string[];
    }
  /** alembic_version holds revisions mgr does not know: reported as is, never guessed. */
  | { kind: 'unknown'; rows: string[] }
  /** No alembic_version table: not a Backend.AI manager database (or an empty one). */
  | { kind: 'empty' }
  | { kind: 'unavailable'; reason: string };

export interface UnfinishedStep {
  module: string;
  stepId: string;
  status: string;
}

export interface AgentSeen {
  id: string;
  /** agent.last_seen as ISO time; null when the agent is not in the hash. */
  lastSeen: string | null;
  ageSec: number | null;
  live: boolean;
}

export interface Liveness {
  /** undefined when a store it needs did not answer. */
  anyLive: boolean | undefined;
  managers: {
    /** etcd nodes/manager/{id} keys and their values ("up" while a manager runs). */
    nodes: { id: string; value: string }[];
    managerStatus: string | null;
  };
  agents: {
    heartbeatTimeoutSec: number;
    /** Rows per agents.status in PostgreSQL. */
    byStatus: Record<string, number>;
    /** Agents with status ALIVE in PostgreSQL and their last heartbeat in Redis. */
    alive: AgentSeen[];
  };
  /** Every node judged live, with the fact that decided it (the same rule as the upgrade preflight). */
  live: LiveNode[];
  /** What was checked, in words. */
  decidedBy: string[];
}

export interface StatusReport {
  checkedAt: string;
  configFile: string;
  namespace: string;
  stores: StoreStatus[];
  allReachable: boolean;
  release: ReleaseStatus;
  /** Upgrade modules still to apply, in order (from alembic_version and unfinished steps). */
  pending: string[];
  /** Steps in mgr.upgrade_steps not done or skipped (empty when the table does not exist). */
  unfinishedSteps: UnfinishedStep[];
  liveness: Liveness;
  maintenance: MaintenanceMarker | null;
  /** Facts that could not be read (a store down, an unreadable marker). */
  warnings: string[];
  /** The etcd shared config is invalid (so Redis could not be located): what and where. */
  configError?: string;
}

const STORE_TIMEOUT_MS = 8_000;

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${STORE_TIMEOUT_MS / 1000} s`)), STORE_TIMEOUT_MS);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

interface Handles {
  config: LocalConfig;
  pg: PgStore;
  etcd: EtcdStore;
  redis: RedisStore | undefined;
  /** Why Redis could not even be located (the address lives in etcd). */
  redisProblem?: string;
  /** etcd's first failure, kept: a second call would only report the client's open circuit breaker. */
  etcdError?: string;
}

/** The report for open stores (the library entry point; tests call this). */
export async function installationStatus(stores: Stores, opts: { now?: Date } = {}): Promise<StatusReport> {
  return collect({ config: stores.config, pg: stores.pg, etcd: stores.etcd, redis: stores.redis }, opts.now ?? new Date(), stores);
}

/**
 * The report from manager.toml alone: opens each store on its own so one that is down is
 * reported instead of stopping the others (what the CLI uses).
 */
export async function installationStatusFromConfig(config: LocalConfig, opts: { now?: Date } = {}): Promise<StatusReport> {
  const etcd = openEtcd(config);
  const pg = openPg(config.db, { max: 2 });
  let redis: RedisStore | undefined;
  let redisProblem: string | undefined;
  let etcdError: string | undefined;
  try {
    try {
      redis = new RedisStore((await withTimeout(loadSharedConfig(etcd), 'etcd')).redis);
    } catch (e) {
      if (e instanceof ConfigError) redisProblem = `address unknown: ${errorMessage(e)}`;
      else {
        etcdError = errorMessage(e);
        redisProblem = 'address unknown: etcd, which holds config/redis, is not reachable';
      }
    }
    const handles: Handles = { config, pg, etcd, redis, redisProblem, etcdError };
    const stores: Stores | undefined = redis ? { config, shared: { redis: redis.target, registries: [] }, pg, etcd, redis, close: async () => undefined } : undefined;
    const report = await collect(handles, opts.now ?? new Date(), stores);
    return redisProblem && !etcdError ? { ...report, configError: redisProblem } : report;
  } finally {
    await Promise.allSettled([pg.close(), redis?.close()]);
    etcd.close();
  }
}

async function collect(h: Handles, now: Date, stores: Stores | undefined): Promise<StatusReport> {
  const warnings: string[] = [];
  const probe = async (store: StoreName, endpoint: string, version: (() => Promise<string>) | undefined, problem?: string): Promise<StoreStatus> => {
    if (!version) return { store, endpoint, reachable: false, error: problem ?? 'not configured' };
    try {
      return { store, endpoint, reachable: true, version: await withTimeout(version(), store) };
    } catch (e) {
      return { store, endpoint, reachable: false, error: errorMessage(e) };
    }
  };
  const { db } = h.config;
  const storeList = await Promise.all([
    probe('postgresql', `${db.host}:${db.port}/${db.name}`, () => h.pg.version()),
    probe('etcd', `${h.etcd.endpoint} (namespace ${h.etcd.namespace})`, h.etcdError === undefined ? () => h.etcd.version() : undefined, h.etcdError),
    probe('redis', h.redis ? h.redis.describe() : 'unknown', h.redis ? () => h.redis!.version() : undefined, h.redisProblem),
  ]);
  const up = (s: StoreName) => storeList.find((x) => x.store === s)!.reachable;

  let release: ReleaseStatus = { kind: 'unavailable', reason: 'PostgreSQL is not reachable' };
  let detectedPending: string[] = [];
  let unfinishedSteps: UnfinishedStep[] = [];
  if (up('postgresql')) {
    try {
      const detected = await detectRelease(h.pg);
      release = releaseStatus(detected);
      detectedPending = detected.kind === 'known' ? detected.pending : [];
      unfinishedSteps = await readUnfinishedSteps(h.pg);
    } catch (e) {
      release = { kind: 'unavailable', reason: errorMessage(e) };
    }
  }
  const pending = [...new Set([...detectedPending, ...unfinishedSteps.map((s) => s.module)])].sort(compareReleases);

  let maintenance: MaintenanceMarker | null = null;
  if (up('etcd')) {
    try {
      maintenance = (await getMaintenance(h.etcd)) ?? null;
    } catch (e) {
      warnings.push(errorMessage(e));
    }
  }
  const liveness = await readLiveness(h, stores, now, { pg: up('postgresql'), etcd: up('etcd'), redis: up('redis') }, warnings);
  for (const s of storeList) if (!s.reachable) warnings.push(`${s.store} is not reachable: ${s.error}`);

  return {
    checkedAt: now.toISOString(),
    configFile: h.config.path,
    namespace: h.config.etcd.namespace,
    stores: storeList,
    allReachable: storeList.every((s) => s.reachable),
    release,
    pending,
    unfinishedSteps,
    liveness,
    maintenance,
    warnings,
  };
}

function releaseStatus(d: Detected): ReleaseStatus {
  if (d.kind !== 'known') return d.kind === 'empty' ? { kind: 'empty' } : { kind: 'unknown', rows: d.rows };
  return { kind: 'known', release: d.reached, ...(d.release ? { versions: d.release.versions } : {}), revision: d.revision, rows: d.rows };
}

/** Steps the upgrade engine recorded and has not finished (table mgr.upgrade_steps, if it exists). */
async function readUnfinishedSteps(pg: PgStore): Promise<UnfinishedStep[]> {
  return pg.withClient(async (c) => {
    if ((await c.query(`SELECT to_regclass('mgr.upgrade_steps') AS t`)).rows[0]?.t === null) return [];
    const r = await c.query<{ module: string; step_id: string; status: string }>(
      `SELECT module, step_id, status FROM mgr.upgrade_steps WHERE status NOT IN ('done', 'skipped') ORDER BY module, step_id`,
    );
    return r.rows.map((x) => ({ module: x.module, stepId: x.step_id, status: x.status }));
  });
}

async function readLiveness(
  h: Handles,
  stores: Stores | undefined,
  now: Date,
  up: Record<'pg' | 'etcd' | 'redis', boolean>,
  warnings: string[],
): Promise<Liveness> {
  const heartbeatTimeoutSec = h.config.manager.heartbeatTimeoutSec;
  const liveness: Liveness = {
    anyLive: undefined,
    managers: { nodes: [], managerStatus: null },
    agents: { heartbeatTimeoutSec, byStatus: {}, alive: [] },
    live: [],
    decidedBy: [],
  };
  const attempt = async (what: string, fn: () => Promise<void>) => {
    try {
      await fn();
    } catch (e) {
      warnings.push(`${what}: ${errorMessage(e)}`);
    }
  };
  if (up.etcd) {
    await attempt('etcd nodes/manager', async () => {
      liveness.managers.nodes = (await h.etcd.getFlat('nodes/manager/')).map(({ key, value }) => ({ id: unquote(key.slice('nodes/manager/'.length)), value }));
      liveness.managers.managerStatus = await h.etcd.get(MANAGER_STATUS_KEY);
    });
  }
  let lastSeen: Record<string, string> = {};
  if (up.redis && h.redis) await attempt('Redis agent.last_seen', async () => void (lastSeen = await (await h.redis!.db(REDIS_DB.live)).hgetall('agent.last_seen')));
  if (up.pg) {
    await attempt('PostgreSQL agents', async () => {
      const rows = await h.pg.withClient(async (c) => {
        if ((await c.query(`SELECT to_regclass('public.agents') AS t`)).rows[0]?.t === null) return [];
        return (await c.query<{ id: string; status: string }>(`SELECT id, status::text AS status FROM agents ORDER BY id`)).rows;
      });
      for (const r of rows) liveness.agents.byStatus[r.status] = (liveness.agents.byStatus[r.status] ?? 0) + 1;
      liveness.agents.alive = rows
        .filter((r) => r.status === 'ALIVE')
        .map((r) => {
          const seen = lastSeen[r.id] === undefined ? NaN : Number(lastSeen[r.id]);
          const ageSec = Number.isFinite(seen) ? now.getTime() / 1000 - seen : null;
          return {
            id: r.id,
            lastSeen: Number.isFinite(seen) ? new Date(seen * 1000).toISOString() : null,
            ageSec: ageSec === null ? null : Math.round(ageSec * 10) / 10,
            live: ageSec !== null && ageSec < heartbeatTimeoutSec,
          };
        });
    });
  }
  if (stores && up.pg && up.etcd && up.redis) {
    // The decision itself is the upgrade preflight's, so `mgr status` and `mgr upgrade` never disagree.
    await attempt('liveness', async () => {
      const r = await findLiveNodes(stores, now.getTime());
      liveness.live = r.live;
      liveness.decidedBy = r.checked;
      liveness.anyLive = r.live.length > 0;
    });
  } else {
    liveness.decidedBy = ['not decided: deciding needs etcd (nodes/manager/*, manager/status), Redis (agent.last_seen) and PostgreSQL (agents) to answer'];
  }
  return liveness;
}
