import type { Stores } from '../../src/stores/index.js';
import { quote } from '../../src/stores/index.js';

/**
 * Data a plain seed does not have, that a backup must carry byte for byte: etcd keys with
 * Backend.AI quoting and bytes that are not UTF-8, Redis keys of every type with and without a
 * TTL in several DBs, and an `mgr` schema table with awkward text, bytea and no primary key.
 */
export async function addAwkwardData(stores: Stores): Promise<void> {
  const etcd = stores.etcd;
  await etcd.put(`config/odd/${quote('a/b:c@d é ✓ !*()')}`, 'quoted key');
  await etcd.put('config/odd/multiline', 'line 1\nline 2\t"quoted" \\ back');
  await etcd.client.put(etcd.abs('config/odd/binary')).value(Buffer.from([0xff, 0x00, 0xfe, 0x80, 0x0a]));
  await etcd.client.put(Buffer.concat([Buffer.from(etcd.abs('config/odd/key-')), Buffer.from([0xc3, 0x28, 0xff])])).value('value of a non-UTF-8 key');
  await etcd.put('config/odd/empty', '');
  await etcd.put('manager/status', 'running');

  for (const db of [0, 2, 4]) {
    const r = await stores.redis.db(db);
    const p = `fixture.${db}.`;
    await r.set(`${p}string`, 'plain');
    await r.set(Buffer.from(`${p}binary\xff`, 'latin1'), Buffer.from([0, 1, 2, 0xff]));
    await r.set(`${p}string.ttl`, 'expiring', 'EX', 5_000);
    await r.hset(`${p}hash`, { a: '1', b: 'two', 'c d': '' });
    await r.rpush(`${p}list`, 'x', 'y', 'x', 'z');
    await r.pexpire(`${p}list`, 7_200_000);
    await r.sadd(`${p}set`, 'm1', 'm2', 'm3');
    await r.zadd(`${p}zset`, 1.5, 'one', -2, 'minus', 1e10, 'big');
    await r.expire(`${p}zset`, 86_400);
    await r.xadd(`${p}stream`, '1-1', 'f', 'v1');
    await r.xadd(`${p}stream`, '2-0', 'f', 'v2', 'g', 'w');
    await r.xgroup('CREATE', `${p}stream`, 'readers', '1-1');
  }

  await stores.pg.withClient(async (c) => {
    await c.query('CREATE SCHEMA IF NOT EXISTS mgr');
    await c.query(`CREATE TABLE mgr.fixture_rows (id serial PRIMARY KEY, note text, at timestamptz, data bytea, doc json)`);
    await c.query(
      `INSERT INTO mgr.fixture_rows (note, at, data, doc) VALUES
         ($1, '2021-03-01 12:00:00.123456+09', '\\x00ff0a', '{"b": 1, "a": [1, 2]}'),
         ('tab\there', now(), NULL, 'null'),
         (NULL, NULL, '\\x', '"x"')`,
      ['new\nline, back\\slash, quote\' and ünïcode'],
    );
    await c.query(`CREATE TABLE mgr.fixture_nopk (k text, v json)`);
    await c.query(`INSERT INTO mgr.fixture_nopk VALUES ('b', '{"z": 0}'), ('a', '[1]'), ('a', '[1]')`);
  });
}
