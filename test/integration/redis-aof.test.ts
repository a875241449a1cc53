import { spawn } from 'node:child_process';
import { existsSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, TEST_SANDBOX_PREFIX, type TestSandbox } from '../helpers/sandbox.js';
import { freePort, startRedis, stopProcess, type RedisHandle } from '../../src/sandbox/index.js';
import { openStores, type Stores } from '../../src/stores/index.js';
import { EtcdStore } from '../../src/stores/etcd.js';
import { enableRedisAof, inspectRedisAof, redisAofStep } from '../../src/stores/redis-aof.js';
import { MgrError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import type { Progress, StepContext, UpgradeOptions } from '../../src/engine/types.js';

const KEYS_PER_DB = 300;

function stepContext(stores: Stores, options: Partial<UpgradeOptions> = {}, progress: Progress[] = []): StepContext {
  let saved: unknown;
  return {
    stores,
    log: silentLogger,
    options: { skipRedisAof: false, ...options } as UpgradeOptions,
    signal: new AbortController().signal,
    progress: (p) => progress.push(p),
    checkpoint: { get: async <T>() => saved as T | undefined, set: async (d) => void (saved = d) },
    release: '22.03',
  };
}

function connect(port: number): Redis {
  const r = new Redis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on('error', () => undefined);
  return r;
}

/** A redis-server on our own config file (for settings startRedis has no option for). */
async function startRawRedis(dir: string, lines: string[], extraArgs: string[] = []): Promise<{ port: number; pid: number; stop(): Promise<void> }> {
  await mkdir(dir, { recursive: true });
  const port = await freePort();
  const conf = path.join(dir, 'redis.conf');
  await writeFile(conf, [`port ${port}`, 'bind 127.0.0.1', `dir ${dir}`, 'save ""', ...lines].join('\n') + '\n');
  const log = openSync(path.join(dir, 'redis.log'), 'a');
  const proc = spawn('/usr/bin/redis-server', [conf, ...extraArgs], { cwd: dir, stdio: ['ignore', log, log] });
  let exited = false;
  proc.once('exit', () => (exited = true));
  for (const deadline = Date.now() + 20_000; ; ) {
    const probe = new Redis({ host: '127.0.0.1', port, lazyConnect: true, retryStrategy: () => null });
    probe.on('error', () => undefined);
    try {
      await probe.connect();
      break;
    } catch {
      if (exited || Date.now() > deadline) throw new Error(`redis-server in ${dir} did not start: ${await readFile(path.join(dir, 'redis.log'), 'utf8')}`);
      await new Promise((r) => setTimeout(r, 50));
    } finally {
      probe.disconnect();
    }
  }
  return { port, pid: proc.pid!, stop: () => stopProcess(proc.pid!, 'SIGTERM') };
}

describe('Redis AOF on real redis-server 7', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let extras: string;
  const stops: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    extras = await mkdtemp(TEST_SANDBOX_PREFIX + 'aof-');
  });
  afterAll(async () => {
    await stores?.close();
    await Promise.all(stops.map((s) => s()));
    await sb?.stop();
    if (extras) await rm(extras, { recursive: true, force: true });
  });

  it('the trap mgr avoids: appendonly yes put only in redis.conf of an RDB-only server restarts with an empty dataset', async () => {
    const dir = path.join(extras, 'trap');
    const r1 = await startRawRedis(dir, ['appendonly no']);
    const c1 = connect(r1.port);
    await c1.connect();
    await c1.mset('a', '1', 'b', '2');
    await c1.call('SAVE');
    c1.disconnect();
    await r1.stop();
    expect(existsSync(path.join(dir, 'dump.rdb'))).toBe(true);
    // The same dir (with its dump.rdb), now with appendonly yes in the config file.
    const r2 = await startRawRedis(dir, ['appendonly yes']);
    stops.push(r2.stop);
    const c2 = connect(r2.port);
    await c2.connect();
    expect(await c2.dbsize()).toBe(0);
    c2.disconnect();
  });

  it('enables AOF live, persists it with CONFIG REWRITE, and every key survives a restart', async () => {
    const progress: Progress[] = [];
    for (const db of [0, 1, 2, 3, 4]) {
      const c = await stores.redis.db(db);
      const pipe = c.pipeline();
      for (let i = 0; i < KEYS_PER_DB; i++) pipe.set(`k${db}:${i}`, `v${db}:${i}`);
      pipe.hset(`h${db}`, { a: '1', b: '2' });
      await pipe.exec();
    }
    const step = redisAofStep();
    const ctx = stepContext(stores, {}, progress);
    const plan = await step.plan(ctx);
    expect(plan).toHaveLength(1);
    expect(plan[0]!.action).toContain(`Redis 127.0.0.1:${sb.redis.port}`);
    expect(plan[0]!.action).toContain('CONFIG SET appendonly yes');
    expect(await readFile(sb.redis.configFile, 'utf8')).toMatch(/^appendonly no$/m);

    const result = await step.apply(ctx);
    expect(result.skipped).toBeFalsy();
    expect(result.summary).toMatch(new RegExp(`Redis 127\\.0\\.0\\.1:${sb.redis.port} .*AOF on after a [\\d.]+ s rewrite; appendonly yes written to ${sb.redis.configFile}`));
    console.info(`redis-aof: ${result.summary}`);
    await step.verify(ctx);
    const conf = await readFile(sb.redis.configFile, 'utf8');
    expect(conf).toMatch(/^appendonly yes$/m);
    expect(conf).not.toMatch(/^appendonly no$/m);
    expect(existsSync(path.join(sb.redis.dir, 'appendonlydir'))).toBe(true);

    // Restart from the files alone: no RDB exists (save ""), so the keys can only come from the AOF.
    await stores.close();
    await sb.redis.stop();
    expect(existsSync(path.join(sb.redis.dir, 'dump.rdb'))).toBe(false);
    await sb.redis.start();
    stores = await openStores(sb.config);
    for (const db of [0, 1, 2, 3, 4]) {
      const c = await stores.redis.db(db);
      expect(await c.dbsize()).toBe(KEYS_PER_DB + 1);
      expect(await c.get(`k${db}:${KEYS_PER_DB - 1}`)).toBe(`v${db}:${KEYS_PER_DB - 1}`);
      expect(await c.hgetall(`h${db}`)).toEqual({ a: '1', b: '2' });
    }
    expect(await (await stores.redis.db(0)).config('GET', 'appendonly')).toEqual(['appendonly', 'yes']);
  });

  it('already on: a no-op that says so and leaves redis.conf untouched', async () => {
    const before = await readFile(sb.redis.configFile, 'utf8');
    const direct = connect(sb.redis.port);
    await direct.connect();
    try {
      expect(await enableRedisAof(direct)).toEqual({ alreadyOn: true, node: `127.0.0.1:${sb.redis.port}`, rewriteSeconds: 0, configFile: undefined });
    } finally {
      direct.disconnect();
    }
    const ctx = stepContext(stores);
    expect(await redisAofStep().plan(ctx)).toEqual([]);
    expect((await redisAofStep().apply(ctx)).summary).toMatch(/AOF already on \(appendonly yes\), nothing to do/);
    expect(await readFile(sb.redis.configFile, 'utf8')).toBe(before);
  });

  it('refuses a Redis without a config file with what to put in redis.conf and why, changing nothing', async () => {
    const h: RedisHandle = await startRedis(path.join(extras, 'noconf'), { withConfigFile: false });
    stops.push(h.stop);
    const c = connect(h.port);
    await c.connect();
    try {
      await c.set('x', '1');
      const err = await enableRedisAof(c).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MgrError);
      expect((err as MgrError).code).toBe('refused');
      expect((err as MgrError).exitCode).toBe(5);
      expect((err as Error).message).toMatch(/runs without a config file.*nothing was changed/);
      expect((err as MgrError).hint).toContain('`appendonly yes`');
      expect((err as MgrError).hint).toMatch(/has only dump\.rdb and restarts with appendonly yes loads the empty AOF and starts from an empty dataset/);
      expect(await c.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
      expect(existsSync(path.join(h.dir, 'appendonlydir'))).toBe(false);
    } finally {
      c.disconnect();
    }
  });

  it('refuses when CONFIG is renamed away (as on managed Redis), and on a replica', async () => {
    const renamed = await startRawRedis(path.join(extras, 'renamed'), ['appendonly no', 'rename-command CONFIG ""']);
    stops.push(renamed.stop);
    const c = connect(renamed.port);
    await c.connect();
    try {
      const err = await enableRedisAof(c).catch((e: unknown) => e);
      expect((err as MgrError).code).toBe('refused');
      expect((err as Error).message).toMatch(/CONFIG is not available there \(ERR unknown command/);
      expect((err as MgrError).hint).toContain('empty dataset');
    } finally {
      c.disconnect();
    }

    const replica = await startRawRedis(path.join(extras, 'replica'), ['appendonly no', `replicaof 127.0.0.1 ${sb.redis.port}`]);
    stops.push(replica.stop);
    const r = connect(replica.port);
    await r.connect();
    try {
      const state = await inspectRedisAof(r);
      expect(state.role).toBe('slave');
      expect(state.problem?.message).toMatch(new RegExp(`is a replica \\(role:slave\\) of 127\\.0\\.0\\.1:${sb.redis.port}`));
      await expect(enableRedisAof(r)).rejects.toThrow(/AOF must be enabled on the master/);
      expect(await r.config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
    } finally {
      r.disconnect();
    }
  });

  it('--skip-redis-aof records the step as skipped and changes nothing', async () => {
    const h = await startRedis(path.join(extras, 'skip'));
    stops.push(h.stop);
    const etcd = new EtcdStore(sb.etcd.endpoint, 'skip');
    await etcd.put('config/redis/addr', `127.0.0.1:${h.port}`);
    etcd.close();
    const skipStores = await openStores({ ...sb.config, etcd: { ...sb.config.etcd, namespace: 'skip' } });
    try {
      const ctx = stepContext(skipStores, { skipRedisAof: true });
      expect((await redisAofStep().plan(ctx))[0]!.action).toMatch(/^skip: /);
      const result = await redisAofStep().apply(ctx);
      expect(result.skipped).toBe(true);
      expect(result.warnings?.[0]).toMatch(/--skip-redis-aof/);
      await redisAofStep().verify(ctx);
      expect(await (await skipStores.redis.db(0)).config('GET', 'appendonly')).toEqual(['appendonly', 'no']);
      expect(await readFile(h.configFile, 'utf8')).toMatch(/^appendonly no$/m);
    } finally {
      await skipStores.close();
    }
  });

  it('with sentinels (config/redis/sentinel) changes the master that sentinel names, and says which', async () => {
    const master = await startRedis(path.join(extras, 'master'));
    stops.push(master.stop);
    const sentinel = await startRawRedis(path.join(extras, 'sentinel'), [`sentinel monitor manager 127.0.0.1 ${master.port} 1`], ['--sentinel']);
    stops.push(sentinel.stop);
    const etcd = new EtcdStore(sb.etcd.endpoint, 'sentinel');
    await etcd.put('config/redis/sentinel', `127.0.0.1:${sentinel.port}`);
    await etcd.put('config/redis/service_name', 'manager');
    etcd.close();
    const sentinelStores = await openStores({ ...sb.config, etcd: { ...sb.config.etcd, namespace: 'sentinel' } });
    try {
      expect(sentinelStores.shared.redis.sentinels).toEqual([{ host: '127.0.0.1', port: sentinel.port }]);
      const ctx = stepContext(sentinelStores);
      const result = await redisAofStep().apply(ctx);
      expect(result.summary).toContain(`Redis 127.0.0.1:${master.port} (sentinel 127.0.0.1:${sentinel.port} (service manager))`);
      await redisAofStep().verify(ctx);
      expect(await readFile(master.configFile, 'utf8')).toMatch(/^appendonly yes$/m);
    } finally {
      await sentinelStores.close();
    }
  });
});
