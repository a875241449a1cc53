import { encode } from '@msgpack/msgpack';
import type { ChainableCommander, Redis } from 'ioredis';
import type { Rng } from './seed-random.js';
import { kernelStat } from './seed-kernels.js';
import type { SeedAgent } from './seed-world.js';

/**
 * Redis as a 21.03 cluster leaves it (backend-ai.md §6): msgpack stat keys per kernel (no TTL)
 * and per agent (with a TTL) in DB 0, `agent.last_seen` and `session.{id}.last_access` in DB 2,
 * image → agent sets in DB 3. Commands go in pipelines of ~1,000.
 */
export class PipelineWriter {
  private pipe: ChainableCommander | undefined;
  private queued = 0;
  /** Commands sent so far. */
  written = 0;

  constructor(
    private readonly client: Redis,
    private readonly batch = 1_000,
  ) {}

  async add(cmd: (p: ChainableCommander) => void): Promise<void> {
    this.pipe ??= this.client.pipeline();
    cmd(this.pipe);
    this.queued++;
    if (this.queued >= this.batch) await this.flush();
  }

  async flush(): Promise<void> {
    const pipe = this.pipe;
    if (!pipe) return;
    this.pipe = undefined;
    const n = this.queued;
    this.queued = 0;
    const results = (await pipe.exec()) ?? [];
    const failed = results.find(([err]) => err);
    if (failed) throw failed[0];
    this.written += n;
  }
}

/** msgpack as the agent writes it (values are Python str/None). */
export function packStat(value: unknown): Buffer {
  const u8 = encode(value);
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

const DAY_SEC = 86_400;

/**
 * DB 0 per-agent stat keys (TTL) and DB 2 `agent.last_seen`. By default every agent was last
 * seen days ago, so nothing looks alive: the managers and agents of a cluster being upgraded
 * are shut down.
 */
export async function writeAgentKeys(
  stat: Redis,
  live: Redis,
  rng: Rng,
  agents: SeedAgent[],
  nowMs: number,
): Promise<number> {
  const nowSec = nowMs / 1000;
  const pipe0 = stat.pipeline();
  const pipe2 = live.pipeline();
  let keys = 0;
  for (const a of agents) {
    if (a.status === 'ALIVE') {
      pipe0.set(a.id, packStat(kernelStat(rng, a.gpu ? 64 : 32, a.gpu ? 274877906944 : 137438953472)), 'EX', 120);
      keys++;
    }
    pipe2.hset('agent.last_seen', a.id, (nowSec - rng.int(2, 30) * DAY_SEC - rng.next()).toFixed(6));
  }
  if (agents.length) keys++;
  await Promise.all([pipe0.exec(), pipe2.exec()]);
  return keys;
}

/** DB 2 `session.{id}.last_access` (unix time, 1-day expiry as the idle checker sets it) for live sessions. */
export async function writeSessionAccess(live: Redis, sessions: string[], nowMs: number, rng: Rng): Promise<number> {
  const w = new PipelineWriter(live);
  for (const id of sessions) {
    const t = (nowMs / 1000 - rng.int(0, 3600) - rng.next()).toFixed(6);
    await w.add((p) => p.set(`session.${id}.last_access`, t, 'EX', DAY_SEC));
  }
  await w.flush();
  return w.written;
}

/** DB 3: per image canonical name, the set of agents that have it (SADD on heartbeat). */
export async function writeImageAgents(image: Redis, refs: string[], agents: SeedAgent[], rng: Rng): Promise<number> {
  const w = new PipelineWriter(image);
  for (const ref of refs) {
    const holders = agents.filter(() => rng.chance(0.5)).map((a) => a.id);
    if (holders.length) await w.add((p) => p.sadd(ref, ...holders));
  }
  await w.flush();
  return w.written;
}
