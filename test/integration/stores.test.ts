import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import type { Stores } from '../../src/stores/index.js';

describe('stores on real servers', () => {
  let sb: TestSandbox;
  let stores: Stores;
  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('reaches PostgreSQL 15, Redis 7 and etcd 3.4 and round-trips data', async () => {
    expect(await stores.pg.version()).toMatch(/^15\./);
    expect(await stores.redis.version()).toMatch(/^7\./);
    expect(await stores.etcd.version()).toMatch(/^3\.4/);
    await stores.etcd.put('config/x%2Fy/z', 'v');
    expect(await stores.etcd.getPrefix('config/x%2Fy')).toEqual({ z: 'v' });
    const r = await stores.redis.db(2);
    await r.set('k', '1');
    expect(await (await stores.redis.db(0)).get('k')).toBeNull();
    expect(await r.get('k')).toBe('1');
  });

  it('pages an etcd prefix at a pinned revision without seeing later writes', async () => {
    await stores.etcd.putMany(Array.from({ length: 250 }, (_, i) => ({ key: `t/${String(i).padStart(4, '0')}`, value: String(i) })));
    const first = await stores.etcd.page('t/', { limit: 100 });
    await stores.etcd.put('t/9999', 'late');
    const keys = first.kvs.map((k) => k.key);
    let page = first;
    while (page.more) {
      page = await stores.etcd.page('t/', { limit: 100, after: page.kvs.at(-1)!.key, revision: first.revision });
      keys.push(...page.kvs.map((k) => k.key));
    }
    expect(keys).toHaveLength(250);
    expect(new Set(keys).size).toBe(250);
    expect(keys).not.toContain('t/9999');
  });
});
