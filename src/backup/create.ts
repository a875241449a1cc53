import { existsSync } from 'node:fs';
import { chmod, mkdir, open, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { MgrError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { detectRelease } from '../engine/detect.js';
import type { Progress } from '../engine/types.js';
import { lockBackendFor } from '../locks/index.js';
import type { HeldLock, LockBackend } from '../locks/types.js';
import { enterMaintenance, getMaintenance, leaveMaintenance, MAINTENANCE_KEY } from '../maintenance/index.js';
import type { Stores } from '../stores/index.js';
import { MANAGER_REDIS_DBS } from '../stores/redis.js';
import {
  BUNDLE_FORMAT,
  ETCD_FILE,
  MANIFEST_FILE,
  NdjsonWriter,
  PARTIAL_SUFFIX,
  POSTGRES_FILE,
  bundleName,
  fileDigest,
  mgrVersion,
  redisFile,
  type BackupManifest,
  type BackupPart,
  type BundleFile,
} from './bundle.js';
import { pgChecksums, type TableSum } from './checksums.js';
import { rangeRaw } from './etcd-raw.js';
import { pgDump } from './pg-tools.js';

export const CLEAR_HISTORY_LOCK = 'mgr.clear-history';
export const BACKUP_MAINTENANCE_BY = 'mgr backup';

export type BackupProgress = Progress & { part: BackupPart };

export interface CreateBackupOptions {
  /** The directory the bundle directory is created in (created if missing). */
  outDir: string;
  log?: Logger;
  onProgress?: (p: BackupProgress) => void;
  signal?: AbortSignal;
  /** The caller (an upgrade) already turned maintenance on and turns it off itself. */
  alreadyInMaintenance?: boolean;
  /**
   * Read without turning maintenance on or taking the clear-history lock: writes nothing to the
   * stores. For rehearsals on a copy; not a rollback point (clear-history may run meanwhile).
   */
  live?: boolean;
  /** Where the clear-history lock is taken; default: the installation's (lockBackendFor). */
  locks?: LockBackend;
}

export type CreatedBackup = BackupManifest & {
  /** The bundle directory. */
  path: string;
};

const markerPreview = z.object({ previousManagerStatus: z.string().nullable() });

/**
 * Backs up PostgreSQL, etcd and Redis together into one bundle directory (see bundle.ts), with
 * maintenance on (clear-history refuses) and the clear-history lock held (one already running
 * finishes first), so the three stores describe the same moment as far as mgr's jobs go.
 */
export async function createBackup(stores: Stores, opts: CreateBackupOptions): Promise<CreatedBackup> {
  const log = opts.log ?? silentLogger;
  const signal = opts.signal ?? new AbortController().signal;
  const started = new Date();
  signal.throwIfAborted();

  let maintenance: BackupManifest['consistency']['maintenance'] = 'not-used';
  let leaveMaintenanceAfter = false;
  let lock: HeldLock | undefined;
  try {
    if (!opts.live) {
      const existing = opts.alreadyInMaintenance ? await getMaintenance(stores.etcd) : undefined;
      if (existing) maintenance = 'already-on';
      else {
        if (opts.alreadyInMaintenance) log.warn('alreadyInMaintenance was given but no maintenance marker is set; turning maintenance on for the backup');
        const m = await enterMaintenance(stores.etcd, { reason: 'backup', by: BACKUP_MAINTENANCE_BY });
        leaveMaintenanceAfter = m.created;
        maintenance = m.created ? 'entered' : 'already-on';
      }
      log.info({ maintenance }, 'maintenance mode on for the backup');
      const locks = opts.locks ?? lockBackendFor(stores, undefined, { log });
      lock = await locks.acquire({ name: CLEAR_HISTORY_LOCK, waitMs: 60_000, purpose: 'backup' });
      log.info({ lock: CLEAR_HISTORY_LOCK, backend: locks.kind }, 'clear-history lock held for the backup');
    }
    return await writeBundle(stores, opts, { log, signal, started, maintenance, lockHeld: lock !== undefined });
  } finally {
    if (lock) await lock.release().catch((e) => log.warn({ err: errorMessage(e) }, 'could not release the clear-history lock; it frees when this process ends'));
    if (leaveMaintenanceAfter) {
      await leaveMaintenance(stores.etcd).catch((e) =>
        log.error({ err: errorMessage(e) }, 'could not turn maintenance mode off after the backup; run `mgr maintenance off`'),
      );
    }
  }
}

interface BundleContext {
  log: Logger;
  signal: AbortSignal;
  started: Date;
  maintenance: BackupManifest['consistency']['maintenance'];
  lockHeld: boolean;
}

async function writeBundle(stores: Stores, opts: CreateBackupOptions, ctx: BundleContext): Promise<CreatedBackup> {
  const { log, signal } = ctx;
  const detected = await detectRelease(stores.pg);
  const release =
    detected.kind === 'known'
      ? { name: detected.release?.release ?? `${detected.reached}+${detected.revision}`, detection: 'known' as const, revision: detected.revision, alembicVersion: detected.rows }
      : { name: detected.kind, detection: detected.kind, revision: null, alembicVersion: detected.kind === 'unknown' ? detected.rows : [] };

  const outDir = path.resolve(opts.outDir);
  await mkdir(outDir, { recursive: true });
  let name = bundleName(release.name, ctx.started);
  if (existsSync(path.join(outDir, name)) || existsSync(path.join(outDir, name + PARTIAL_SUFFIX))) name = bundleName(release.name, ctx.started, true);
  const finalDir = path.join(outDir, name);
  const workDir = finalDir + PARTIAL_SUFFIX;
  await mkdir(workDir, { mode: 0o700 });
  await chmod(workDir, 0o700); // mkdir's mode is masked by the umask
  log.info({ bundle: workDir, release: release.name }, 'backup started');

  try {
    const pgPart = await backupPostgres(stores, workDir, opts, signal, log);
    const etcdPart = await backupEtcd(stores, workDir, opts, signal, log);
    const redisPart = await backupRedis(stores, workDir, opts, signal, log);
    const finished = new Date();
    const manifest: BackupManifest = {
      format: BUNDLE_FORMAT,
      name,
      createdAt: ctx.started.toISOString(),
      finishedAt: finished.toISOString(),
      durationMs: finished.getTime() - ctx.started.getTime(),
      mgrVersion: mgrVersion(),
      release,
      source: {
        postgres: { host: stores.config.db.host, port: stores.config.db.port, database: stores.config.db.name, serverVersion: await stores.pg.version() },
        etcd: { endpoint: stores.etcd.endpoint, namespace: stores.etcd.namespace, serverVersion: await stores.etcd.version() },
        redis: { target: stores.redis.describe(), serverVersion: await stores.redis.version() },
      },
      consistency: {
        maintenance: ctx.maintenance,
        clearHistoryLock: ctx.lockHeld ? 'held' : 'not-taken',
        postgres: 'pg_dump and the table checksums read one exported snapshot (REPEATABLE READ)',
        etcd: `every key read at revision ${etcdPart.revision}`,
        redis:
          'SCAN with TYPE, PTTL and DUMP per key (each batch in MULTI): not a point-in-time image; ' +
          (ctx.maintenance === 'not-used' ? 'taken live' : 'the manager schedules nothing during maintenance, but agents may still write stats and heartbeats'),
      },
      postgres: { file: POSTGRES_FILE, tables: pgPart.tables },
      etcd: { file: ETCD_FILE, revision: etcdPart.revision, keys: etcdPart.file.lines ?? 0, maintenanceMarker: etcdPart.marker },
      redis: { dbs: redisPart.map((r) => ({ db: r.db, file: r.file.name, keys: r.file.lines ?? 0 })) },
      files: [pgPart.file, etcdPart.file, ...redisPart.map((r) => r.file)],
    };
    await writeSynced(path.join(workDir, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    await syncDir(workDir);
    await rename(workDir, finalDir);
    await syncDir(outDir);
    log.info({ bundle: finalDir, durationMs: manifest.durationMs, files: manifest.files.length }, 'backup finished');
    return { ...manifest, path: finalDir };
  } catch (e) {
    await rm(workDir, { recursive: true, force: true });
    throw e;
  }
}

async function backupPostgres(
  stores: Stores,
  dir: string,
  opts: CreateBackupOptions,
  signal: AbortSignal,
  log: Logger,
): Promise<{ file: BundleFile; tables: Record<string, TableSum> }> {
  const file = path.join(dir, POSTGRES_FILE);
  await writeSynced(file, ''); // pg_dump keeps the mode of an existing file: 0600
  const report = (p: Progress) => opts.onProgress?.({ part: 'postgres', ...p });
  report({ done: 0, unit: 'steps', total: 2, message: 'pg_dump' });
  const tables = await stores.pg.withClient(async (c) => {
    await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // Stops pg_dump when the checksums fail, and on Ctrl-C.
    const stop = new AbortController();
    const onAbort = () => stop.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      const snapshot = (await c.query<{ s: string }>('SELECT pg_export_snapshot() AS s')).rows[0]!.s;
      const dump = pgDump(stores.config.db, file, { snapshot, signal: stop.signal });
      dump.catch(() => undefined); // awaited below; a failure of the checksums must not leave it unhandled
      let sums: Record<string, TableSum>;
      try {
        sums = await pgChecksums(c);
      } catch (e) {
        stop.abort(e);
        await dump.catch(() => undefined);
        throw e;
      }
      report({ done: 1, unit: 'steps', total: 2, message: `${Object.keys(sums).length} tables checksummed; waiting for pg_dump` });
      await dump;
      await c.query('COMMIT');
      return sums;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  });
  const digest = await fileDigest(file);
  await syncFile(file);
  report({ done: 2, unit: 'steps', total: 2, message: `${Object.keys(tables).length} tables` });
  log.info({ part: 'postgres', bytes: digest.bytes, tables: Object.keys(tables).length }, 'PostgreSQL dumped');
  return { file: { name: POSTGRES_FILE, bytes: digest.bytes, sha256: digest.sha256 }, tables };
}

async function backupEtcd(
  stores: Stores,
  dir: string,
  opts: CreateBackupOptions,
  signal: AbortSignal,
  log: Logger,
): Promise<{ file: BundleFile; revision: string; marker: BackupManifest['etcd']['maintenanceMarker'] }> {
  const etcd = stores.etcd;
  const revision = await etcd.revision();
  const total = await etcd.count('', revision);
  const rootLen = Buffer.byteLength(etcd.root);
  const writer = await NdjsonWriter.create(path.join(dir, ETCD_FILE));
  let marker: BackupManifest['etcd']['maintenanceMarker'] = null;
  let done = 0;
  try {
    for await (const page of rangeRaw(etcd, '', { revision, signal })) {
      for (const kv of page.kvs) {
        const rel = kv.key.subarray(rootLen);
        if (rel.toString() === MAINTENANCE_KEY) marker = readMarker(kv.value.toString());
        await writer.write({ k: rel.toString('base64'), v: kv.value.toString('base64') });
      }
      done += page.kvs.length;
      opts.onProgress?.({ part: 'etcd', done, total, unit: 'keys' });
    }
  } catch (e) {
    await writer.abandon();
    throw e;
  }
  const file = await writer.close();
  log.info({ part: 'etcd', keys: file.lines, revision }, 'etcd dumped');
  return { file, revision, marker };
}

function readMarker(raw: string): BackupManifest['etcd']['maintenanceMarker'] {
  try {
    const m = markerPreview.parse(JSON.parse(raw));
    return { previousManagerStatus: m.previousManagerStatus };
  } catch {
    throw new MgrError('integrity', `the maintenance marker in etcd is unreadable: ${raw.slice(0, 200)}`, {
      hint: 'inspect it with `mgr maintenance status`; a restore needs it to put manager/status back',
    });
  }
}

/** Keys per SCAN batch; each batch is read with one MULTI of TYPE, PTTL and DUMP per key. */
const REDIS_BATCH = 500;

async function backupRedis(
  stores: Stores,
  dir: string,
  opts: CreateBackupOptions,
  signal: AbortSignal,
  log: Logger,
): Promise<{ db: number; file: BundleFile }[]> {
  const out: { db: number; file: BundleFile }[] = [];
  const conns = await Promise.all(MANAGER_REDIS_DBS.map((db) => stores.redis.db(db)));
  const sizes = await Promise.all(conns.map((c) => c.dbsize()));
  const total = sizes.reduce((a, b) => a + b, 0);
  let done = 0;
  for (const [i, db] of MANAGER_REDIS_DBS.entries()) {
    const conn = conns[i]!;
    const writer = await NdjsonWriter.create(path.join(dir, redisFile(db)));
    try {
      let cursor = '0';
      do {
        signal.throwIfAborted();
        const [next, keys] = await conn.scanBuffer(cursor, 'COUNT', REDIS_BATCH);
        cursor = next.toString();
        if (keys.length === 0) continue;
        const tx = conn.multi();
        for (const k of keys) tx.type(k).pttl(k).dumpBuffer(k);
        const res = await tx.exec();
        if (!res) throw new MgrError('storeUnreachable', `Redis DB ${db}: a MULTI batch was aborted`);
        for (const [j, k] of keys.entries()) {
          const [typeErr, type] = res[3 * j]!;
          const [ttlErr, pttl] = res[3 * j + 1]!;
          const [dumpErr, payload] = res[3 * j + 2]!;
          const err = typeErr ?? ttlErr ?? dumpErr;
          if (err) throw new MgrError('storeUnreachable', `Redis DB ${db}: reading key ${JSON.stringify(k.toString())} failed: ${err.message}`, { cause: err });
          if (payload === null || pttl === -2) continue; // expired or deleted since the SCAN
          await writer.write({ k: k.toString('base64'), t: type as string, ttl: pttl as number, d: (payload as Buffer).toString('base64') });
        }
        done += keys.length;
        opts.onProgress?.({ part: 'redis', done, total, unit: 'keys', message: `DB ${db}` });
      } while (cursor !== '0');
    } catch (e) {
      await writer.abandon();
      throw e;
    }
    const file = await writer.close();
    out.push({ db, file });
    log.info({ part: 'redis', db, keys: file.lines }, 'Redis DB dumped');
  }
  return out;
}

async function writeSynced(file: string, text: string): Promise<void> {
  await writeFile(file, text, { mode: 0o600, flag: 'w' });
  await chmod(file, 0o600);
  await syncFile(file);
}

async function syncFile(file: string): Promise<void> {
  const fh = await open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function syncDir(dir: string): Promise<void> {
  if (!(await stat(dir)).isDirectory()) return;
  await syncFile(dir);
}
