import { createHash } from 'node:crypto';
import type { Stores } from '../../src/stores/index.js';
import { redisChecksums } from '../../src/backup/checksums.js';

/**
 * What an installation holds, minus what legitimately differs between two equal upgrades:
 * generated ids and creation times of image rows (aliases are compared by the image name they
 * point at), and mgr's own bookkeeping (schema mgr, etcd mgr/). Two runs that end in the same
 * state have equal fingerprints; a lost or duplicated row, key or value changes them.
 * `config/redis/addr` is left out too: it is the loopback port of each sandbox's own Redis.
 */
const PER_SANDBOX_KEYS = new Set(['config/redis/addr']);
export interface Fingerprint {
  postgres: Record<string, { rows: number; sha256: string }>;
  etcd: { keys: number; sha256: string };
  redis: Record<string, { keys: number; sha256: string }>;
}

const sha = (lines: string[]) => createHash('sha256').update(lines.join('\n')).digest('hex');

export async function fingerprint(stores: Stores): Promise<Fingerprint> {
  const postgres = await stores.pg.withClient(async (c) => {
    const tables = (
      await c.query<{ t: string }>(`SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1`)
    ).rows.map((r) => r.t);
    const out: Fingerprint['postgres'] = {};
    for (const t of tables) {
      let q = `SELECT to_jsonb(x) AS j FROM public."${t}" x`;
      if (t === 'images') q = `SELECT to_jsonb(x) - 'id' - 'created_at' AS j FROM public.images x`;
      if (t === 'image_aliases') q = `SELECT jsonb_build_object('alias', a.alias, 'image', i.name, 'arch', i.architecture) AS j FROM image_aliases a JOIN images i ON i.id = a.image`;
      const rows = (await c.query<{ j: unknown }>(q)).rows.map((r) => JSON.stringify(r.j)).sort();
      out[t] = { rows: rows.length, sha256: sha(rows) };
    }
    return out;
  });
  const kvs = (await stores.etcd.getFlat('')).filter((kv) => !kv.key.startsWith('mgr/') && !PER_SANDBOX_KEYS.has(kv.key));
  const etcd = { keys: kvs.length, sha256: sha(kvs.map((kv) => `${kv.key}=${kv.value}`)) };
  // Type-aware and order-free (a set's DUMP depends on the server's hash seed); TTLs by presence.
  const sums = await redisChecksums(stores.redis, { ttl: 'presence' });
  const redis = Object.fromEntries(Object.entries(sums).map(([db, v]) => [`db${db}`, v]));
  return { postgres, etcd, redis };
}
