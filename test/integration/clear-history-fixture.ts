import { createHash, randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { REDIS_DB, type Stores } from '../../src/stores/index.js';

/**
 * Data for the clear-history tests: a seeded 21.03 installation (kernels terminated over the past
 * year, stat keys for every kernel) plus edge cases the seed does not make: kernels exactly at and
 * 1 µs around the cutoff, NULL terminated_at in every status (older than the cutoff by created_at),
 * a run of equal terminated_at across batch boundaries, doomed kernels without stat keys, dependent
 * rows linking doomed and kept kernels, and a Redis key that looks like a kernel's but has no row.
 * Expectations are computed here, in JS, from what the stores held before the run.
 */

export const RETENTION = '90d';
export const RETENTION_MS = 90 * 86_400_000;
/** Kernels with equal terminated_at, so keyset batches must break ties by id. */
export const TIE_RUN = 25;

export interface KernelRow {
  terminatedAt: string | null;
  status: string;
}

export interface HistoryState {
  kernels: Map<string, KernelRow>;
  /** Persistent keys of Redis DB 0 (agent keys with a TTL are left out: they expire on their own). */
  statKeys: Set<string>;
  sessionDependencies: [string, string][];
  vfolderAttachments: [string, string][];
}

export interface Expected {
  doomed: Set<string>;
  kept: Set<string>;
  redisKeysDeleted: number;
  dependentRows: { session_dependencies: number; vfolder_attachment: number };
  after: HistoryState;
}

/** The µs UTC form PostgreSQL's to_char gives below; string order is time order. */
export function iso6(d: Date): string {
  return d.toISOString().replace('Z', '000Z');
}

function shift(iso: string, ms: number): string {
  return iso6(new Date(new Date(iso.replace(/(\.\d{3})\d{3}Z$/, '$1Z')).getTime() + ms));
}

export interface SeededHistory {
  cutoff: string;
  /** Orphan: looks like a kernel's stat key, has no kernel row; must survive every run. */
  orphanKey: string;
  /** The edge-case kernels by role (atCutoff, justBefore, justAfter, nullRunning, …). */
  edge: Record<string, string>;
  /** Kernels sharing one terminated_at, before the cutoff. */
  ties: string[];
  before: HistoryState;
  expected: Expected;
}

/**
 * Reseeds the stores from scratch. `boundary`: add kernels at cutoff − 1 µs, cutoff, cutoff + 1 µs
 * (only for runs given the same `now`); otherwise no kernel lies within `gapMs` of the cutoff, so
 * a CLI started a little later computes a cutoff that splits the data the same way.
 */
export async function seedHistory(
  stores: Stores,
  opts: { now: Date; kernels: number; boundary: boolean; gapMs?: number },
): Promise<SeededHistory> {
  await seedInstallation(stores, { reset: true, kernels: opts.kernels, statKeysFor: 'all', images: 10, keypairs: 8, agents: 3, now: opts.now });
  const cutoff = iso6(new Date(opts.now.getTime() - RETENTION_MS));
  const gap = opts.gapMs ?? 3_600_000;
  const stat = await stores.redis.db(REDIS_DB.stat);

  const edge: Record<string, string> = {};
  const ties: string[] = [];
  await stores.pg.withClient(async (c) => {
    if (!opts.boundary) {
      await c.query(
        `UPDATE kernels SET terminated_at = terminated_at - make_interval(secs => $2::float8 / 500)
          WHERE terminated_at BETWEEN $1::timestamptz - make_interval(secs => $2::float8 / 1000) AND $1::timestamptz + make_interval(secs => $2::float8 / 1000)`,
        [cutoff, gap],
      );
    }
    const template = (await c.query<{ id: string }>(`SELECT id::text AS id FROM kernels WHERE cluster_role = 'main' ORDER BY id LIMIT 1`)).rows[0]!.id;
    const old = iso6(new Date(opts.now.getTime() - 2 * 365 * 86_400_000));
    const add = async (terminatedAt: string | null, status: string, createdAt = terminatedAt ?? old): Promise<string> => {
      const id = randomUUID();
      // Clone a seeded row with the fields that matter replaced: works for any schema version.
      await c.query(
        `INSERT INTO kernels SELECT (jsonb_populate_record(NULL::kernels, to_jsonb(k) || $2::jsonb)).* FROM kernels k WHERE id = $1::uuid`,
        [template, JSON.stringify({ id, session_id: id, session_name: null, terminated_at: terminatedAt, status, created_at: createdAt, status_changed: createdAt })],
      );
      return id;
    };
    if (opts.boundary) {
      edge.atCutoff = await add(cutoff, 'TERMINATED');
      edge.justBefore = await add(microShift(cutoff, -1), 'TERMINATED');
      edge.justAfter = await add(microShift(cutoff, 1), 'TERMINATED');
    }
    edge.nullRunning = await add(null, 'RUNNING');
    edge.nullTerminated = await add(null, 'TERMINATED');
    edge.nullCancelled = await add(null, 'CANCELLED');
    edge.nullPending = await add(null, 'PENDING');
    edge.oldButRunning = await add(shift(cutoff, -30 * 86_400_000), 'RUNNING');
    edge.keptRecent = await add(shift(cutoff, 5 * 86_400_000), 'TERMINATED');
    const tieAt = shift(cutoff, -10 * 86_400_000);
    for (let i = 0; i < TIE_RUN; i++) ties.push(await add(tieAt, i % 5 === 0 ? 'CANCELLED' : i % 7 === 0 ? 'ERROR' : 'TERMINATED'));

    const vfolder = (await c.query<{ id: string }>('SELECT id::text AS id FROM vfolders ORDER BY id LIMIT 1')).rows[0]!.id;
    const deps: [string, string][] = [
      [edge.oldButRunning, edge.nullRunning], // doomed → kept
      [edge.nullRunning, ties[0]!], // kept → doomed
      [ties[1]!, ties[2]!], // doomed → doomed: one row, counted once
      [edge.nullTerminated, edge.keptRecent], // kept → kept
    ];
    for (const [a, b] of deps) await c.query('INSERT INTO session_dependencies VALUES ($1::uuid, $2::uuid) ON CONFLICT DO NOTHING', [a, b]);
    for (const k of [edge.oldButRunning, ties[3]!, ties[4]!, edge.nullRunning, edge.keptRecent]) {
      await c.query('INSERT INTO vfolder_attachment VALUES ($1::uuid, $2::uuid) ON CONFLICT DO NOTHING', [vfolder, k]);
    }
    const withKeys = [...Object.values(edge), ...ties].filter((id) => id !== edge.nullPending && !ties.slice(5, 8).includes(id));
    for (const id of withKeys) await stat.set(id, Buffer.from([0x80])); // an empty msgpack map, as an agent with no metrics yet
  });
  const orphanKey = randomUUID();
  await stat.set(orphanKey, Buffer.from([0x80]));
  const before = await readState(stores);
  return { cutoff, orphanKey, edge, ties, before, expected: expectedAfter(before, cutoff) };
}

/** ±1 µs on a "….mmm000Z" string (whole milliseconds, as every cutoff is). */
function microShift(iso: string, delta: 1 | -1): string {
  const m = /^(.*\.)(\d{3})(\d{3})Z$/.exec(iso)!;
  if (delta === 1) return `${m[1]}${m[2]}${String(Number(m[3]) + 1).padStart(3, '0')}Z`;
  const ms = new Date(`${m[1]}${m[2]}Z`).getTime() - 1;
  return iso6(new Date(ms)).replace(/000Z$/, '999Z');
}

export async function readState(stores: Stores): Promise<HistoryState> {
  const kernels = new Map<string, KernelRow>();
  const r = await stores.pg.pool.query<{ id: string; t: string | null; status: string }>(
    `SELECT id::text AS id, to_char(terminated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t, status::text AS status FROM kernels`,
  );
  for (const row of r.rows) kernels.set(row.id, { terminatedAt: row.t, status: row.status });
  const sd = await stores.pg.pool.query<{ a: string; b: string }>('SELECT session_id::text AS a, depends_on::text AS b FROM session_dependencies ORDER BY 1, 2');
  const va = await stores.pg.pool.query<{ a: string; b: string }>('SELECT vfolder::text AS a, kernel::text AS b FROM vfolder_attachment ORDER BY 1, 2');
  return {
    kernels,
    statKeys: await persistentKeys(stores),
    sessionDependencies: sd.rows.map((x) => [x.a, x.b]),
    vfolderAttachments: va.rows.map((x) => [x.a, x.b]),
  };
}

async function persistentKeys(stores: Stores): Promise<Set<string>> {
  const stat = await stores.redis.db(REDIS_DB.stat);
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await stat.scan(cursor, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const ttls = await Promise.all(keys.map((k) => stat.pttl(k)));
  return new Set(keys.filter((_, i) => ttls[i] === -1));
}

export function expectedAfter(before: HistoryState, cutoff: string): Expected {
  const doomed = new Set<string>();
  const kept = new Set<string>();
  for (const [id, k] of before.kernels) (k.terminatedAt !== null && k.terminatedAt < cutoff ? doomed : kept).add(id);
  const sdAfter = before.sessionDependencies.filter(([a, b]) => !doomed.has(a) && !doomed.has(b));
  const vaAfter = before.vfolderAttachments.filter(([, k]) => !doomed.has(k));
  return {
    doomed,
    kept,
    redisKeysDeleted: [...doomed].filter((id) => before.statKeys.has(id)).length,
    dependentRows: {
      session_dependencies: before.sessionDependencies.length - sdAfter.length,
      vfolder_attachment: before.vfolderAttachments.length - vaAfter.length,
    },
    after: {
      kernels: new Map([...before.kernels].filter(([id]) => kept.has(id))),
      statKeys: new Set([...before.statKeys].filter((k) => !doomed.has(k))),
      sessionDependencies: sdAfter,
      vfolderAttachments: vaAfter,
    },
  };
}

/** The stores hold exactly what `expected.after` says: rows, dependent rows and persistent stat keys. */
export async function expectStoresMatch(stores: Stores, expected: Expected): Promise<void> {
  const now = await readState(stores);
  expect([...now.kernels.keys()].sort()).toEqual([...expected.after.kernels.keys()].sort());
  expect(now.sessionDependencies).toEqual(expected.after.sessionDependencies);
  expect(now.vfolderAttachments).toEqual(expected.after.vfolderAttachments);
  expect([...now.statKeys].sort()).toEqual([...expected.after.statKeys].sort());
}

/** Checksums of the three tables and of the persistent Redis DB 0 keyspace (keys and values). */
export async function checksums(stores: Stores): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const t of ['kernels', 'session_dependencies', 'vfolder_attachment']) {
    const r = await stores.pg.pool.query<{ h: string }>(`SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS h FROM ${t} t`);
    out[t] = r.rows[0]!.h;
  }
  const stat = await stores.redis.db(REDIS_DB.stat);
  const h = createHash('sha256');
  for (const k of [...(await persistentKeys(stores))].sort()) {
    h.update(k).update('\0').update((await stat.dumpBuffer(k)) ?? Buffer.alloc(0)).update('\0');
  }
  out.redis = h.digest('hex');
  return out;
}
