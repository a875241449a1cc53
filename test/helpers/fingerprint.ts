import { createHash } from 'node:crypto';
import type { Stores } from '../../src/stores/index.js';
import { MANAGER_REDIS_DBS } from '../../src/stores/redis.js';

/**
 * What an installation holds, minus what legitimately differs between two equal upgrades:
 * generated ids and creation times of image rows (aliases are compared by the image name they
 * point at), and mgr's own bookkeeping (schema mgr, etcd mgr/). Two runs that end in the same
 * state have equal fingerprints; a lost or duplicated row, key or value changes them.
 */
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
  const kvs = (await stores.etcd.getFlat('')).filter((kv) => !kv.key.startsWith('mgr/'));
  const etcd = { keys: kvs.length, sha256: sha(kvs.map((kv) => `${kv.key}=${kv.value}`)) };
  const redis: Fingerprint['redis'] = {};
  for (const db of MANAGER_REDIS_DBS) {
    const r = await stores.redis.db(db);
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await r.scan(cursor, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
    keys.sort();
    const lines: string[] = [];
    for (const k of keys) {
      const dump = await r.dumpBuffer(k);
      lines.push(`${k}=${dump ? createHash('sha256').update(dump).digest('hex') : 'gone'}`);
    }
    redis[`db${db}`] = { keys: keys.length, sha256: sha(lines) };
  }
  return { postgres, etcd, redis };
}
