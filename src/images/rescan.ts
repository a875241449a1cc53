import pLimit from 'p-limit';
import type pg from 'pg';
import { loadSharedConfig, type RegistryConfig } from '../config/shared.js';
import type { Progress } from '../engine/types.js';
import { MgrError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { refuseDuringMaintenance } from '../maintenance/index.js';
import type { Stores } from '../stores/index.js';
import {
  buildImageRow,
  canonicalImageName,
  mergeResources,
  plannedUpdate,
  repositorySkipReason,
  type ExistingImageRow,
  type ImageRowCandidate,
  type ImageRowUpdate,
  type ManifestFacts,
} from './labels.js';
import { DEFAULT_REGISTRY_CONCURRENCY, RegistryClient, type IndexEntry, type RegistryClientOptions } from './registry-client.js';

/**
 * `mgr image rescan`: rebuild the 22.03 `images` table from the registries configured in etcd
 * (backend-ai.md §3.2), with mgr's differences: every manifest type is asked for, hand-set `max`
 * limits survive, unchanged rows are not rewritten, and stale rows go only with `prune`.
 */

export interface RescanOptions {
  /** Only this registry (its etcd name); default: every registry in etcd. */
  registry?: string | undefined;
  /** Only this project (Harbor) or repository prefix (docker); needs `registry`. */
  project?: string | undefined;
  /** Registry requests in flight per registry (default 16). */
  concurrency?: number | undefined;
  /** Compute everything, write nothing. */
  dryRun?: boolean | undefined;
  /** Delete rows of the scanned registry/project whose image the registry no longer has. */
  prune?: boolean | undefined;
  signal?: AbortSignal | undefined;
  onProgress?: ((p: Progress) => void) | undefined;
  log?: Logger | undefined;
  /** Page size for catalog and tag listings (default 100). */
  pageSize?: number | undefined;
  /** Transport tuning: timeout, retries, first back-off. */
  client?: Pick<RegistryClientOptions, 'timeoutMs' | 'retries' | 'retryMinDelayMs' | 'maxRetryAfterMs'> | undefined;
}

export interface RescanSkip {
  ref: string;
  reason: string;
}

export interface RescanFailure {
  /** A repository, or an image ref; absent when the whole registry failed. */
  ref?: string;
  /** Set when the whole registry failed (listing or writing). */
  registry?: string;
  reason: string;
}

export interface PrunedImage {
  ref: string;
  architecture: string;
  /** image_aliases rows deleted (or that would be) with it. */
  aliases: string[];
}

export interface RegistryRescanReport {
  name: string;
  /** Projects (Harbor) or repository prefix (docker) that were scanned; empty = all. */
  projects: string[];
  added: number;
  updated: number;
  unchanged: number;
  skipped: RescanSkip[];
  failed: RescanFailure[];
  /** Rows deleted by --prune (with --dry-run: rows that would be deleted). */
  pruned: PrunedImage[];
  /** Why something was not done (e.g. prune withheld because the listing failed). */
  notes: string[];
}

export interface RescanReport {
  dryRun: boolean;
  prune: boolean;
  perRegistry: RegistryRescanReport[];
  totals: { added: number; updated: number; unchanged: number; skipped: number; failed: number; pruned: number };
}

export async function rescanImages(stores: Stores, opts: RescanOptions = {}): Promise<RescanReport> {
  const log = opts.log ?? silentLogger;
  const { registries } = await loadSharedConfig(stores.etcd);
  const selected = selectRegistries(registries, opts.registry, opts.project);
  if (opts.prune && !opts.dryRun) await refuseDuringMaintenance(stores.etcd, 'image rescan --prune');
  await requireImagesTable(stores);
  const progress = { done: 0, total: 0 };
  const report = () => opts.onProgress?.({ done: progress.done, total: progress.total, unit: 'tags' });
  const perRegistry = await Promise.all(
    selected.map(({ registry, projects }) => rescanRegistry(stores, registry, projects, opts, log, progress, report)),
  );
  opts.signal?.throwIfAborted();
  const sum = (f: (r: RegistryRescanReport) => number) => perRegistry.reduce((a, r) => a + f(r), 0);
  return {
    dryRun: Boolean(opts.dryRun),
    prune: Boolean(opts.prune),
    perRegistry,
    totals: {
      added: sum((r) => r.added),
      updated: sum((r) => r.updated),
      unchanged: sum((r) => r.unchanged),
      skipped: sum((r) => r.skipped.length),
      failed: sum((r) => r.failed.length),
      pruned: sum((r) => r.pruned.length),
    },
  };
}

/** The images table arrives with 22.03; scanning registries for an older schema would be wasted work. */
async function requireImagesTable(stores: Stores): Promise<void> {
  const res = await stores.pg.withClient((c) => c.query<{ t: string | null }>(`SELECT to_regclass('public.images')::text AS t`));
  if (res.rows[0]?.t === null || res.rows[0]?.t === undefined) {
    throw new MgrError('refused', 'the images table does not exist: this database is not at Backend.AI 22.03 yet', {
      hint: 'upgrade first (mgr upgrade); rescan fills the 22.03 images table',
    });
  }
}

/** "REGISTRY[/PROJECT]" as the CLI takes it; the registry name itself never contains "/". */
export function parseRegistryArgument(arg: string | undefined): { registry: string | undefined; project: string | undefined } {
  if (!arg) return { registry: undefined, project: undefined };
  const i = arg.indexOf('/');
  return i < 0 ? { registry: arg, project: undefined } : { registry: arg.slice(0, i), project: arg.slice(i + 1).replace(/\/+$/, '') || undefined };
}

/** Which registries (and projects in them) to scan; an unknown name is a config error naming the known ones. */
export function selectRegistries(
  registries: RegistryConfig[],
  name: string | undefined,
  project: string | undefined,
): { registry: RegistryConfig; projects: string[] }[] {
  if (project && !name) throw new MgrError('usage', 'a project needs its registry: REGISTRY/PROJECT');
  const scope = (r: RegistryConfig) => (r.type === 'docker' ? [] : r.projects);
  if (!name) return registries.map((registry) => ({ registry, projects: scope(registry) }));
  const registry = registries.find((r) => r.name === name);
  if (!registry) {
    const known = registries.map((r) => r.name).sort();
    throw new MgrError('config', `unknown registry "${name}"; known registries: ${known.length ? known.join(', ') : '(none configured)'}`, {
      hint: 'registries are configured in etcd under config/docker/registry/{name}',
      details: { known },
    });
  }
  if (!project) return [{ registry, projects: scope(registry) }];
  if (registry.type !== 'docker' && !registry.projects.includes(project)) {
    throw new MgrError('config', `registry "${name}" has no project "${project}"; configured projects: ${registry.projects.join(', ') || '(none)'}`, {
      hint: `add it to config/docker/registry/${name}/project in etcd`,
    });
  }
  return [{ registry, projects: [project] }];
}

/** What one registry scan found, kept so prune can tell "gone" from "not looked at". */
interface ScanResult {
  rows: ImageRowCandidate[];
  skipped: RescanSkip[];
  failed: RescanFailure[];
  /** False when the repository listing itself failed: nothing may be pruned then. */
  listingComplete: boolean;
  listedRepos: Set<string>;
  /** Repositories whose tags were listed. */
  scannedRepos: Set<string>;
  tagsByRepo: Map<string, Set<string>>;
  /** Architectures each image ref has in the registry (stored or skipped). */
  archsByName: Map<string, Set<string>>;
  /** Refs whose manifest is gone (404). */
  missing: Set<string>;
  /** Refs that could not be read completely: never pruned. */
  uncertain: Set<string>;
}

async function rescanRegistry(
  stores: Stores,
  registry: RegistryConfig,
  projects: string[],
  opts: RescanOptions,
  log: Logger,
  progress: { done: number; total: number },
  report: () => void,
): Promise<RegistryRescanReport> {
  const out: RegistryRescanReport = { name: registry.name, projects, added: 0, updated: 0, unchanged: 0, skipped: [], failed: [], pruned: [], notes: [] };
  const client = new RegistryClient(registry, {
    concurrency: opts.concurrency ?? DEFAULT_REGISTRY_CONCURRENCY,
    signal: opts.signal,
    log,
    ...opts.client,
  });
  let scan: ScanResult;
  try {
    scan = await scanRegistry(client, registry, projects, opts, log, progress, report);
  } finally {
    client.close();
  }
  opts.signal?.throwIfAborted();
  // Tags finish in any order; sorted, the report reads the same on every run.
  out.skipped = scan.skipped.sort((a, b) => a.ref.localeCompare(b.ref));
  out.failed = scan.failed.sort((a, b) => (a.ref ?? '').localeCompare(b.ref ?? ''));
  if (opts.prune && !scan.listingComplete) out.notes.push('prune withheld: the repository listing did not complete');
  try {
    const written = await writeRows(stores, registry, projects, scan, { dryRun: Boolean(opts.dryRun), prune: Boolean(opts.prune) && scan.listingComplete });
    Object.assign(out, written);
  } catch (e) {
    out.failed.push({ registry: registry.name, reason: `writing the images table failed: ${errorMessage(e)}` });
  }
  log.info(
    { registry: registry.name, added: out.added, updated: out.updated, unchanged: out.unchanged, skipped: out.skipped.length, failed: out.failed.length, pruned: out.pruned.length, dryRun: Boolean(opts.dryRun) },
    'registry rescanned',
  );
  return out;
}

function isInProjects(repository: string, projects: string[]): boolean {
  return projects.length === 0 || projects.some((p) => repository.startsWith(`${p}/`));
}

async function scanRegistry(
  client: RegistryClient,
  registry: RegistryConfig,
  projects: string[],
  opts: RescanOptions,
  log: Logger,
  progress: { done: number; total: number },
  report: () => void,
): Promise<ScanResult> {
  const r: ScanResult = {
    rows: [],
    skipped: [],
    failed: [],
    listingComplete: false,
    listedRepos: new Set(),
    scannedRepos: new Set(),
    tagsByRepo: new Map(),
    archsByName: new Map(),
    missing: new Set(),
    uncertain: new Set(),
  };
  const pageSize = opts.pageSize ?? 100;
  // Tags are worked on with the registry's concurrency; each tag's requests also go through the
  // client's request limit, so requests in flight never exceed it.
  const tagLimit = pLimit(opts.concurrency ?? DEFAULT_REGISTRY_CONCURRENCY);
  const repoTasks: Promise<void>[] = [];
  const tagTasks: Promise<void>[] = [];

  const scanRepository = async (repo: string) => {
    let tags: string[];
    try {
      tags = await client.tags(repo, pageSize);
    } catch (e) {
      if (opts.signal?.aborted) return;
      r.failed.push({ ref: repo, reason: errorMessage(e) });
      return;
    }
    r.scannedRepos.add(repo);
    r.tagsByRepo.set(repo, new Set(tags));
    progress.total += tags.length;
    report();
    for (const tag of tags) {
      tagTasks.push(
        tagLimit(async () => {
          if (opts.signal?.aborted) return;
          try {
            await scanTag(client, registry, repo, tag, r, log);
          } finally {
            progress.done++;
            report();
          }
        }),
      );
    }
  };

  try {
    // The /v2/ probe first: a registry that is down or refuses us fails once, with one reason.
    await client.ping();
    for await (const page of client.repositories(projects, pageSize)) {
      for (const repo of page) {
        if (!isInProjects(repo, registry.type === 'docker' ? projects : [])) continue;
        r.listedRepos.add(repo);
        const reason = repositorySkipReason(repo);
        if (reason) {
          r.skipped.push({ ref: repo, reason });
          continue;
        }
        repoTasks.push(scanRepository(repo));
      }
    }
    r.listingComplete = true;
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    r.failed.push({ registry: registry.name, reason: `listing repositories failed: ${errorMessage(e)}` });
  }
  await Promise.all(repoTasks);
  await Promise.all(tagTasks);
  return r;
}

async function scanTag(client: RegistryClient, registry: RegistryConfig, repo: string, tag: string, r: ScanResult, log: Logger): Promise<void> {
  const name = canonicalImageName(registry.name, repo, tag);
  try {
    const m = await client.manifest(repo, tag);
    if (m.kind === 'missing') {
      r.missing.add(name);
      r.skipped.push({ ref: name, reason: 'manifest not found (deleted while scanning)' });
      return;
    }
    if (m.kind === 'unsupported') {
      r.uncertain.add(name);
      r.skipped.push({ ref: name, reason: `unsupported manifest type ${m.mediaType}` });
      return;
    }
    const archs = new Set<string>();
    r.archsByName.set(name, archs);
    if (m.kind === 'image') {
      const row = await scanPlatform(client, registry, repo, tag, m.facts, undefined, r, archs, log);
      if (row) r.rows.push(row);
      return;
    }
    await scanIndex(client, registry, repo, tag, m.entries, r, archs, log);
  } catch (e) {
    r.uncertain.add(name);
    r.failed.push({ ref: name, reason: errorMessage(e) });
  }
}

/** A manifest list / OCI index: one row per architecture (22.03 recurses into every entry). */
async function scanIndex(
  client: RegistryClient,
  registry: RegistryConfig,
  repo: string,
  tag: string,
  entries: IndexEntry[],
  r: ScanResult,
  archs: Set<string>,
  log: Logger,
): Promise<void> {
  const name = canonicalImageName(registry.name, repo, tag);
  // Build attestations (platform unknown/unknown) describe other entries; they are not images.
  const platforms = entries.filter((e) => e.platform?.architecture !== 'unknown');
  const children = await Promise.all(
    platforms.map(async (e) => {
      const child = await client.manifest(repo, e.digest);
      if (child.kind !== 'image') {
        throw new MgrError('integrity', `index entry ${e.digest} is ${child.kind === 'missing' ? 'missing from the registry' : `not an image manifest (${child.kind === 'index' ? 'nested index' : child.mediaType})`}`);
      }
      return { entry: e, facts: child.facts };
    }),
  );
  // Several entries can map to one architecture (arm variants); the first in index order wins,
  // because (name, architecture) is the row key.
  const byArch = new Map<string, ImageRowCandidate>();
  for (const { entry, facts } of children) {
    const row = await scanPlatform(client, registry, repo, tag, facts, entry.platform?.architecture, r, archs, log);
    if (!row) continue;
    if (byArch.has(row.architecture)) r.skipped.push({ ref: `${name} (${row.architecture})`, reason: 'another platform of this index already has this architecture' });
    else byArch.set(row.architecture, row);
  }
  r.rows.push(...byArch.values());
}

async function scanPlatform(
  client: RegistryClient,
  registry: RegistryConfig,
  repo: string,
  tag: string,
  facts: ManifestFacts,
  platformArchitecture: string | undefined,
  r: ScanResult,
  archs: Set<string>,
  log: Logger,
): Promise<ImageRowCandidate | undefined> {
  const config = await client.configBlob(repo, facts.configDigest);
  const built = buildImageRow({ registry: registry.name, image: repo, tag, manifest: facts, config, fallbackArchitecture: platformArchitecture });
  const ref = canonicalImageName(registry.name, repo, tag);
  if (built.warning) log.warn({ registry: registry.name, image: ref }, built.warning);
  if ('skip' in built) {
    if (built.architecture) archs.add(built.architecture);
    else r.uncertain.add(ref);
    r.skipped.push({ ref: built.architecture ? `${ref} (${built.architecture})` : ref, reason: built.skip });
    return undefined;
  }
  archs.add(built.row.architecture);
  return built.row;
}

const ROW_COLUMNS = 'id, name, architecture, registry, image, tag, config_digest, size_bytes, accelerators, labels, resources';
const WRITE_CHUNK = 500;
/** Advisory lock class of mgr's rescan (two-key form, apart from Backend.AI's bigint lock ids). */
const RESCAN_LOCK_CLASS = 0x6d67;

interface DbImageRow {
  id: string;
  name: string;
  architecture: string;
  registry: string;
  image: string;
  tag: string;
  config_digest: string;
  size_bytes: number | string;
  accelerators: string | null;
  labels: unknown;
  resources: unknown;
}

/**
 * One transaction per registry (as 22.03): select what exists, insert new rows, update changed
 * ones only, and with prune delete stale rows after their aliases (the FK is NO ACTION).
 * Concurrent rescans of one registry are serialised by a transaction advisory lock.
 */
async function writeRows(
  stores: Stores,
  registry: RegistryConfig,
  projects: string[],
  scan: ScanResult,
  flags: { dryRun: boolean; prune: boolean },
): Promise<Pick<RegistryRescanReport, 'added' | 'updated' | 'unchanged' | 'pruned'>> {
  const run = async (c: pg.PoolClient) => {
    if (!flags.dryRun) await c.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [RESCAN_LOCK_CLASS, registry.name]);
    const names = [...new Set(scan.rows.map((row) => row.name))];
    const existing = (
      await c.query<DbImageRow>(
        `SELECT ${ROW_COLUMNS} FROM images WHERE registry = $1 OR name = ANY($2::varchar[]) ORDER BY id${flags.dryRun ? '' : ' FOR UPDATE'}`,
        [registry.name, names],
      )
    ).rows;
    const byKey = new Map(existing.map((row) => [rowKey(row.name, row.architecture), row]));
    const inserts: ImageRowCandidate[] = [];
    const updates: ImageRowUpdate[] = [];
    let unchanged = 0;
    for (const cand of scan.rows) {
      const prev = byKey.get(rowKey(cand.name, cand.architecture));
      if (!prev) {
        inserts.push({ ...cand, resources: mergeResources(cand.resources, undefined) });
        continue;
      }
      const upd = plannedUpdate(toExisting(prev), cand);
      if (upd) updates.push(upd);
      else unchanged++;
    }
    const stale = flags.prune ? existing.filter((row) => row.registry === registry.name && isStale(row, registry, projects, scan)) : [];
    const aliases = await aliasesOf(c, stale.map((s) => s.id));
    const pruned = stale.map((s) => ({ ref: s.name, architecture: s.architecture, aliases: aliases.get(s.id) ?? [] }));
    if (!flags.dryRun) {
      for (let i = 0; i < inserts.length; i += WRITE_CHUNK) {
        await c.query(
          `INSERT INTO images (name, image, tag, registry, architecture, config_digest, size_bytes, type, accelerators, labels, resources)
           SELECT name, image, tag, registry, architecture, config_digest, size_bytes, type, accelerators, labels, resources
           FROM jsonb_populate_recordset(NULL::images, $1::jsonb)`,
          [JSON.stringify(inserts.slice(i, i + WRITE_CHUNK).map(insertRecord))],
        );
      }
      for (let i = 0; i < updates.length; i += WRITE_CHUNK) {
        await c.query(
          `UPDATE images AS i SET config_digest = x.config_digest, size_bytes = x.size_bytes, accelerators = x.accelerators,
                  labels = x.labels, resources = x.resources
           FROM jsonb_populate_recordset(NULL::images, $1::jsonb) AS x WHERE i.id = x.id`,
          [JSON.stringify(updates.slice(i, i + WRITE_CHUNK).map(updateRecord))],
        );
      }
      if (stale.length) {
        const ids = stale.map((s) => s.id);
        await c.query('DELETE FROM image_aliases WHERE image = ANY($1::uuid[])', [ids]);
        await c.query('DELETE FROM images WHERE id = ANY($1::uuid[])', [ids]);
      }
    }
    return { added: inserts.length, updated: updates.length, unchanged, pruned };
  };
  return flags.dryRun ? stores.pg.withClient(run) : stores.pg.withTransaction(run);
}

function rowKey(name: string, architecture: string): string {
  return `${name}\u0000${architecture}`;
}

function toExisting(row: DbImageRow): ExistingImageRow {
  return {
    id: row.id,
    name: row.name,
    architecture: row.architecture,
    registry: row.registry,
    image: row.image,
    configDigest: row.config_digest,
    sizeBytes: row.size_bytes,
    accelerators: row.accelerators,
    labels: row.labels,
    resources: row.resources,
  };
}

function insertRecord(row: ImageRowCandidate) {
  return {
    name: row.name,
    image: row.image,
    tag: row.tag,
    registry: row.registry,
    architecture: row.architecture,
    config_digest: row.configDigest,
    size_bytes: row.sizeBytes,
    type: row.type,
    accelerators: row.accelerators,
    labels: row.labels,
    resources: row.resources,
  };
}

function updateRecord(u: ImageRowUpdate) {
  return { id: u.id, config_digest: u.configDigest, size_bytes: u.sizeBytes, accelerators: u.accelerators, labels: u.labels, resources: u.resources };
}

/**
 * A row is stale when the registry (within the scanned projects) verifiably no longer has it:
 * its repository or tag is gone, its manifest is 404, or its architecture left the manifest.
 * Anything not looked at (filtered repository, failed listing or manifest) is kept.
 */
function isStale(row: DbImageRow, registry: RegistryConfig, projects: string[], scan: ScanResult): boolean {
  if (!isInProjects(row.image, projects)) return false;
  if (!scan.listedRepos.has(row.image)) return true;
  if (!scan.scannedRepos.has(row.image)) return false;
  if (!scan.tagsByRepo.get(row.image)?.has(row.tag)) return true;
  const name = canonicalImageName(registry.name, row.image, row.tag);
  if (scan.uncertain.has(name)) return false;
  if (scan.missing.has(name)) return true;
  const archs = scan.archsByName.get(name);
  return archs !== undefined && !archs.has(row.architecture);
}

async function aliasesOf(c: pg.PoolClient, ids: string[]): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (!ids.length) return out;
  const res = await c.query<{ image: string; alias: string | null }>('SELECT image, alias FROM image_aliases WHERE image = ANY($1::uuid[]) ORDER BY alias', [ids]);
  for (const row of res.rows) out.set(row.image, [...(out.get(row.image) ?? []), row.alias ?? '']);
  return out;
}
