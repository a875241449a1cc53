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
    for (let i = 0; i < names.length; i += KEY_BATCH) {
      for (const [key, entry] of await describeKeys(conn, names.slice(i, i + KEY_BATCH), opts.ttl ?? 'seconds')) {
        updateFramed(hash, key);
        for (const part of entry) updateFramed(hash, part);
        keys++;
      }
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
    const names = await sortedKeys(conn);
    out[db] = {};
    for (let i = 0; i < names.length; i += KEY_BATCH) {
      const batch = names.slice(i, i + KEY_BATCH);
      const p = conn.pipeline();
      for (const k of batch) p.pttl(k);
      const res = await execOrThrow(p);
      batch.forEach((k, j) => {
        const pttl = res[j] as number;
        if (pttl >= 0) out[db]![k.toString('base64')] = pttl;
      });
    }
  }
  return out;
}

const KEY_BATCH = 500;

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

type Pipeline = ReturnType<Redis['pipeline']>;

async function execOrThrow(p: Pipeline): Promise<unknown[]> {
  const res = (await p.exec()) ?? [];
  return res.map(([err, value]) => {
    if (err) throw err;
    return value;
  });
}

/** Type, TTL and value of each key, in two pipelined round trips; keys gone meanwhile are left out. */
async function describeKeys(conn: Redis, keys: Buffer[], ttlMode: TtlMode): Promise<[Buffer, (string | Buffer)[]][]> {
  const meta = conn.pipeline();
  for (const k of keys) meta.type(k).pttl(k);
  const m = await execOrThrow(meta);
  const values = conn.pipeline();
  const plan: { key: Buffer; type: string; ttl: string; replies: number }[] = [];
  keys.forEach((key, i) => {
    const type = m[2 * i] as string;
    const pttl = m[2 * i + 1] as number;
    if (type === 'none' || pttl === -2) return;
    const ttl = pttl < 0 ? 'no-ttl' : ttlMode === 'presence' ? 'ttl' : `ttl:${Math.round(pttl / 1000)}`;
    let replies = 1;
    if (type === 'string') values.getBuffer(key);
    else if (type === 'hash') values.hgetallBuffer(key);
    else if (type === 'list') values.lrangeBuffer(key, 0, -1);
    else if (type === 'set') values.smembersBuffer(key);
    else if (type === 'zset') values.zrangeBuffer(key, '0', '-1', 'WITHSCORES');
    else if (type === 'stream') {
      values.xrangeBuffer(key, '-', '+').call('XINFO', 'GROUPS', key);
      replies = 2;
    } else values.dumpBuffer(key); // module types: their serialized form
    plan.push({ key, type, ttl, replies });
  });
  const v = await execOrThrow(values);
  const out: [Buffer, (string | Buffer)[]][] = [];
  let at = 0;
  for (const { key, type, ttl, replies } of plan) {
    const reply = v[at];
    at += replies;
    if (reply === null) continue; // deleted between the two round trips
    const parts: (string | Buffer)[] = [type, ttl];
    if (type === 'hash') {
      const flat = reply as Record<string, Buffer>;
      for (const f of Object.keys(flat).sort()) parts.push(f, flat[f]!);
    } else if (type === 'set') parts.push(...(reply as Buffer[]).sort(Buffer.compare));
    else if (type === 'list' || type === 'zset') parts.push(...(reply as Buffer[]));
    else if (type === 'stream') {
      for (const [id, fields] of reply as [Buffer, Buffer[]][]) parts.push(id, ...fields);
      parts.push(JSON.stringify(v[at - 1]));
    } else parts.push(reply as Buffer);
    out.push([key, parts]);
  }
  return out;
}

/** Length-prefixed, so ("ab","c") and ("a","bc") hash differently. */
function updateFramed(hash: Hash, part: string | Buffer): void {
  const buf = typeof part === 'string' ? Buffer.from(part) : part;
  const len = Buffer.alloc(8);
  len.writeBigUInt64BE(BigInt(buf.length));
  hash.update(len);
  hash.update(buf);
}
