import { existsSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { MgrError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Progress } from '../engine/types.js';
import { ETCD_LOCK_PREFIX } from '../locks/index.js';
import { MAINTENANCE_KEY, MANAGER_STATUS_KEY, getMaintenance } from '../maintenance/index.js';
import { MANAGER_REDIS_DBS, type Stores } from '../stores/index.js';
import { prefixEnd } from '../stores/etcd.js';
import {
  RESTORE_STATE_FILE,
  etcdLine,
  readLines,
  redisLine,
  type BackupManifest,
  type BackupPart,
} from './bundle.js';
import { pgChecksums, quoteIdent } from './checksums.js';
import { deleteRangeRaw, putRaw, type RawKV } from './etcd-raw.js';
import { pgRestore, pgRestoreList, schemasInToc } from './pg-tools.js';
import { assertBackupValid } from './verify.js';

/** The order parts are restored in: etcd (config and marker), then PostgreSQL, then Redis. */
export const RESTORE_ORDER: readonly BackupPart[] = ['etcd', 'postgres', 'redis'];

export type RestoreProgress = Progress & { part: BackupPart };

export interface RestoreOptions {
  /** Empty non-empty targets first (drop schemas, delete the namespace, FLUSHDB 0-4). */
  force?: boolean;
  /** Confirmed already (--yes): do not ask. */
  yes?: boolean;
  /** Verify and check the targets, then report what would happen; write nothing. */
  dryRun?: boolean;
  /** Asked once, before anything is written, when `yes` is not set; without it the restore is refused. */
  confirm?: (question: string) => Promise<boolean>;
  /** Restore PostgreSQL objects as the connecting user (a sandbox without production's roles). */
  noOwner?: boolean;
  /** Where the progress record goes (default: restore-state.json in the bundle directory). */
  statePath?: string;
  log?: Logger;
  onProgress?: (p: RestoreProgress) => void;
  signal?: AbortSignal;
}

export type PartStatus = 'restored' | 'done-before' | 'planned';

export interface RestoreReport {
  bundle: string;
  release: string;
  createdAt: string;
  /** Where it went: hosts, ports and names (no passwords). */
  target: Record<BackupPart, string>;
  dryRun: boolean;
  /** A restore interrupted earlier was continued. */
  resumed: boolean;
  /** What the targets held before (relations, keys, keys). */
  before: Record<BackupPart, number>;
  parts: { part: BackupPart; status: PartStatus; durationMs: number; count: number }[];
  /** What was checked after writing. */
  checks: string[];
  warnings: string[];
  durationMs: number;
}

const PART_STATES = ['pending', 'running', 'done', 'failed'] as const;
const restoreStateSchema = z.object({
  /** Which backup: its manifest name and time. */
  bundle: z.string(),
  /** Which stores: hosts, ports, names. */
  target: z.string(),
  status: z.enum(['running', 'completed', 'failed']),
  startedAt: z.string(),
  updatedAt: z.string(),
  parts: z.object({ etcd: z.enum(PART_STATES), postgres: z.enum(PART_STATES), redis: z.enum(PART_STATES) }),
  error: z.string().optional(),
});
export type RestoreState = z.infer<typeof restoreStateSchema>;

/**
 * Restores a bundle into the configured stores: all three or, when one part fails, a state file
 * in the bundle that says which parts were written, so the same command finishes the job.
 * Verifies the bundle first (exit 9 when it is damaged) and refuses non-empty targets unless
 * `force` (exit 5). mgr's own transient etcd keys (maintenance marker, locks) are not restored:
 * manager/status gets the value it had before the backup's maintenance began.
 */
export async function restoreBackup(stores: Stores, dir: string, opts: RestoreOptions = {}): Promise<RestoreReport> {
  const started = Date.now();
  const log = opts.log ?? silentLogger;
  const signal = opts.signal ?? new AbortController().signal;
  const manifest = await assertBackupValid(dir);
  const target = describeTarget(stores);
  const bundleId = `${manifest.name} ${manifest.createdAt}`;
  const targetId = `postgres ${target.postgres}; etcd ${target.etcd}; redis ${target.redis}`;

  const stateFile = opts.statePath ?? path.join(dir, RESTORE_STATE_FILE);
  const previous = await readState(stateFile, log);
  const resumed = previous !== undefined && previous.bundle === bundleId && previous.target === targetId && previous.status !== 'completed';
  const before = await targetOccupancy(stores);
  const occupied = RESTORE_ORDER.filter((p) => before[p] > 0);
  if (!resumed && occupied.length && !opts.force) {
    throw new MgrError(
      'refused',
      `refusing to restore into non-empty stores: ${occupied.map((p) => `${p} (${target[p]}) holds ${before[p]} ${p === 'postgres' ? 'relations' : 'keys'}`).join('; ')}`,
      { hint: 'pass --force to delete what is there first (drop schemas, delete the etcd namespace, FLUSHDB 0-4)', details: { before } },
    );
  }
  const done = new Set(resumed ? RESTORE_ORDER.filter((p) => previous.parts[p] === 'done') : []);
  const report: RestoreReport = {
    bundle: dir,
    release: manifest.release.name,
    createdAt: manifest.createdAt,
    target,
    dryRun: Boolean(opts.dryRun),
    resumed,
    before,
    parts: RESTORE_ORDER.map((part) => ({ part, status: done.has(part) ? 'done-before' : 'planned', durationMs: 0, count: 0 })),
    checks: [],
    warnings: [],
    durationMs: 0,
  };
  if (opts.dryRun) {
    report.durationMs = Date.now() - started;
    return report;
  }
  if (!opts.yes) {
    const question =
      `restore backup ${manifest.name} (release ${manifest.release.name}, taken ${manifest.createdAt}) into ` +
      `postgres ${target.postgres}, etcd ${target.etcd}, redis ${target.redis}?` +
      (occupied.length || resumed ? ` What they hold now is deleted first (${occupied.join(', ') || 'the parts not yet restored'}).` : '');
    if (!opts.confirm) throw new MgrError('usage', 'refusing to restore without confirmation: pass --yes when stdin is not a terminal');
    if (!(await opts.confirm(question))) throw new MgrError('usage', 'restore cancelled');
  }

  const state: RestoreState = resumed
    ? { ...previous, status: 'running', updatedAt: new Date().toISOString() }
    : {
        bundle: bundleId,
        target: targetId,
        status: 'running',
        startedAt: new Date().toISOString(),
        updatedAt: new Date().toISOString(),
        parts: { etcd: 'pending', postgres: 'pending', redis: 'pending' },
      };
  await writeState(stateFile, state);
  log.info({ bundle: dir, target, resumed, skip: [...done] }, 'restore started');

  for (const [i, part] of RESTORE_ORDER.entries()) {
    if (done.has(part)) continue;
    const t0 = Date.now();
    state.parts[part] = 'running';
    await writeState(stateFile, state);
    try {
      signal.throwIfAborted();
      const count =
        part === 'etcd'
          ? await restoreEtcd(stores, dir, manifest, report, opts, signal)
          : part === 'postgres'
            ? await restorePostgres(stores, dir, manifest, report, opts, signal)
            : await restoreRedis(stores, dir, manifest, report, opts, signal);
      state.parts[part] = 'done';
      await writeState(stateFile, state);
      report.parts[i] = { part, status: 'restored', durationMs: Date.now() - t0, count };
      log.info({ part, count, durationMs: Date.now() - t0 }, 'part restored');
    } catch (e) {
      state.parts[part] = 'failed';
      state.status = 'failed';
      state.error = `${part}: ${errorMessage(e)}`;
      await writeState(stateFile, state).catch(() => undefined);
      throw partialFailure(dir, stateFile, part, state, e);
    }
  }
  state.status = 'completed';
  delete state.error;
  await writeState(stateFile, state);
  report.durationMs = Date.now() - started;
  log.info({ bundle: dir, durationMs: report.durationMs }, 'restore finished');
  return report;
}

function partialFailure(dir: string, stateFile: string, part: BackupPart, state: RestoreState, cause: unknown): MgrError {
  const written = RESTORE_ORDER.filter((p) => state.parts[p] === 'done');
  const notWritten = RESTORE_ORDER.filter((p) => state.parts[p] !== 'done');
  const interrupted = cause instanceof MgrError ? cause.code === 'interrupted' : (cause as Error)?.name === 'AbortError';
  return new MgrError(
    interrupted ? 'interrupted' : 'partial',
    `restore stopped in the ${part} part: ${errorMessage(cause)}; restored: ${written.join(', ') || 'nothing'}; not restored: ${notWritten.join(', ')}`,
    {
      cause,
      hint: `fix the cause and run the same restore again (mgr backup restore ${dir} --yes): it keeps the parts already restored and redoes ${notWritten.join(', ')} (recorded in ${stateFile})`,
      details: { restored: written, notRestored: notWritten, failedPart: part },
    },
  );
}

export function describeTarget(stores: Stores): Record<BackupPart, string> {
  const db = stores.config.db;
  return {
    postgres: `${db.host}:${db.port}/${db.name}`,
    etcd: `${stores.etcd.endpoint} namespace ${stores.etcd.namespace}`,
    redis: `${stores.redis.describe()} DBs 0-4`,
  };
}

async function readState(file: string, log: Logger): Promise<RestoreState | undefined> {
  if (!existsSync(file)) return undefined;
  try {
    return restoreStateSchema.parse(JSON.parse(await readFile(file, 'utf8')));
  } catch (e) {
    log.warn({ file, err: errorMessage(e) }, 'ignoring an unreadable restore state file');
    return undefined;
  }
}

async function writeState(file: string, state: RestoreState): Promise<void> {
  state.updatedAt = new Date().toISOString();
  try {
    await writeFile(file + '.tmp', JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
    await rename(file + '.tmp', file);
  } catch (e) {
    throw new MgrError('refused', `cannot record restore progress in ${file}: ${errorMessage(e)}`, {
      cause: e,
      hint: 'the bundle directory must be writable (copy the bundle somewhere writable and restore from there)',
    });
  }
}

/** Where etcd tells mgr (and the manager) how to reach Redis. */
const REDIS_CONFIG_PREFIX = 'config/redis/';

/** Keys mgr holds for a running process, never data: not restored, and kept when a namespace is emptied. */
function isTransientKey(rel: string): boolean {
  return rel === MAINTENANCE_KEY || rel.startsWith(ETCD_LOCK_PREFIX);
}

/** What the targets hold: relations outside the system schemas, etcd keys, Redis keys in DBs 0-4. */
export async function targetOccupancy(stores: Stores): Promise<Record<BackupPart, number>> {
  const relations = await stores.pg.withClient(async (c) => {
    const r = await c.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')`,
    );
    return r.rows[0]!.n;
  });
  // The Redis address must be in etcd for mgr to reach Redis at all, and mgr's own transient
  // keys (with manager/status frozen under maintenance) belong to whoever runs now: none of
  // these make a target "non-empty".
  const etcd = stores.etcd;
  const hasMarker = (await etcd.get(MAINTENANCE_KEY)) !== null;
  const frozen = hasMarker && (await etcd.get(MANAGER_STATUS_KEY)) === 'frozen';
  const etcdKeys =
    (await etcd.count('')) - (await etcd.count(REDIS_CONFIG_PREFIX)) - (await etcd.count(ETCD_LOCK_PREFIX)) - (hasMarker ? 1 : 0) - (frozen ? 1 : 0);
  let redisKeys = 0;
  for (const db of MANAGER_REDIS_DBS) redisKeys += await (await stores.redis.db(db)).dbsize();
  return { postgres: relations, etcd: etcdKeys, redis: redisKeys };
}

/** The records of an ndjson file, each checked against its schema (a verified bundle still gets a clear message). */
async function* readRecords<S extends z.ZodType>(file: string, schema: S): AsyncGenerator<z.output<S>> {
  let n = 0;
  for await (const line of readLines(file)) {
    n++;
    let parsed: z.ZodSafeParseResult<z.output<S>>;
    try {
      parsed = schema.safeParse(JSON.parse(line));
    } catch (e) {
      throw new MgrError('integrity', `${file} line ${n}: not JSON: ${errorMessage(e)}`);
    }
    if (!parsed.success) throw new MgrError('integrity', `${file} line ${n}: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    yield parsed.data;
  }
}

const ETCD_BATCH = 1_000;

async function restoreEtcd(
  stores: Stores,
  dir: string,
  manifest: BackupManifest,
  report: RestoreReport,
  opts: RestoreOptions,
  signal: AbortSignal,
): Promise<number> {
  const etcd = stores.etcd;
  const root = Buffer.from(etcd.root);
  const liveMarker = await getMaintenance(etcd);
  const redisAddrBefore = await etcd.get(`${REDIS_CONFIG_PREFIX}addr`);

  // Empty the namespace except mgr's transient keys and the Redis address: without it in etcd a
  // rerun after a crash in this part could not reach Redis. The backup's values replace it.
  const kept: [Buffer, Buffer][] = [ETCD_LOCK_PREFIX, MAINTENANCE_KEY, REDIS_CONFIG_PREFIX]
    .map((k): [Buffer, Buffer] => [Buffer.from(etcd.abs(k)), k.endsWith('/') ? prefixEnd(etcd.abs(k)) : Buffer.from(etcd.abs(k) + '\0')])
    .sort((a, b) => Buffer.compare(a[0], b[0]));
  let from: Buffer = root;
  for (const [start, end] of kept) {
    if (Buffer.compare(from, start) < 0) await deleteRangeRaw(etcd, from, start);
    from = end;
  }
  await deleteRangeRaw(etcd, from, prefixEnd(etcd.root));
  const redisKeysBefore = (await etcd.getFlat(REDIS_CONFIG_PREFIX)).map((kv) => kv.key);
  const redisKeysInBackup = new Set<string>();

  let dumpedStatus: string | null = null;
  let written = 0;
  let skipped = 0;
  let seen = 0;
  let batch: RawKV[] = [];
  for await (const kv of readRecords(path.join(dir, manifest.etcd.file), etcdLine)) {
    const rel = Buffer.from(kv.k, 'base64');
    const relText = rel.toString();
    seen++;
    if (isTransientKey(relText)) {
      skipped++;
      continue;
    }
    const value = Buffer.from(kv.v, 'base64');
    if (relText === MANAGER_STATUS_KEY) {
      dumpedStatus = value.toString();
      continue;
    }
    if (relText.startsWith(REDIS_CONFIG_PREFIX)) redisKeysInBackup.add(relText);
    batch.push({ key: Buffer.concat([root, rel]), value });
    if (batch.length >= ETCD_BATCH) {
      signal.throwIfAborted();
      await putRaw(etcd, batch);
      written += batch.length;
      batch = [];
      opts.onProgress?.({ part: 'etcd', done: seen, total: manifest.etcd.keys, unit: 'keys' });
    }
  }
  await putRaw(etcd, batch);
  written += batch.length;
  for (const key of redisKeysBefore) if (!redisKeysInBackup.has(key)) await etcd.delete(key);

  // manager/status as it was before the backup's maintenance began; if someone holds maintenance
  // on the target now (a rollback), it stays frozen and their marker puts this value back.
  const status = manifest.etcd.maintenanceMarker ? manifest.etcd.maintenanceMarker.previousManagerStatus : dumpedStatus;
  if (liveMarker) {
    await etcd.put(MANAGER_STATUS_KEY, 'frozen');
    const raw = JSON.parse((await etcd.get(MAINTENANCE_KEY)) ?? '{}') as Record<string, unknown>;
    await etcd.put(MAINTENANCE_KEY, JSON.stringify({ ...raw, previousManagerStatus: status }));
    report.checks.push(`etcd: maintenance (${liveMarker.reason}, by ${liveMarker.by}) kept on; manager/status ${JSON.stringify(status)} is put back when it ends`);
  } else if (status !== null) {
    await etcd.put(MANAGER_STATUS_KEY, status);
    written++;
  }
  opts.onProgress?.({ part: 'etcd', done: manifest.etcd.keys, total: manifest.etcd.keys, unit: 'keys' });

  // The live marker and its frozen manager/status are the only keys besides locks not written here.
  const present = (await etcd.count('')) - (await etcd.count(ETCD_LOCK_PREFIX)) - (liveMarker ? 2 : 0);
  if (present !== written) {
    throw new MgrError('integrity', `etcd holds ${present} keys after the restore, expected ${written}`);
  }
  report.checks.push(`etcd: ${written} keys written and present; ${skipped} transient mgr keys of the backup (maintenance marker, locks) not restored`);
  const redisAddrAfter = await etcd.get(`${REDIS_CONFIG_PREFIX}addr`);
  if (redisAddrBefore !== null && redisAddrAfter !== redisAddrBefore) {
    report.warnings.push(
      `etcd config/redis/addr is now ${JSON.stringify(redisAddrAfter)} (from the backup); it was ${JSON.stringify(redisAddrBefore)}, where this restore writes the Redis data — fix config/redis if the Redis server moved`,
    );
  }
  return written;
}

async function restorePostgres(
  stores: Stores,
  dir: string,
  manifest: BackupManifest,
  report: RestoreReport,
  opts: RestoreOptions,
  signal: AbortSignal,
): Promise<number> {
  const file = path.join(dir, manifest.postgres.file);
  const dumpSchemas = schemasInToc(await pgRestoreList(file));
  opts.onProgress?.({ part: 'postgres', done: 0, total: 2, unit: 'steps', message: 'dropping schemas' });
  await stores.pg.withTransaction(async (c) => {
    await c.query(`SET LOCAL lock_timeout = '60s'`);
    const existing = await c.query<{ nspname: string }>('SELECT nspname FROM pg_namespace WHERE nspname = ANY($1)', [
      [...new Set(['public', 'mgr', ...dumpSchemas])],
    ]);
    for (const { nspname } of existing.rows) await c.query(`DROP SCHEMA ${quoteIdent(nspname)} CASCADE`);
    // public as initdb makes it (PostgreSQL 15: owned by pg_database_owner, USAGE for everyone);
    // pg_dump does not create it.
    const v = Number((await c.query<{ v: string }>('SHOW server_version_num')).rows[0]!.v);
    if (v >= 150000) {
      await c.query('CREATE SCHEMA public AUTHORIZATION pg_database_owner');
      await c.query('GRANT USAGE ON SCHEMA public TO PUBLIC');
    } else {
      await c.query('CREATE SCHEMA public');
      await c.query('GRANT ALL ON SCHEMA public TO PUBLIC');
    }
    await c.query(`COMMENT ON SCHEMA public IS 'standard public schema'`);
  });
  opts.onProgress?.({ part: 'postgres', done: 1, total: 2, unit: 'steps', message: 'pg_restore' });
  await pgRestore(stores.config.db, file, { noOwner: opts.noOwner, signal });
  opts.onProgress?.({ part: 'postgres', done: 2, total: 2, unit: 'steps' });

  const restored = await stores.pg.withClient((c) => pgChecksums(c));
  const expected = manifest.postgres.tables;
  const mismatched = [...new Set([...Object.keys(expected), ...Object.keys(restored)])].filter(
    (t) => expected[t]?.rows !== restored[t]?.rows || expected[t]?.sha256 !== restored[t]?.sha256,
  );
  if (mismatched.length) {
    throw new MgrError('integrity', `PostgreSQL after pg_restore differs from the backup in: ${mismatched.map((t) => `${t} (${restored[t]?.rows ?? 'missing'} rows, backup ${expected[t]?.rows ?? 'none'})`).join(', ')}`);
  }
  const rows = Object.values(restored).reduce((a, t) => a + t.rows, 0);
  report.checks.push(`postgres: ${Object.keys(restored).length} tables, ${rows} rows, every table's sha256 equal to the backup's`);
  return rows;
}

const REDIS_BATCH = 500;

async function restoreRedis(
  stores: Stores,
  dir: string,
  manifest: BackupManifest,
  report: RestoreReport,
  opts: RestoreOptions,
  signal: AbortSignal,
): Promise<number> {
  const total = manifest.redis.dbs.reduce((a, d) => a + d.keys, 0);
  let done = 0;
  let written = 0;
  for (const { db, file, keys } of manifest.redis.dbs) {
    const conn = await stores.redis.db(db);
    await conn.flushdb();
    let pipeline = conn.pipeline();
    let queued = 0;
    const flush = async () => {
      if (queued === 0) return;
      signal.throwIfAborted();
      const res = (await pipeline.exec()) ?? [];
      const failed = res.find(([err]) => err);
      if (failed) throw new MgrError('storeUnreachable', `Redis DB ${db}: RESTORE failed: ${failed[0]!.message}`, { cause: failed[0] });
      done += queued;
      written += queued;
      queued = 0;
      pipeline = conn.pipeline();
      opts.onProgress?.({ part: 'redis', done, total, unit: 'keys', message: `DB ${db}` });
    };
    for await (const r of readRecords(path.join(dir, file), redisLine)) {
      // RESTORE's ttl is relative: keys live as long as they had left when the backup was taken.
      pipeline.restore(Buffer.from(r.k, 'base64'), r.ttl < 0 ? 0 : r.ttl, Buffer.from(r.d, 'base64'), 'REPLACE');
      if (++queued >= REDIS_BATCH) await flush();
    }
    await flush();
    const size = await conn.dbsize();
    if (size < keys) report.warnings.push(`Redis DB ${db}: ${size} keys after the restore, ${keys} in the backup (keys with a short TTL expired meanwhile)`);
  }
  report.checks.push(`redis: ${written} keys restored into DBs ${manifest.redis.dbs.map((d) => d.db).join(', ')}`);
  return written;
}
