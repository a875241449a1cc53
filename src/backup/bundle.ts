import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { open, readFile, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { MgrError } from '../errors.js';
import { parseOrThrow } from '../config/validate.js';

/**
 * The backup bundle format: one directory (0700) of files (0600).
 *
 *   manifest.json      what was backed up, from where, how consistently, and every file's sha256
 *   postgres.dump      pg_dump -Fc of the whole database (schemas public and mgr)
 *   etcd.ndjson        {"k": base64 key relative to /sorna/{ns}/, "v": base64 value} per key
 *   redis-<db>.ndjson  {"k": base64 key, "t": type, "ttl": ms or -1, "d": base64 DUMP payload}
 *
 * The manifest is written last and the directory renamed from `<name>.partial` at the very end,
 * so a directory without `.partial` and with a manifest is a finished backup.
 */

export const BUNDLE_FORMAT = 'mgr-backup/1';
export const BUNDLE_PREFIX = 'mgr-backup-';
export const PARTIAL_SUFFIX = '.partial';
export const MANIFEST_FILE = 'manifest.json';
export const POSTGRES_FILE = 'postgres.dump';
export const ETCD_FILE = 'etcd.ndjson';
export const RESTORE_STATE_FILE = 'restore-state.json';
export const redisFile = (db: number): string => `redis-${db}.ndjson`;

/** Where `mgr backup create` and `mgr backup list` look when no directory is given. */
export const DEFAULT_BACKUP_DIR = 'mgr-backups';

export type BackupPart = 'postgres' | 'etcd' | 'redis';

const fileEntry = z.object({
  name: z.string().regex(/^[\w.-]+$/, 'expected a plain file name'),
  bytes: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, 'expected 64 hex digits'),
  /** Lines of an ndjson file (one per key). */
  lines: z.number().int().nonnegative().optional(),
});
export type BundleFile = z.infer<typeof fileEntry>;

const tableSum = z.object({ rows: z.number().int().nonnegative(), sha256: z.string() });

export const manifestSchema = z.object({
  format: z.literal(BUNDLE_FORMAT),
  name: z.string(),
  createdAt: z.string(),
  finishedAt: z.string(),
  durationMs: z.number(),
  mgrVersion: z.string(),
  release: z.object({
    /** "21.03", "22.03" …; "unknown"/"empty" when alembic_version says nothing mgr knows. */
    name: z.string(),
    detection: z.enum(['known', 'unknown', 'empty']),
    revision: z.string().nullable(),
    /** Rows of alembic_version as found. */
    alembicVersion: z.array(z.string()),
  }),
  /** Where the data came from: hosts, ports, names only (never passwords). */
  source: z.object({
    postgres: z.object({ host: z.string(), port: z.number(), database: z.string(), serverVersion: z.string() }),
    etcd: z.object({ endpoint: z.string(), namespace: z.string(), serverVersion: z.string() }),
    redis: z.object({ target: z.string(), serverVersion: z.string() }),
  }),
  consistency: z.object({
    /** entered: this backup turned maintenance on and off; already-on: the caller held it; not-used: a live read. */
    maintenance: z.enum(['entered', 'already-on', 'not-used']),
    clearHistoryLock: z.enum(['held', 'not-taken']),
    postgres: z.string(),
    etcd: z.string(),
    redis: z.string(),
  }),
  postgres: z.object({ file: z.string(), tables: z.record(z.string(), tableSum) }),
  etcd: z.object({
    file: z.string(),
    revision: z.string(),
    keys: z.number().int().nonnegative(),
    /** The maintenance marker found in the dump (its previousManagerStatus is what a restore puts back). */
    maintenanceMarker: z.object({ previousManagerStatus: z.string().nullable() }).nullable(),
  }),
  redis: z.object({
    dbs: z.array(z.object({ db: z.number().int().nonnegative(), file: z.string(), keys: z.number().int().nonnegative() })),
  }),
  files: z.array(fileEntry),
});
export type BackupManifest = z.infer<typeof manifestSchema>;

/** `mgr-backup-<release>-<UTC yyyymmddThhmmssZ>`; milliseconds only when needed to be unique. */
export function bundleName(release: string, at: Date, withMillis = false): string {
  const iso = at.toISOString(); // 2024-05-01T12:34:56.789Z
  const stamp = iso.slice(0, 19).replace(/[-:]/g, '') + (withMillis ? iso.slice(19, 23).replace('.', '') : '') + 'Z';
  return `${BUNDLE_PREFIX}${release.replace(/[^\w.-]/g, '_')}-${stamp}`;
}

export async function readManifest(dir: string): Promise<BackupManifest> {
  const file = path.join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new MgrError('integrity', `${dir} is not a finished mgr backup: ${MANIFEST_FILE} is missing or unreadable (${(e as Error).message})`, {
      cause: e,
      hint: existsSync(dir + PARTIAL_SUFFIX) || dir.endsWith(PARTIAL_SUFFIX) ? 'this backup did not finish; take a new one' : 'pass the path of a bundle directory (see `mgr backup list`)',
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new MgrError('integrity', `${file} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  try {
    return parseOrThrow(manifestSchema, json, file);
  } catch (e) {
    throw new MgrError('integrity', `${file} is not an ${BUNDLE_FORMAT} manifest: ${(e as Error).message}`, { cause: e });
  }
}

/** One line of etcd.ndjson. */
export const etcdLine = z.object({ k: z.base64(), v: z.base64() });
/** One line of redis-<db>.ndjson. */
export const redisLine = z.object({ k: z.base64(), t: z.string(), ttl: z.number().int().min(-1), d: z.base64() });

/**
 * Appends JSON lines to a new 0600 file, hashing and counting as it goes, honouring the
 * stream's back-pressure through FileHandle writes; close() fsyncs.
 */
export class NdjsonWriter {
  private readonly hash = createHash('sha256');
  private lines = 0;
  private bytes = 0;
  private buffered: string[] = [];
  private bufferedBytes = 0;

  private constructor(
    readonly file: string,
    private readonly fh: FileHandle,
  ) {}

  static async create(file: string): Promise<NdjsonWriter> {
    return new NdjsonWriter(file, await open(file, 'wx', 0o600));
  }

  async write(record: object): Promise<void> {
    const line = JSON.stringify(record) + '\n';
    this.buffered.push(line);
    this.bufferedBytes += line.length;
    this.lines++;
    if (this.bufferedBytes >= 1 << 20) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.buffered.length === 0) return;
    const buf = Buffer.from(this.buffered.join(''));
    this.buffered = [];
    this.bufferedBytes = 0;
    this.hash.update(buf);
    this.bytes += buf.length;
    await this.fh.write(buf);
  }

  async close(): Promise<BundleFile> {
    try {
      await this.flush();
      await this.fh.sync();
    } finally {
      await this.fh.close();
    }
    return { name: path.basename(this.file), bytes: this.bytes, sha256: this.hash.digest('hex'), lines: this.lines };
  }

  /** Closes without a result, for the error path. */
  async abandon(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}

/** Lines of an ndjson file, streamed. */
export async function* readLines(file: string): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  try {
    for await (const line of rl) if (line !== '') yield line;
  } finally {
    rl.close();
  }
}

/** sha256, size and newline count of a file, streamed. */
export async function fileDigest(file: string): Promise<{ bytes: number; sha256: string; lines: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let lines = 0;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
  }
  return { bytes, sha256: hash.digest('hex'), lines };
}

/** mgr's version from its package.json (found by walking up from this module, in src/ or dist/). */
export function mgrVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (dir !== path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      const parsed = JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string; version?: string };
      if (parsed.name === 'mgr' && parsed.version) return parsed.version;
    }
    dir = path.dirname(dir);
  }
  return 'unknown';
}
