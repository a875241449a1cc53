import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { MgrError, errorMessage } from '../errors.js';
import { BUNDLE_PREFIX, PARTIAL_SUFFIX, fileDigest, readManifest, type BackupManifest } from './bundle.js';
import { pgRestoreList } from './pg-tools.js';

export interface VerifyResult {
  ok: boolean;
  /** One line per problem: which file, what is wrong. */
  problems: string[];
  /** The manifest, when it could be read. */
  manifest: BackupManifest | undefined;
}

/**
 * Checks a bundle without touching any store: the manifest reads, every file it lists is there
 * with the recorded size, sha256 and line count, the counts in the manifest agree with the
 * files, and pg_restore can read the dump's table of contents.
 */
export async function verifyBackup(dir: string): Promise<VerifyResult> {
  const problems: string[] = [];
  let manifest: BackupManifest;
  try {
    manifest = await readManifest(dir);
  } catch (e) {
    return { ok: false, problems: [errorMessage(e)], manifest: undefined };
  }
  const listed = new Map(manifest.files.map((f) => [f.name, f]));
  const expectCount = (name: string, count: number, what: string) => {
    const f = listed.get(name);
    if (!f) problems.push(`${name}: named in the manifest's ${what} section but not in its file list`);
    else if (f.lines !== count) problems.push(`${name}: the manifest says ${count} ${what} keys but lists ${f.lines ?? 'no'} lines`);
  };
  if (!listed.has(manifest.postgres.file)) problems.push(`${manifest.postgres.file}: named in the manifest's postgres section but not in its file list`);
  expectCount(manifest.etcd.file, manifest.etcd.keys, 'etcd');
  for (const r of manifest.redis.dbs) expectCount(r.file, r.keys, `redis DB ${r.db}`);

  for (const f of manifest.files) {
    const file = path.join(dir, f.name);
    if (!existsSync(file)) {
      problems.push(`${f.name}: missing`);
      continue;
    }
    const d = await fileDigest(file);
    if (d.bytes !== f.bytes) problems.push(`${f.name}: ${d.bytes} bytes, the manifest says ${f.bytes} (truncated or changed)`);
    if (d.sha256 !== f.sha256) problems.push(`${f.name}: sha256 ${d.sha256} does not match the manifest's ${f.sha256} (corrupted or changed)`);
    else if (f.lines !== undefined && d.lines !== f.lines) problems.push(`${f.name}: ${d.lines} lines, the manifest says ${f.lines}`);
  }
  const dump = path.join(dir, manifest.postgres.file);
  if (existsSync(dump)) {
    try {
      await pgRestoreList(dump);
    } catch (e) {
      problems.push(`${manifest.postgres.file}: pg_restore cannot read it: ${errorMessage(e)}`);
    }
  }
  return { ok: problems.length === 0, problems, manifest };
}

/** verifyBackup, throwing an integrity error (exit 9) that lists the problems. */
export async function assertBackupValid(dir: string): Promise<BackupManifest> {
  const v = await verifyBackup(dir);
  if (!v.ok || !v.manifest) {
    throw new MgrError('integrity', `backup ${dir} failed verification:\n  ${v.problems.join('\n  ')}`, {
      hint: 'this bundle cannot be restored safely; use another backup (`mgr backup list`)',
      details: { problems: v.problems },
    });
  }
  return v.manifest;
}

export interface BundleSummary {
  path: string;
  name: string;
  /** False for a `.partial` directory: a backup that never finished. */
  finished: boolean;
  release: string | undefined;
  createdAt: string | undefined;
  bytes: number;
  /** Checked only when asked (it reads every byte). */
  verify: { ok: boolean; problems: string[] } | undefined;
}

/** The bundles directly under `dir`, oldest first. */
export async function listBackups(dir: string, opts: { verify?: boolean } = {}): Promise<BundleSummary[]> {
  if (!existsSync(dir)) {
    throw new MgrError('usage', `backup directory ${dir} does not exist`, { hint: 'pass the directory given to `mgr backup create --out`' });
  }
  const out: BundleSummary[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    if (!entry.isDirectory() || !entry.name.startsWith(BUNDLE_PREFIX)) continue;
    const p = path.join(dir, entry.name);
    const finished = !entry.name.endsWith(PARTIAL_SUFFIX);
    let bytes = 0;
    for (const f of await readdir(p, { withFileTypes: true })) if (f.isFile()) bytes += (await stat(path.join(p, f.name))).size;
    let manifest: BackupManifest | undefined;
    let verify: BundleSummary['verify'];
    if (finished) {
      if (opts.verify) {
        const v = await verifyBackup(p);
        manifest = v.manifest;
        verify = { ok: v.ok, problems: v.problems };
      } else {
        manifest = await readManifest(p).catch(() => undefined);
      }
    }
    out.push({ path: p, name: entry.name, finished, release: manifest?.release.name, createdAt: manifest?.createdAt, bytes, verify });
  }
  return out.sort((a, b) => (a.createdAt ?? a.name).localeCompare(b.createdAt ?? b.name));
}
