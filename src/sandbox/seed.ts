import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { MgrError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Progress } from '../engine/types.js';
import { MANAGER_REDIS_DBS, REDIS_DB, type EtcdTree, type Stores } from '../stores/index.js';
import type { RegistryType } from '../config/shared.js';
import { copyLine, copyRows } from './seed-copy.js';
import { generateSeedImages, imageRef, writeEtcdImages, type SeedImage } from './seed-etcd-images.js';
import { generateKernels, KERNEL_COLUMNS, type ImageChoice, type KernelSideEffects } from './seed-kernels.js';
import { Rng } from './seed-random.js';
import { packStat, PipelineWriter, writeAgentKeys, writeImageAgents, writeSessionAccess } from './seed-redis.js';
import { insertWorld, updateAgentOccupancy } from './seed-world.js';

/**
 * A realistic Backend.AI 21.03 installation in real PostgreSQL, etcd and Redis: the schema from
 * Backend.AI's own dump, deterministic data sized by options, image metadata in etcd's 21.03
 * layout and the Redis keys agents leave behind. What the upgrade, backup and clear-history
 * work on in the sandbox, the tests and the benchmarks.
 */

export const BASELINE_HEADS = ['8679d0a7e22b', '518ecf41f567'] as const;
export type BaselineHead = (typeof BASELINE_HEADS)[number];

export const BASELINE_FILE = 'drizzle/baseline/21.03-8679d0a7e22b.sql';

/** A file of this project (drizzle/, config/): found from src/ under vitest and from dist/src/ when built. */
export function projectFile(rel: string): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, rel);
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) throw new MgrError('internal', `project file ${rel} not found above ${path.dirname(fileURLToPath(import.meta.url))}`);
    dir = parent;
  }
}

/**
 * What a 21.03.0-21.03.2 database (head 518ecf41f567) has instead of the 8679d0a7e22b baseline
 * (backend-ai-schema.md §2.2 row 0): no SCHEDULED status, the old unique index on
 * (access_key, session_id), and its own alembic_version row.
 */
const HEAD_518_REPLACEMENTS: [from: string, to: string][] = [
  ["CREATE TYPE public.kernelstatus AS ENUM (\n    'PENDING',\n    'SCHEDULED',\n    'PREPARING',", "CREATE TYPE public.kernelstatus AS ENUM (\n    'PENDING',\n    'PREPARING',"],
  [
    'CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON public.kernels USING btree (access_key, session_name) WHERE',
    'CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON public.kernels USING btree (access_key, session_id) WHERE',
  ],
  ["INSERT INTO public.alembic_version (version_num) VALUES ('8679d0a7e22b');", "INSERT INTO public.alembic_version (version_num) VALUES ('518ecf41f567');"],
];

/** The schema SQL of a 21.03 head, from the baseline file. */
export function baselineSql(head: BaselineHead): string {
  const sql = readFileSync(projectFile(BASELINE_FILE), 'utf8');
  return head === '8679d0a7e22b' ? sql : schemaAt518(sql);
}

/**
 * The 518ecf41f567 schema from the 8679d0a7e22b one, by exact text replacement. Throws when a
 * replacement does not match exactly once, so a changed baseline cannot silently give a wrong schema.
 */
export function schemaAt518(sql8679: string): string {
  let sql = sql8679;
  for (const [from, to] of HEAD_518_REPLACEMENTS) {
    const at = sql.indexOf(from);
    if (at < 0 || sql.indexOf(from, at + 1) >= 0) {
      throw new MgrError('internal', `${BASELINE_FILE} does not contain exactly one ${JSON.stringify(from.split('\n')[0])}; cannot derive the 518ecf41f567 schema`);
    }
    sql = sql.slice(0, at) + to + sql.slice(at + from.length);
  }
  return sql;
}

/** Creates Backend.AI's 21.03 schema (and its alembic_version row) in an empty database. */
export async function loadBaseline(client: pg.ClientBase, head: BaselineHead = '8679d0a7e22b'): Promise<void> {
  await client.query(baselineSql(head));
}

export interface SeedRegistry {
  name: string;
  url: string;
  type: RegistryType;
  /** Harbor projects, comma-separated as Backend.AI stores them. */
  project?: string;
  username?: string;
  password?: string;
}

export const DEFAULT_SEED_REGISTRIES: SeedRegistry[] = [{ name: 'cr.backend.ai', url: 'https://cr.backend.ai', type: 'harbor2', project: 'stable,ngc' }];

export interface SeedOptions {
  /** PRNG seed: the same seed gives the same installation. @default 1 */
  seed?: number;
  /** Kernel rows. @default 2000 */
  kernels?: number;
  /** Image tags in etcd. @default 200 */
  images?: number;
  /** @default 50 */
  keypairs?: number;
  /** @default 80% of keypairs (some users have two keypairs), at least 4 */
  users?: number;
  /** @default 8 */
  agents?: number;
  /** Which 21.03 head to build. @default '8679d0a7e22b' */
  head?: BaselineHead;
  /** Registries written to etcd config/docker/registry. @default cr.backend.ai (harbor2, "stable,ngc") */
  registries?: SeedRegistry[];
  /** Kernel stat keys in Redis for live kernels and those terminated in the last 60 days, or for all. @default 'recent' */
  statKeysFor?: 'recent' | 'all';
  /** Wipe PostgreSQL, the etcd namespace and Redis first (resetInstallation). @default false */
  reset?: boolean;
  /** "Now" for every timestamp (a Date, an ISO string or epoch ms). @default the current time */
  now?: Date | string | number;
  log?: Logger;
  /** Called as each phase advances (phase: "kernels", "images", "redis", …). */
  onProgress?: (phase: string, p: Progress) => void;
}

export interface SeedSummary {
  head: BaselineHead;
  /** Rows per table. */
  counts: Record<string, number>;
  /** Keys written under the namespace (config + images + aliases). */
  etcdKeys: number;
  imageTags: number;
  aliases: number;
  redisKeys: number;
  durationMs: number;
}

const RECENT_DAYS = 60;

/** What is already in the target: tables in public/mgr and image keys in etcd. */
export async function existingInstallation(stores: Stores): Promise<{ tables: number; imageKeys: number }> {
  const tables = await stores.pg.withClient(async (c) => {
    const r = await c.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_tables WHERE schemaname IN ('public', 'mgr')`);
    return r.rows[0]!.n;
  });
  return { tables, imageKeys: await stores.etcd.count('images/') };
}

/**
 * Wipes an installation: drops and recreates schema public (and drops schema mgr), deletes the
 * namespace's etcd keys and flushes Redis DBs 0-4. For the sandbox only; the CLI asks for --yes.
 */
export async function resetInstallation(stores: Stores): Promise<void> {
  await stores.pg.withClient((c) => c.query('DROP SCHEMA IF EXISTS mgr CASCADE; DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;'));
  await stores.etcd.deletePrefix('');
  for (const db of MANAGER_REDIS_DBS) await (await stores.redis.db(db)).flushdb();
}

/** The shared config tree: the sample's, with the target Redis and the given registries. */
function sharedConfigTree(stores: Stores, registries: SeedRegistry[]): EtcdTree {
  const sample = JSON.parse(readFileSync(projectFile('config/etcd.config.sample.json'), 'utf8')) as EtcdTree;
  const t = stores.redis.target;
  const redis: EtcdTree = t.sentinels?.length
    ? { sentinel: t.sentinels.map((s) => `${s.host}:${s.port}`).join(','), service_name: t.serviceName ?? 'manager' }
    : { addr: `${t.host}:${t.port}` };
  if (t.password) redis.password = t.password;
  const registryTree: EtcdTree = {};
  for (const r of registries) {
    const node: EtcdTree = { '': r.url, type: r.type };
    if (r.project) node.project = r.project;
    if (r.username) node.username = r.username;
    if (r.password) node.password = r.password;
    registryTree[r.name] = node;
  }
  const docker = typeof sample.docker === 'object' ? sample.docker : {};
  return { ...sample, redis, docker: { ...docker, registry: registryTree } };
}

export async function seedInstallation(stores: Stores, opts: SeedOptions = {}): Promise<SeedSummary> {
  const started = Date.now();
  const log = opts.log ?? silentLogger;
  const progress = opts.onProgress ?? (() => undefined);
  const head = opts.head ?? '8679d0a7e22b';
  const kernelCount = opts.kernels ?? 2_000;
  const imageCount = Math.max(1, opts.images ?? 200);
  const keypairCount = opts.keypairs ?? 50;
  const sizes = { keypairs: keypairCount, users: opts.users ?? Math.max(4, Math.ceil(keypairCount * 0.8)), agents: opts.agents ?? 8 };
  const nowMs = new Date(opts.now ?? Date.now()).getTime();
  if (!Number.isFinite(nowMs)) throw new MgrError('usage', `seed option "now" is not a valid time: ${JSON.stringify(opts.now)}`);
  const rng = new Rng(opts.seed ?? 1);

  if (opts.reset) await resetInstallation(stores);
  else {
    const found = await existingInstallation(stores);
    if (found.tables > 0 || found.imageKeys > 0) {
      throw new MgrError('refused', `refusing to seed over an existing installation (${found.tables} tables in PostgreSQL, ${found.imageKeys} image keys in etcd)`, {
        hint: 'seed an empty sandbox, or wipe it first with --reset --yes (never against real data)',
        details: found,
      });
    }
  }

  // etcd first: image references are needed by the kernels.
  const registries = opts.registries ?? DEFAULT_SEED_REGISTRIES;
  const configKeys = await stores.etcd.putPrefix('config', sharedConfigTree(stores, registries));
  const imageChoices: ImageChoice[] = [];
  const imageRefs: string[] = [];
  function* images(): Generator<SeedImage> {
    for (const img of generateSeedImages(rng, { count: imageCount })) {
      // kernels use the first few hundred tags, as clusters run a few popular images
      if (imageChoices.length < 300) imageChoices.push({ ref: imageRef(img), registry: img.registry, cuda: 'ai.backend.accelerators' in img.labels });
      if (imageRefs.length < 50) imageRefs.push(imageRef(img));
      yield img;
    }
  }
  const written = await writeEtcdImages(stores.etcd, images(), { onProgress: (w) => progress('images', { done: w.tags, total: imageCount, unit: 'tags' }) });
  log.info({ event: 'seed.etcd', configKeys, ...written }, 'etcd: shared config and image metadata written');

  const stat = await stores.redis.db(REDIS_DB.stat);
  const statKeys = new PipelineWriter(stat);
  const effects: KernelSideEffects = { concurrency: new Map(), vfolderAttachments: [], sessionDependencies: [], byStatus: new Map(), liveSessions: [] };

  const { counts, agents } = await stores.pg.withTransaction(async (client) => {
    await loadBaseline(client, head);
    const world = await insertWorld(client, rng, sizes, nowMs);
    let done = 0;
    async function* kernelLines(): AsyncGenerator<string> {
      for (const k of generateKernels(rng, world, imageChoices, { count: kernelCount, nowMs, withScheduled: head === '8679d0a7e22b', statKeysFor: opts.statKeysFor ?? 'recent', recentDays: RECENT_DAYS }, effects)) {
        if (k.redisStat && k.stat) {
          const value = packStat(k.stat);
          await statKeys.add((p) => p.set(k.id, value));
        }
        if (++done % 10_000 === 0) progress('kernels', { done, total: kernelCount, unit: 'kernels' });
        yield k.line;
      }
    }
    const c = world.counts;
    c.kernels = await copyRows(client, 'kernels', KERNEL_COLUMNS, kernelLines(), 1_000);
    if (done % 10_000 !== 0) progress('kernels', { done, total: kernelCount, unit: 'kernels' });
    await statKeys.flush();
    c.vfolder_attachment = await copyRows(client, 'vfolder_attachment', ['vfolder', 'kernel'], effects.vfolderAttachments.map((r) => copyLine(r)));
    c.session_dependencies = await copyRows(client, 'session_dependencies', ['session_id', 'depends_on'], effects.sessionDependencies.map((r) => copyLine(r)));
    // concurrency_used as 21.x keeps it: kernel rows in the user-occupying statuses
    for (const [ak, n] of effects.concurrency) await client.query('UPDATE keypairs SET concurrency_used = $2 WHERE access_key = $1', [ak, n]);
    await updateAgentOccupancy(client, world.agents);
    c.alembic_version = 1;
    return { counts: c, agents: world.agents };
  });
  log.info({ event: 'seed.postgres', head, counts, byStatus: Object.fromEntries(effects.byStatus) }, 'PostgreSQL: 21.03 schema and data loaded');

  const live = await stores.redis.db(REDIS_DB.live);
  const agentKeys = await writeAgentKeys(stat, live, rng, agents, nowMs);
  const sessionKeys = await writeSessionAccess(live, effects.liveSessions, nowMs, rng);
  const imageSets = await writeImageAgents(await stores.redis.db(REDIS_DB.image), imageRefs, agents.filter((a) => a.status === 'ALIVE'), rng);
  const redisKeys = statKeys.written + agentKeys + sessionKeys + imageSets;
  log.info({ event: 'seed.redis', kernelStatKeys: statKeys.written, agentKeys, sessionKeys, imageSets }, 'Redis: stat and liveness keys written');

  return {
    head,
    counts,
    etcdKeys: configKeys + written.keys,
    imageTags: written.tags,
    aliases: written.aliases,
    redisKeys,
    durationMs: Date.now() - started,
  };
}
