import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NdjsonWriter, bundleName, fileDigest, manifestSchema, readManifest, type BackupManifest } from '../../src/backup/bundle.js';
import { schemasInToc } from '../../src/backup/pg-tools.js';
import { MgrError } from '../../src/errors.js';

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

const manifest: BackupManifest = {
  format: 'mgr-backup/1',
  name: 'mgr-backup-21.03-20240501T123456Z',
  createdAt: '2024-05-01T12:34:56.789Z',
  finishedAt: '2024-05-01T12:35:00.000Z',
  durationMs: 3211,
  mgrVersion: '0.1.0',
  release: { name: '21.03', detection: 'known', revision: '8679d0a7e22b', alembicVersion: ['8679d0a7e22b'] },
  source: {
    postgres: { host: 'db', port: 5432, database: 'backend', serverVersion: '15.6' },
    etcd: { endpoint: 'http://etcd:2379', namespace: 'local', serverVersion: '3.4.23' },
    redis: { target: 'redis:6379', serverVersion: '7.0.15' },
  },
  consistency: { maintenance: 'entered', clearHistoryLock: 'held', postgres: 'snapshot', etcd: 'revision 7', redis: 'scan' },
  postgres: { file: 'postgres.dump', tables: { 'public.users': { rows: 2, sha256: sha('x') } } },
  etcd: { file: 'etcd.ndjson', revision: '7', keys: 3, maintenanceMarker: { previousManagerStatus: null } },
  redis: { dbs: [{ db: 0, file: 'redis-0.ndjson', keys: 1 }] },
  files: [
    { name: 'postgres.dump', bytes: 10, sha256: sha('a') },
    { name: 'etcd.ndjson', bytes: 20, sha256: sha('b'), lines: 3 },
    { name: 'redis-0.ndjson', bytes: 30, sha256: sha('c'), lines: 1 },
  ],
};

describe('backup bundle format', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-test-unit-bundle-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names bundles by release and UTC time, with milliseconds only when asked', () => {
    const at = new Date('2024-05-01T12:34:56.789Z');
    expect(bundleName('21.03', at)).toBe('mgr-backup-21.03-20240501T123456Z');
    expect(bundleName('21.03', at, true)).toBe('mgr-backup-21.03-20240501T123456789Z');
    expect(bundleName('21.09+015d84d5a5ef', at)).toBe('mgr-backup-21.09_015d84d5a5ef-20240501T123456Z');
  });

  it('reads a manifest it wrote, and names the key of a damaged one', async () => {
    await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
    expect(await readManifest(dir)).toEqual(manifest);

    const broken = { ...manifest, etcd: { ...manifest.etcd, keys: -1 }, files: [{ ...manifest.files[0], sha256: 'zz' }] };
    await writeFile(path.join(dir, 'manifest.json'), JSON.stringify(broken));
    const e = await readManifest(dir).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(MgrError);
    expect((e as MgrError).code).toBe('integrity');
    expect((e as MgrError).message).toMatch(/\[etcd\.keys\]/);
    expect((e as MgrError).message).toMatch(/\[files\.0\.sha256\]: expected 64 hex digits/);
  });

  it('refuses a directory without a manifest as unfinished or not a bundle', async () => {
    const e = await readManifest(path.join(dir, 'nothing-here')).catch((err: unknown) => err);
    expect((e as MgrError).code).toBe('integrity');
    expect((e as MgrError).message).toMatch(/not a finished mgr backup: manifest\.json is missing/);
  });

  it('rejects a manifest of another format version', () => {
    expect(manifestSchema.safeParse({ ...manifest, format: 'mgr-backup/2' }).success).toBe(false);
  });

  it('writes ndjson as a 0600 file whose recorded size, sha256 and line count match the file', async () => {
    const file = path.join(dir, 'x.ndjson');
    const w = await NdjsonWriter.create(file);
    for (let i = 0; i < 2_500; i++) await w.write({ k: Buffer.from(`key ${i}\n`).toString('base64'), v: 'é' });
    const written = await w.close();
    expect(written.lines).toBe(2_500);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const text = await readFile(file);
    expect(written.bytes).toBe(text.length);
    expect(written.sha256).toBe(createHash('sha256').update(text).digest('hex'));
    expect(await fileDigest(file)).toEqual({ bytes: written.bytes, sha256: written.sha256, lines: 2_500 });
    // never overwrites a file that exists
    await expect(NdjsonWriter.create(file)).rejects.toThrow(/EEXIST/);
  });

  it('finds the schemas a pg_restore table of contents creates', () => {
    const toc = [
      ';',
      '; Archive created at 2024-05-01 12:34:56 UTC',
      ';     dbname: backend',
      '6; 2615 16385 SCHEMA - mgr postgres',
      '2; 3079 16386 EXTENSION - uuid-ossp ',
      '215; 1259 16400 TABLE public agents postgres',
      '7; 2615 16390 SCHEMA - odd schema postgres',
      '8; 2615 16391 SCHEMA - unowned ',
    ].join('\n');
    expect(schemasInToc(toc)).toEqual(['mgr', 'odd schema', 'unowned']);
  });
});
