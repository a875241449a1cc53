import { Redis, ReplyError } from 'ioredis';
import { MgrError, errorMessage } from '../errors.js';
import type { RedisTarget } from '../config/shared.js';
import type { Progress, Step, StepContext } from '../engine/types.js';
import { sleep } from '../locks/common.js';
import { redisUnreachable } from './redis.js';

/**
 * 22.03 keeps keypair concurrency counters and kernel stats in Redis only, so Redis must
 * survive a restart: MIGRATION.md asks for `appendonly yes`. The safe order matters. Setting
 * it in redis.conf and restarting a server that only has dump.rdb starts from an EMPTY
 * dataset (Redis loads the new, empty AOF instead of the RDB). So mgr turns AOF on live
 * (CONFIG SET, which writes the whole dataset into the AOF by a rewrite), waits for that
 * rewrite, and only then persists the setting with CONFIG REWRITE. When it cannot do all of
 * that (no config file, CONFIG disabled, a replica) it changes nothing and says what to do.
 */

const EMPTY_DATASET_TRAP =
  'add `appendonly yes` to redis.conf only once AOF is on at runtime (CONFIG SET appendonly yes, then wait until INFO persistence ' +
  'shows aof_rewrite_in_progress:0 and aof_last_bgrewrite_status:ok): a server that has only dump.rdb and restarts with ' +
  'appendonly yes loads the empty AOF and starts from an empty dataset';

const SKIP_HINT = 'or rerun with --skip-redis-aof to go on without AOF (not recommended: counters and stats live only in Redis in 22.03)';

/** Default limit for the AOF rewrite: generous, a rewrite writes the whole dataset once. */
export const AOF_REWRITE_TIMEOUT_MS = 30 * 60_000;
const POLL_MS = 100;

export interface RedisAofState {
  /** host:port of the node inspected. */
  node: string;
  appendonly: boolean;
  /** INFO server config_file ("" = started without one). */
  configFile: string;
  role: string;
  /** Why mgr cannot enable AOF on this node (nothing is changed then). */
  problem: MgrError | undefined;
}

export interface EnableAofResult {
  /** AOF was already on: nothing was changed. */
  alreadyOn: boolean;
  /** host:port of the node changed (or found already on). */
  node: string;
  /** How long the AOF rewrite took (0 when already on). */
  rewriteSeconds: number;
  /** The redis.conf that now says `appendonly yes` (undefined when already on). */
  configFile: string | undefined;
}

function nodeOf(redis: Redis): string {
  return `${redis.options.host}:${redis.options.port}`;
}

function infoField(info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*?)\\r?$`, 'm').exec(info)?.[1];
}

/** Reads what decides whether and how AOF can be enabled; changes nothing. */
export async function inspectRedisAof(redis: Redis): Promise<RedisAofState> {
  const node = nodeOf(redis);
  let appendonly: boolean;
  try {
    const reply = (await redis.call('CONFIG', 'GET', 'appendonly')) as string[];
    appendonly = reply[1] === 'yes';
  } catch (e) {
    if (!(e instanceof ReplyError)) throw e;
    return {
      node,
      appendonly: false,
      configFile: '',
      role: 'unknown',
      problem: new MgrError(
        'refused',
        `cannot enable AOF on Redis ${node}: CONFIG is not available there (${errorMessage(e)}), as on managed Redis services or with rename-command; nothing was changed`,
        { hint: `enable AOF ("appendonly yes") in the service's settings or redis.conf yourself; ${EMPTY_DATASET_TRAP}; ${SKIP_HINT}`, cause: e },
      ),
    };
  }
  const configFile = infoField(await redis.info('server'), 'config_file') ?? '';
  const replication = await redis.info('replication');
  const role = infoField(replication, 'role') ?? 'unknown';
  let problem: MgrError | undefined;
  if (!appendonly && role !== 'master') {
    const master = `${infoField(replication, 'master_host')}:${infoField(replication, 'master_port')}`;
    problem = new MgrError('refused', `cannot enable AOF on Redis ${node}: it is a replica (role:${role}) of ${master}; AOF must be enabled on the master; nothing was changed`, {
      hint: `point etcd config/redis/addr at the master (or set config/redis/sentinel so mgr finds it), then rerun; ${SKIP_HINT}`,
    });
  } else if (!appendonly && configFile === '') {
    problem = new MgrError(
      'refused',
      `cannot enable AOF on Redis ${node}: it runs without a config file (INFO server config_file is empty), so CONFIG REWRITE cannot keep the setting and a restart would turn AOF off again; nothing was changed`,
      { hint: `restart redis-server with a config file and rerun mgr, or enable it yourself: ${EMPTY_DATASET_TRAP}; ${SKIP_HINT}` },
    );
  }
  return { node, appendonly, configFile, role, problem };
}

/**
 * Turns AOF on for one Redis node, live: CONFIG SET appendonly yes, wait for the rewrite that
 * copies the dataset into the AOF, then CONFIG REWRITE so a restart keeps it. Already on: a
 * no-op that says so. A failed or timed-out rewrite (or an abort) turns AOF back off, so the
 * node ends as it was.
 */
export async function enableRedisAof(
  redis: Redis,
  opts: { signal?: AbortSignal; timeoutMs?: number; onProgress?: (p: Progress) => void } = {},
): Promise<EnableAofResult> {
  const state = await inspectRedisAof(redis);
  if (state.appendonly) return { alreadyOn: true, node: state.node, rewriteSeconds: 0, configFile: undefined };
  if (state.problem) throw state.problem;
  const timeoutMs = opts.timeoutMs ?? AOF_REWRITE_TIMEOUT_MS;
  const started = performance.now();
  await redis.call('CONFIG', 'SET', 'appendonly', 'yes');
  try {
    for (;;) {
      const info = await redis.info('persistence');
      const f = (k: string) => infoField(info, k);
      const busy = f('aof_rewrite_in_progress') !== '0' || f('aof_rewrite_scheduled') !== '0';
      if (!busy) {
        if (f('aof_last_bgrewrite_status') !== 'ok' || f('aof_last_write_status') !== 'ok') {
          throw new MgrError(
            'stepFailed',
            `the AOF rewrite on Redis ${state.node} failed (aof_last_bgrewrite_status:${f('aof_last_bgrewrite_status')}, aof_last_write_status:${f('aof_last_write_status')}); AOF was turned back off`,
            { hint: `see the Redis log (disk space, permissions of its dir), then rerun` },
          );
        }
        if (f('aof_enabled') === '1') break;
      }
      const elapsed = performance.now() - started;
      if (elapsed > timeoutMs) {
        throw new MgrError('stepFailed', `the AOF rewrite on Redis ${state.node} did not finish within ${Math.round(timeoutMs / 1000)} s; AOF was turned back off`, {
          hint: 'rerun with a longer limit when the server is less busy',
        });
      }
      opts.onProgress?.({ done: Math.floor(elapsed / 1000), unit: 's', message: `AOF rewrite on ${state.node} in progress` });
      await sleep(POLL_MS, opts.signal);
    }
  } catch (e) {
    // Leave the node as it was: nothing half-done survives (a rerun starts over).
    await redis.call('CONFIG', 'SET', 'appendonly', 'no').catch(() => undefined);
    throw e;
  }
  const rewriteSeconds = (performance.now() - started) / 1000;
  try {
    await redis.call('CONFIG', 'REWRITE');
  } catch (e) {
    throw new MgrError(
      'stepFailed',
      `AOF is on at runtime on Redis ${state.node}, but CONFIG REWRITE failed (${errorMessage(e)}), so a restart would turn it off again`,
      { hint: `add "appendonly yes" to ${state.configFile} now: that is safe at this point, the AOF already holds the whole dataset`, cause: e },
    );
  }
  return { alreadyOn: false, node: state.node, rewriteSeconds, configFile: state.configFile };
}

/**
 * The Redis node whose persistence matters: config/redis/addr, or with sentinels the master
 * that `SENTINEL get-master-addr-by-name` names (the first sentinel that answers).
 */
export async function resolveRedisMaster(t: RedisTarget): Promise<{ host: string; port: number; via: string }> {
  if (!t.sentinels?.length) return { host: t.host, port: t.port, via: 'config/redis/addr' };
  const failures: string[] = [];
  for (const s of t.sentinels) {
    const sentinel = new Redis({ host: s.host, port: s.port, lazyConnect: true, connectTimeout: 5_000, maxRetriesPerRequest: 1, retryStrategy: () => null });
    sentinel.on('error', () => undefined);
    try {
      await sentinel.connect();
      const addr = (await sentinel.call('SENTINEL', 'get-master-addr-by-name', t.serviceName ?? 'mymaster')) as [string, string] | null;
      if (addr) return { host: addr[0], port: Number(addr[1]), via: `sentinel ${s.host}:${s.port} (service ${t.serviceName})` };
      failures.push(`${s.host}:${s.port}: no master named ${t.serviceName}`);
    } catch (e) {
      failures.push(`${s.host}:${s.port}: ${errorMessage(e)}`);
    } finally {
      sentinel.disconnect();
    }
  }
  throw redisUnreachable(t, new Error(`no sentinel named the master: ${failures.join('; ')}`));
}

/** A direct connection to the node that must get AOF; closed by the caller. */
async function connectMaster(ctx: StepContext): Promise<{ redis: Redis; via: string }> {
  const t = ctx.stores.shared.redis;
  const master = await resolveRedisMaster(t);
  const redis = new Redis({ host: master.host, port: master.port, password: t.password, lazyConnect: true, connectTimeout: 5_000, maxRetriesPerRequest: 2 });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
  } catch (e) {
    redis.disconnect();
    throw redisUnreachable({ ...t, host: master.host, port: master.port, sentinels: undefined }, e);
  }
  return { redis, via: master.via };
}

async function withMaster<T>(ctx: StepContext, fn: (redis: Redis, via: string) => Promise<T>): Promise<T> {
  const { redis, via } = await connectMaster(ctx);
  try {
    return await fn(redis, via);
  } finally {
    redis.disconnect();
  }
}

/** 22.03 step: Redis AOF on, live then persisted (see enableRedisAof); `--skip-redis-aof` records it skipped. */
export function redisAofStep(): Step {
  const skipped = 'AOF not enabled (--skip-redis-aof): a Redis restart loses the 22.03 concurrency counters and kernel stats';
  return {
    id: '22.03/redis-aof',
    title: 'Redis: turn on AOF persistence (appendonly yes) live, then persist it in redis.conf',
    kind: 'config',
    async plan(ctx) {
      if (ctx.options.skipRedisAof) return [{ store: 'redis', action: `skip: ${skipped}` }];
      return withMaster(ctx, async (redis, via) => {
        const s = await inspectRedisAof(redis);
        if (s.appendonly) return [];
        if (s.problem) return [{ store: 'redis', action: `stops here: ${s.problem.message}`, detail: s.problem.hint }];
        return [
          {
            store: 'redis',
            action: `Redis ${s.node} (${via}): CONFIG SET appendonly yes, wait for the AOF rewrite, then CONFIG REWRITE (${s.configFile})`,
            detail: 'AOF is turned on live first: putting appendonly yes in redis.conf and restarting would start from an empty dataset',
          },
        ];
      });
    },
    async apply(ctx) {
      if (ctx.options.skipRedisAof) {
        ctx.log.warn(skipped);
        return { summary: skipped, skipped: true, warnings: [skipped] };
      }
      return withMaster(ctx, async (redis, via) => {
        const r = await enableRedisAof(redis, { signal: ctx.signal, onProgress: (p) => ctx.progress(p) });
        if (r.alreadyOn) return { summary: `Redis ${r.node} (${via}): AOF already on (appendonly yes), nothing to do` };
        return {
          summary: `Redis ${r.node} (${via}): AOF on after a ${r.rewriteSeconds.toFixed(1)} s rewrite; appendonly yes written to ${r.configFile}`,
          counts: { rewriteMs: Math.round(r.rewriteSeconds * 1000) },
        };
      });
    },
    async verify(ctx) {
      if (ctx.options.skipRedisAof) return;
      await withMaster(ctx, async (redis) => {
        const s = await inspectRedisAof(redis);
        const info = await redis.info('persistence');
        if (!s.appendonly || infoField(info, 'aof_enabled') !== '1' || infoField(info, 'aof_rewrite_in_progress') !== '0') {
          throw new MgrError('stepFailed', `Redis ${s.node} does not show AOF on (appendonly ${s.appendonly ? 'yes' : 'no'}, aof_enabled:${infoField(info, 'aof_enabled')})`);
        }
      });
    },
  };
}
