import { Redis, type RedisOptions } from 'ioredis';
import { MgrError } from '../errors.js';
import type { RedisTarget } from '../config/shared.js';

/** Backend.AI's logical Redis DBs (manager/defs.py; the same numbers in 21.03, 21.09 and 22.03). */
export const REDIS_DB = { stat: 0, rateLimit: 1, live: 2, image: 3, stream: 4 } as const;
export const MANAGER_REDIS_DBS = [0, 1, 2, 3, 4] as const;

export function redisOptions(t: RedisTarget, db: number): RedisOptions {
  const common: RedisOptions = {
    db,
    password: t.password,
    connectTimeout: 5_000,
    maxRetriesPerRequest: 2,
    lazyConnect: true,
    enableOfflineQueue: true,
    retryStrategy: (times) => (times > 3 ? null : 200 * times),
  };
  if (t.sentinels?.length) {
    return { ...common, sentinels: t.sentinels, name: t.serviceName ?? 'mymaster' };
  }
  return { ...common, host: t.host, port: t.port };
}

/** One connection per logical DB, opened lazily and closed together. */
export class RedisStore {
  private readonly conns = new Map<number, Redis>();
  constructor(readonly target: RedisTarget) {}

  async db(index: number): Promise<Redis> {
    let c = this.conns.get(index);
    if (!c) {
      c = new Redis(redisOptions(this.target, index));
      c.on('error', () => undefined); // surfaced by the failing command instead
      this.conns.set(index, c);
      try {
        await c.connect();
      } catch (e) {
        this.conns.delete(index);
        c.disconnect();
        throw redisUnreachable(this.target, e);
      }
    }
    return c;
  }

  describe(): string {
    return this.target.sentinels?.length
      ? `sentinel ${this.target.sentinels.map((s) => `${s.host}:${s.port}`).join(',')} (service ${this.target.serviceName})`
      : `${this.target.host}:${this.target.port}`;
  }

  async version(): Promise<string> {
    const info = await (await this.db(0)).info('server');
    return /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown';
  }

  async close(): Promise<void> {
    await Promise.all([...this.conns.values()].map((c) => c.quit().catch(() => c.disconnect())));
    this.conns.clear();
  }
}

export function redisUnreachable(t: RedisTarget, cause: unknown): MgrError {
  const where = t.sentinels?.length ? `sentinel ${t.serviceName}` : `${t.host}:${t.port}`;
  return new MgrError('storeUnreachable', `Redis at ${where} is not reachable: ${(cause as Error)?.message ?? cause}`, {
    cause,
    hint: 'check config/redis in etcd and that Redis is running',
  });
}
