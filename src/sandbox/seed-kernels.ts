import { copyLine, pgArray } from './seed-copy.js';
import type { Rng } from './seed-random.js';
import type { SeedAgent, SeedKeypair, SeedVfolder, SeedWorld } from './seed-world.js';

/**
 * Kernel rows of a 21.03 installation, generated one at a time (a million must stream through
 * COPY). Terminal kernels are spread uniformly over the past year in creation order, as a real
 * table fills up; the live ones are the newest, with unique session names so the partial unique
 * index on (access_key, session_name) holds.
 */

export type KernelStatus =
  | 'PENDING' | 'SCHEDULED' | 'PREPARING' | 'BUILDING' | 'PULLING' | 'RUNNING' | 'RESTARTING'
  | 'RESIZING' | 'SUSPENDED' | 'TERMINATING' | 'TERMINATED' | 'ERROR' | 'CANCELLED';

/** Statuses that count toward keypairs.concurrency_used (backend-ai.md §6.3: all but these four). */
export const USER_NON_OCCUPYING_STATUSES: readonly KernelStatus[] = ['TERMINATING', 'TERMINATED', 'PENDING', 'CANCELLED'];
/** Statuses that count toward agents.occupied_slots (all but TERMINATED, PENDING, CANCELLED). */
export const AGENT_NON_OCCUPYING_STATUSES: readonly KernelStatus[] = ['TERMINATED', 'PENDING', 'CANCELLED'];

/** An image a kernel can run: the canonical reference and whether it needs a GPU. */
export interface ImageChoice {
  ref: string;
  registry: string;
  cuda: boolean;
}

/** A metric as the agent writes it to Redis (values are decimal strings). */
export type StatMetric = Record<string, string | null>;
export type KernelStat = Record<string, StatMetric>;

export interface SeedKernel {
  id: string;
  /** The stats object for last_stat and/or the Redis stat key. */
  stat: KernelStat | undefined;
  /** Whether this kernel gets a stat key in Redis DB 0. */
  redisStat: boolean;
  /** The COPY line for the kernels table. */
  line: string;
}

export interface KernelGenOptions {
  count: number;
  nowMs: number;
  /** Heads before 8679d0a7e22b have no SCHEDULED status. */
  withScheduled: boolean;
  /** 'recent': stat keys for live kernels and those terminated in the last `recentDays`; 'all': every kernel. */
  statKeysFor: 'recent' | 'all';
  recentDays: number;
}

/** What generating kernels also produces for the other tables and for verification. */
export interface KernelSideEffects {
  /** Kernel rows per access key in the user-occupying statuses. */
  concurrency: Map<string, number>;
  vfolderAttachments: [vfolder: string, kernel: string][];
  sessionDependencies: [session: string, dependsOn: string][];
  byStatus: Map<KernelStatus, number>;
  liveSessions: string[];
}

export const KERNEL_COLUMNS = [
  'id', 'session_id', 'session_creation_id', 'session_name', 'session_type', 'cluster_mode', 'cluster_size', 'cluster_role',
  'cluster_idx', 'cluster_hostname', 'scaling_group', 'agent', 'agent_addr', 'domain_name', 'group_id', 'user_uuid',
  'access_key', 'image', 'registry', 'tag', 'container_id', 'occupied_slots', 'occupied_shares', 'environ', 'mounts',
  'mount_map', 'attached_devices', 'resource_opts', 'bootstrap_script', 'kernel_host', 'repl_in_port', 'repl_out_port',
  'stdin_port', 'stdout_port', 'service_ports', 'preopen_ports', 'created_at', 'terminated_at', 'starts_at', 'status',
  'status_changed', 'status_info', 'status_data', 'startup_command', 'result', 'internal_data', 'container_log',
  'num_queries', 'last_stat',
] as const;

const DAY = 86_400_000;
const SLOT_SHAPES = [
  { cpu: 1, mem: 1073741824 },
  { cpu: 2, mem: 4294967296 },
  { cpu: 4, mem: 8589934592 },
  { cpu: 8, mem: 17179869184 },
] as const;
const SESSION_KINDS = ['jupyter', 'notebook', 'train', 'batch', 'ssh', 'vscode'] as const;

function metric(rng: Rng, unit: string, capacity: number | null, current: number): StatMetric {
  const min = current * (0.2 + 0.5 * rng.next());
  const max = Math.max(current, min) * (1 + rng.next());
  const pct = capacity ? ((current / capacity) * 100).toFixed(2) : null;
  return {
    current: current.toFixed(unit === 'bytes' || unit === 'msec' ? 0 : 2),
    capacity: capacity === null ? null : String(capacity),
    pct,
    unit_hint: unit,
    'stats.min': min.toFixed(2),
    'stats.max': max.toFixed(2),
    'stats.sum': (current * 60).toFixed(2),
    'stats.avg': ((min + max) / 2).toFixed(2),
    'stats.diff': (rng.next() * 10).toFixed(2),
    'stats.rate': (rng.next() * 5).toFixed(2),
    'stats.version': null,
  };
}

/** The per-kernel stat object an agent keeps in Redis DB 0 (and 21.x copies to kernels.last_stat). */
export function kernelStat(rng: Rng, cpu: number, mem: number): KernelStat {
  return {
    cpu_util: metric(rng, 'percent', cpu * 100, rng.next() * cpu * 100),
    cpu_used: metric(rng, 'msec', null, rng.int(1_000, 50_000_000)),
    mem: metric(rng, 'bytes', mem, Math.floor(rng.next() * mem)),
    io_read: metric(rng, 'bytes', null, rng.int(0, 5_000_000_000)),
    io_write: metric(rng, 'bytes', null, rng.int(0, 5_000_000_000)),
    net_rx: metric(rng, 'bps', null, rng.int(0, 100_000_000)),
    net_tx: metric(rng, 'bps', null, rng.int(0, 100_000_000)),
  };
}

/** Live kernels: ~3% RUNNING plus a few in each other non-terminal status, the newest of all. */
function liveStatuses(rng: Rng, count: number, withScheduled: boolean): KernelStatus[] {
  const few = Math.max(1, Math.round(count * 0.002));
  const plan: [KernelStatus, number][] = [
    ['RUNNING', Math.max(1, Math.round(count * 0.03))],
    ['PENDING', few],
    ...(withScheduled ? [['SCHEDULED', few] as [KernelStatus, number]] : []),
    ['PREPARING', few],
    ['TERMINATING', few],
  ];
  const list = plan.flatMap(([s, n]) => Array<KernelStatus>(n).fill(s)).slice(0, count);
  for (let i = list.length - 1; i > 0; i--) {
    const j = Math.floor(rng.next() * (i + 1));
    [list[i], list[j]] = [list[j]!, list[i]!];
  }
  return list;
}

export function* generateKernels(
  rng: Rng,
  world: Pick<SeedWorld, 'keypairs' | 'agents' | 'vfolders'>,
  images: readonly ImageChoice[],
  opts: KernelGenOptions,
  effects: KernelSideEffects,
): Generator<SeedKernel> {
  const live = liveStatuses(rng, opts.count, opts.withScheduled);
  const historic = opts.count - live.length;
  const yearAgo = opts.nowMs - 365 * DAY;
  const historicSpan = 365 * DAY - 8 * DAY; // ends before the live week starts
  const recentSince = opts.nowMs - opts.recentDays * DAY;
  const aliveAgents = world.agents.filter((a) => a.status === 'ALIVE');
  let uniqueNames = 0;
  let lastBatchMain: string | undefined;

  const pickKeypair = (): SeedKeypair => world.keypairs[Math.floor(world.keypairs.length * rng.next() ** 2)]!; // a few heavy users
  const pickAgent = (pool: SeedAgent[], cuda: boolean): SeedAgent => {
    const matching = pool.filter((a) => a.gpu === cuda);
    return rng.pick(matching.length ? matching : pool.length ? pool : world.agents);
  };

  function* session(size: number, status: KernelStatus, createdAt: number, terminatedAt: number | null): Generator<SeedKernel> {
    const kp = pickKeypair();
    const user = kp.user;
    const groupId = rng.pick(user.groupIds);
    const image = rng.pick(images);
    const shape = rng.pick(SLOT_SHAPES);
    const type = rng.chance(0.2) ? 'BATCH' : 'INTERACTIVE';
    const kind = type === 'BATCH' ? 'batch' : rng.pick(SESSION_KINDS);
    const reusableName = status === 'TERMINATED' || status === 'CANCELLED';
    const sessionName = reusableName ? `${kind}-${rng.int(0, 199)}` : `${kind}-u${(uniqueNames++).toString(36)}`;
    const scheduled = status !== 'PENDING' && status !== 'CANCELLED';
    const agentPool = terminatedAt === null ? aliveAgents : world.agents;
    const started = scheduled && status !== 'SCHEDULED' && status !== 'PREPARING';
    const sessionId = rng.uuid();
    const statusChanged = terminatedAt ?? Math.min(createdAt + rng.int(1_000, 600_000), opts.nowMs);
    const vfolder: SeedVfolder | undefined = rng.chance(0.03) && world.vfolders.length ? rng.pick(world.vfolders) : undefined;
    const statusInfo =
      status === 'TERMINATED' ? rng.pick(['user-requested', 'self-terminated', 'idle-timeout', 'force-terminated'])
      : status === 'CANCELLED' ? rng.pick(['pending-timeout', 'user-requested'])
      : status === 'ERROR' ? 'failed-to-start'
      : status === 'TERMINATING' ? 'user-requested'
      : null;
    const result = status === 'ERROR' ? 'FAILURE' : status === 'TERMINATED' && type === 'BATCH' ? (rng.chance(0.7) ? 'SUCCESS' : 'FAILURE') : 'UNDEFINED';
    for (let idx = 0; idx < size; idx++) {
      const role = idx === 0 ? 'main' : 'sub';
      const id = idx === 0 ? sessionId : rng.uuid();
      const agent = scheduled ? pickAgent(agentPool, image.cuda) : undefined;
      const cuda = image.cuda ? { 'cuda.shares': '1' } : {};
      const occupied = JSON.stringify({ cpu: String(shape.cpu), mem: String(shape.mem), ...cuda });
      const wantsRedis = opts.statKeysFor === 'all' || terminatedAt === null || terminatedAt >= recentSince;
      const lastStat = started && rng.chance(terminatedAt === null ? 0.5 : 0.3);
      const stat = wantsRedis || lastStat ? kernelStat(rng, shape.cpu, shape.mem) : undefined;
      const statusData =
        status === 'PENDING' || status === 'CANCELLED'
          ? { scheduler: { retries: rng.int(1, 40), last_try: new Date(statusChanged).toISOString(), failed_predicates: [{ name: 'concurrency', msg: 'You cannot run more than 30 concurrent sessions' }], passed_predicates: [{ name: 'reserved_time' }] } }
          : status === 'TERMINATED' && rng.chance(0.4)
            ? { kernel: { exit_code: rng.pick([0, 0, 0, 1, 137]) }, session: { status: 'terminated' } }
            : status === 'ERROR'
              ? { error: { src: 'agent', name: 'ImageNotFound', repr: `ImageNotFound('${image.ref}')` } }
              : null;
      const port = started ? rng.int(30000, 31990) : 0;
      const servicePorts =
        started && type === 'INTERACTIVE' && rng.chance(0.5)
          ? JSON.stringify([{ name: 'jupyter', protocol: 'http', container_ports: [8080], host_ports: [port + 5] }])
          : null;
      const line = copyLine([
        id,
        sessionId,
        rng.chars(11, 'abcdefghijklmnopqrstuvwxyz0123456789-_'),
        sessionName,
        type,
        size > 1 ? 'multi-node' : 'single-node',
        size,
        role,
        idx,
        `${role}${idx}`,
        agent?.scalingGroup ?? (image.cuda ? 'gpu' : 'default'),
        agent?.id ?? null,
        agent?.addr ?? null,
        user.domain,
        groupId,
        user.uuid,
        kp.accessKey,
        image.ref,
        image.registry,
        null,
        started && agent ? rng.hex(64) : null,
        occupied,
        '{}',
        rng.chance(0.2) ? pgArray(['OMP_NUM_THREADS=4', 'LANG=C.UTF-8']) : '{}',
        vfolder ? pgArray([vfolder.name]) : '{}',
        '{}',
        '{}',
        '{}',
        null,
        agent?.host ?? null,
        port,
        port && port + 1,
        port && port + 2,
        port && port + 3,
        servicePorts,
        '{}',
        new Date(createdAt).toISOString(),
        terminatedAt === null ? null : new Date(terminatedAt).toISOString(),
        null,
        status,
        new Date(statusChanged).toISOString(),
        statusInfo,
        statusData ? JSON.stringify(statusData) : null,
        null,
        result,
        started ? '{}' : null,
        null,
        rng.int(0, 500),
        lastStat && stat ? JSON.stringify(stat) : null,
      ]);
      if (!USER_NON_OCCUPYING_STATUSES.includes(status)) effects.concurrency.set(kp.accessKey, (effects.concurrency.get(kp.accessKey) ?? 0) + 1);
      if (agent && !AGENT_NON_OCCUPYING_STATUSES.includes(status)) {
        agent.occupiedCpu += shape.cpu;
        agent.occupiedMem += shape.mem;
      }
      effects.byStatus.set(status, (effects.byStatus.get(status) ?? 0) + 1);
      if (vfolder) effects.vfolderAttachments.push([vfolder.id, id]);
      yield { id, stat, redisStat: wantsRedis, line };
    }
    if (type === 'BATCH') {
      if (lastBatchMain && rng.chance(0.05)) effects.sessionDependencies.push([sessionId, lastBatchMain]);
      lastBatchMain = sessionId;
    }
    if (terminatedAt === null) effects.liveSessions.push(sessionId);
  }

  for (let row = 0; row < historic; ) {
    const size = historic - row >= 2 && rng.chance(0.03) ? 2 : 1;
    const terminatedAt = Math.floor(yearAgo + ((row + rng.next()) / historic) * historicSpan);
    const createdAt = terminatedAt - Math.floor(60_000 * Math.exp(rng.next() * Math.log(60 * 24 * 3))); // 1 min … 3 days
    const status = rng.weighted([['TERMINATED', 88], ['CANCELLED', 6], ['ERROR', 6]] as const);
    yield* session(size, status, createdAt, terminatedAt);
    row += size;
  }
  for (let i = 0; i < live.length; ) {
    const status = live[i]!;
    const size = status === 'RUNNING' && live[i + 1] === 'RUNNING' && rng.chance(0.1) ? 2 : 1;
    const createdAt = Math.floor(opts.nowMs - 7 * DAY + ((i + rng.next()) / live.length) * (7 * DAY - 60_000));
    yield* session(size, status, createdAt, null);
    i += size;
  }
}
