import { createHash, type Hash } from 'node:crypto';
import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';
import type { Redis } from 'ioredis';
import type { EtcdStore } from '../stores/etcd.js';
import { MANAGER_REDIS_DBS, type RedisStore } from '../stores/redis.js';
import { rangeRaw } from './etcd-raw.js';

/**
 * Content checksums of the three stores: what a backup's manifest records and what tests compare
 * before and after a restore, an upgrade rehearsal or any job that must leave data untouched.
 */

export interface ContentSum {
  /** Rows (PostgreSQL) or keys (etcd, Redis). */
  count: number;
  sha256: string;
}

export interface TableSum {
  rows: number;
  sha256: string;
}

/** The schemas whose tables count as the installation's data: Backend.AI's and mgr's own. */
export const CHECKSUM_SCHEMAS = ['public', 'mgr'] as const;

// Text output of timestamps, floats, intervals and bytea depends on session settings: pin them so
// the same rows hash the same on any server and connection.
const STABLE_SETTINGS: [string, string][] = [
  ['TimeZone', 'UTC'],
  ['DateStyle', 'ISO, YMD'],
  ['IntervalStyle', 'postgres'],
  ['extra_float_digits', '1'],
  ['bytea_output', 'hex'],
];

/**
 * `{"schema.table": {rows, sha256}}` for every table of `public` and `mgr`: the sha256 of the
 * table's COPY text, ordered by primary key (text keys in "C" collation, so the order does not
 * depend on the server's locale) or, without one, by the whole row's text. Streams each table,
 * so memory stays flat whatever its size. Run it inside a REPEATABLE READ transaction to get one
 * snapshot across tables.
 */
export async function pgChecksums(client: pg.ClientBase): Promise<Record<string, TableSum>> {
  const saved = await client.query<{ name: string; setting: string }>(
    `SELECT name, current_setting(name) AS setting FROM unnest($1::text[]) AS name`,
    [STABLE_SETTINGS.map(([n]) => n)],
  );
  for (const [name, value] of STABLE_SETTINGS) await client.query('SELECT set_config($1, $2, false)', [name, value]);
  try {
    const tables = await client.query<{ schema: string; name: string; order_by: string | null }>(
      `SELECT n.nspname AS schema, c.relname AS name,
              (SELECT string_agg(quote_ident(a.attname) || CASE WHEN a.attcollation <> 0 THEN ' COLLATE "C"' ELSE '' END, ', ' ORDER BY k.ord)
                 FROM pg_index i
                 CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                WHERE i.indrelid = c.oid AND i.indisprimary) AS order_by
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
        ORDER BY 1, 2`,
      [CHECKSUM_SCHEMAS],
    );
    const out: Record<string, TableSum> = {};
    for (const t of tables.rows) {
      const rel = `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`;
      const orderBy = t.order_by ?? `t::text COLLATE "C"`;
      out[`${t.schema}.${t.name}`] = await hashCopy(client, `COPY (SELECT * FROM ${rel} t ORDER BY ${orderBy}) TO STDOUT`);
    }
    return out;
  } finally {
    for (const { name, setting } of saved.rows) await client.query('SELECT set_config($1, $2, false)', [name, setting]);
  }
}

async function hashCopy(client: pg.ClientBase, sql: string): Promise<TableSum> {
  const hash = createHash('sha256');
  let rows = 0;
  // COPY text escapes newlines inside values, so every raw \n ends exactly one row.
  for await (const chunk of client.query(copyTo(sql)) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) rows++;
  }
  return { rows, sha256: hash.digest('hex') };
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * `{keys, sha256}` over every key under `prefix` (relative to /sorna/{ns}/), raw bytes of key and
 * value, read page by page at one pinned revision.
 */
export async function etcdChecksum(etcd: EtcdStore, prefix = ''): Promise<{ keys: number; sha256: string }> {
  const hash = createHash('sha256');
  let keys = 0;
  for await (const page of rangeRaw(etcd, prefix)) {
    for (const kv of page.kvs) {
      updateFramed(hash, kv.key.subarray(Buffer.byteLength(etcd.root)));
      updateFramed(hash, kv.value);
      keys++;
    }
  }
  return { keys, sha256: hash.digest('hex') };
}

/** How TTLs enter the Redis checksum: rounded to whole seconds, or only whether a key has one. */
export type TtlMode = 'seconds' | 'presence';

/**
 * `{db: {keys, sha256}}` for Redis DBs 0-4: per key (in byte order) its name, type, value read
 * type by type (hash fields and set members sorted, zset by score, stream entries and groups)
 * and TTL. `ttl: 'presence'` leaves the TTL value out, for comparisons across a restore where
 * time moved on; compare TTLs with redisTtls() then. Holds one DB's key names in memory: a test
 * and verification tool, not a backup path.
 */
export async function redisChecksums(
  redis: RedisStore,
  opts: { ttl?: TtlMode; dbs?: readonly number[] } = {},
): Promise<Record<number, { keys: number; sha256: string }>> {
  const out: Record<number, { keys: number; sha256: string }> = {};
  for (const db of opts.dbs ?? MANAGER_REDIS_DBS) {
    const conn = await redis.db(db);
    const names = await sortedKeys(conn);
    const hash = createHash('sha256');
    let keys = 0;
    for (const key of names) {
      const entry = await describeKey(conn, key, opts.ttl ?? 'seconds');
      if (entry === undefined) continue; // expired or deleted since the scan
      updateFramed(hash, key);
      for (const part of entry) updateFramed(hash, part);
      keys++;
    }
    out[db] = { keys, sha256: hash.digest('hex') };
  }
  return out;
}

/** `{db: {key (base64): pttl ms}}` of keys that have a TTL, for "within a second" comparisons. */
export async function redisTtls(redis: RedisStore, dbs: readonly number[] = MANAGER_REDIS_DBS): Promise<Record<number, Record<string, number>>> {
  const out: Record<number, Record<string, number>> = {};
  for (const db of dbs) {
    const conn = await redis.db(db);
    out[db] = {};
    for (const key of await sortedKeys(conn)) {
      const pttl = await conn.pttl(key);
      if (pttl >= 0) out[db]![key.toString('base64')] = pttl;
    }
  }
  return out;
}

async function sortedKeys(conn: Redis): Promise<Buffer[]> {
  const seen = new Map<string, Buffer>(); // SCAN may return a key twice
  let cursor = '0';
  do {
    const [next, batch] = await conn.scanBuffer(cursor, 'COUNT', 1000);
    cursor = next.toString();
    for (const k of batch) seen.set(k.toString('base64'), k);
  } while (cursor !== '0');
  return [...seen.values()].sort(Buffer.compare);
}

async function describeKey(conn: Redis, key: Buffer, ttlMode: TtlMode): Promise<(string | Buffer)[] | undefined> {
  const type = await conn.type(key);
  const pttl = await conn.pttl(key);
  if (type === 'none' || pttl === -2) return undefined;
  const ttl = pttl < 0 ? 'no-ttl' : ttlMode === 'presence' ? 'ttl' : `ttl:${Math.round(pttl / 1000)}`;
  const parts: (string | Buffer)[] = [type, ttl];
  switch (type) {
    case 'string':
      parts.push((await conn.getBuffer(key)) ?? Buffer.alloc(0));
      break;
    case 'hash': {
      const flat = await conn.hgetallBuffer(key);
      const fields = Object.keys(flat).sort();
      for (const f of fields) parts.push(f, flat[f]!);
      break;
    }
    case 'list':
      parts.push(...(await conn.lrangeBuffer(key, 0, -1)));
      break;
    case 'set':
      parts.push(...(await conn.smembersBuffer(key)).sort(Buffer.compare));
      break;
    case 'zset':
      parts.push(...(await conn.zrangeBuffer(key, '0', '-1', 'WITHSCORES')));
      break;
    case 'stream': {
      const entries = (await conn.xrangeBuffer(key, '-', '+')) as [Buffer, Buffer[]][];
      for (const [id, fields] of entries) parts.push(id, ...fields);
      const groups = (await conn.call('XINFO', 'GROUPS', key)) as unknown[];
      parts.push(JSON.stringify(groups));
      break;
    }
    default:
      parts.push((await conn.dumpBuffer(key)) ?? Buffer.alloc(0)); // module types: their serialized form
  }
  return parts;
}

/** Length-prefixed, so ("ab","c") and ("a","bc") hash differently. */
function updateFramed(hash: Hash, part: string | Buffer): void {
  const buf = typeof part === 'string' ? Buffer.from(part) : part;
  const len = Buffer.alloc(8);
  len.writeBigUInt64BE(BigInt(buf.length));
  hash.update(len);
  hash.update(buf);
}
