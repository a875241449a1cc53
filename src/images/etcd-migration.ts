import type pg from 'pg';
import { MgrError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Stores } from '../stores/index.js';
import { loadSharedConfig } from '../config/shared.js';
import { quote, unquote, type EtcdKV, type EtcdStore } from '../stores/etcd.js';
import type { Change, Step, StepContext } from '../engine/types.js';
import {
  BackgroundMigrationFailure,
  FAILURE_CODE,
  ensureBbmTables,
  enqueueBackgroundMigration,
  findMigration,
  backgroundMigrationStatus,
  registerBackgroundMigration,
  runBackgroundMigrations,
  unfinishedError,
  type BackgroundMigrationDefinition,
  type BatchRange,
  type BbmContext,
  type ClaimContext,
  type MigrationReport,
  type MigrationRow,
  type WorkResult,
} from '../bbm/index.js';
import {
  ALIASES_PREFIX,
  IMAGES_PREFIX,
  MAX_ALIAS_HOPS,
  QUARANTINE_REASON,
  TagSpanTracker,
  canonicalReference,
  imageRowFromEtcd,
  tagKeyOf,
  takeTagBatch,
  type EtcdImageRow,
  type Problem,
  type TagEntry,
} from './etcd-layout.js';

/**
 * The 21.x image metadata in etcd → the 22.03 `images` / `image_aliases` tables, as the batched
 * background migration `images_from_etcd`. Reads are paged range reads pinned to the etcd
 * revision taken when the migration was enqueued (one consistent snapshot, never all keys at
 * once); a batch is N whole tags; rows are upserted on (name, architecture), so a batch run twice
 * writes the same rows. Malformed entries go to `mgr.image_quarantine` instead of stopping the
 * run. When every batch is done, a final job migrates the aliases (they need the image rows) and
 * checks that etcd's tag count equals rows written + tags quarantined. etcd is never written.
 */

export const IMAGES_FROM_ETCD = 'images_from_etcd';
/** Tags per batch: about 10 keys each, so one batch is one or two range reads and one upsert. */
export const DEFAULT_IMAGE_BATCH_SIZE = 1000;
/**
 * Keys per etcd range read. etcd 3.4 walks its index to the END of the requested range on every
 * request (to count), so what costs is the number of reads over a long range, not their size.
 */
const PAGE_KEYS = 10_000;
/**
 * Keys per page of the keys-only scan that counts tags when the migration is enqueued. Measured
 * over 1.37M keys: 10k pages 32 s / 193 MiB peak RSS, 20k 20 s / 210 MiB, 50k 12 s / 395 MiB
 * (decoding a big page costs memory; every page costs an index walk to the end of images/).
 */
const SCAN_PAGE_KEYS = 20_000;
/**
 * Every this many keys, the enqueue scan records a fence: a key a later range read can stop at.
 * Batches read up to the next fences instead of to the end of images/, so a batch costs etcd
 * O(its own keys) instead of O(keys left).
 */
const FENCE_EVERY = 2_000;
/** Rows per INSERT statement (one jsonb parameter each). */
const UPSERT_ROWS = 1000;
/** Aliases per transaction of the final job. */
const ALIAS_CHUNK = 1000;

const IMAGE_MIGRATION_DDL = `
CREATE SCHEMA IF NOT EXISTS mgr;
CREATE TABLE IF NOT EXISTS mgr.etcd_range_fences (
  migration_name text NOT NULL,
  key text COLLATE "C" NOT NULL,
  PRIMARY KEY (migration_name, key)
);
CREATE TABLE IF NOT EXISTS mgr.image_quarantine (
  id bigserial PRIMARY KEY,
  migration_name text NOT NULL,
  key text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('tag', 'alias', 'key')),
  reason_code text NOT NULL,
  reason text NOT NULL,
  raw jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (migration_name, key)
);`;

/** Entries the migration set aside: a whole tag, an alias, or a stray key outside the layout. */
export interface QuarantineEntry {
  key: string;
  kind: 'tag' | 'alias' | 'key';
  reason_code: string;
  reason: string;
  /** The entry's etcd keys (relative to /sorna/{ns}/) and values, as found. */
  raw: Record<string, string>;
}

export async function ensureImageMigrationTables(client: pg.ClientBase): Promise<void> {
  await ensureBbmTables(client);
  await client.query(IMAGE_MIGRATION_DDL);
}

// ---------------------------------------------------------------------------------------------
// etcd reads, all pinned to the migration's revision

/**
 * Pages of keys in [from, end) (or after `after`), at `revision`, in key order. Not
 * EtcdStore.page: that asks for sort_order=ASCEND, which makes etcd 3.4 drop the limit and read
 * every value to the end of the range on every request (measured: 430 ms per page over 270k keys
 * against 12 ms for a bounded page unsorted). Keys already come back in key order.
 */
async function* rangePages(etcd: EtcdStore, o: RangeOptions): AsyncGenerator<EtcdKV[]> {
  for await (const kvs of rawPages(etcd, o, false)) {
    yield kvs.map((kv) => ({ key: kv.key.toString().slice(etcd.root.length), value: kv.value.toString() }));
  }
}

/** The same, keys only, as plain strings (the counting scan and batch cutting: no values, less garbage). */
async function* keyPages(etcd: EtcdStore, o: RangeOptions): AsyncGenerator<string[]> {
  for await (const kvs of rawPages(etcd, o, true)) yield kvs.map((kv) => kv.key.toString().slice(etcd.root.length));
}

interface RangeOptions {
  from: string;
  after?: string;
  end: string;
  revision: string;
  limit?: number;
}

async function* rawPages(etcd: EtcdStore, o: RangeOptions, keysOnly: boolean): AsyncGenerator<{ key: Buffer; value: Buffer }[]> {
  let start = o.after === undefined ? Buffer.from(etcd.abs(o.from)) : Buffer.from(etcd.abs(o.after) + '\0');
  for (;;) {
    const res = await etcd.client.kv.range({
      key: start,
      range_end: Buffer.from(etcd.abs(o.end)),
      limit: String(o.limit ?? PAGE_KEYS),
      revision: o.revision,
      keys_only: keysOnly,
    });
    if (res.kvs.length) yield res.kvs;
    if (!res.more || !res.kvs.length) return;
    start = Buffer.concat([res.kvs[res.kvs.length - 1]!.key, Buffer.from([0])]);
  }
}

async function getAt(etcd: EtcdStore, key: string, revision: string): Promise<string | undefined> {
  const res = await etcd.client.kv.range({ key: Buffer.from(etcd.abs(key)), revision });
  return res.kvs[0]?.value.toString();
}

export interface EtcdImageCounts {
  revision: string;
  tags: number;
  aliases: number;
  keys: number;
  firstKey: string | null;
  lastKey: string | null;
  /** Every FENCE_EVERY-th key, in key order: bounds for later range reads. */
  fences: string[];
}

/** Counts tags and aliases under images/ at one revision (the current one by default), page by page. */
export async function countEtcdImages(etcd: EtcdStore, revision?: string): Promise<EtcdImageCounts> {
  const rev = revision ?? (await etcd.revision());
  const tracker = new TagSpanTracker();
  const out: EtcdImageCounts = { revision: rev, tags: 0, aliases: 0, keys: 0, firstKey: null, lastKey: null, fences: [] };
  for await (const keys of keyPages(etcd, { from: IMAGES_PREFIX, end: prefixEndKey(IMAGES_PREFIX), revision: rev, limit: SCAN_PAGE_KEYS })) {
    for (const [i, key] of keys.entries()) {
      tracker.boundaryBefore(key);
      tracker.add(key);
      if (key.startsWith(ALIASES_PREFIX)) out.aliases++;
      if ((out.keys + i) % FENCE_EVERY === FENCE_EVERY - 1) out.fences.push(key);
    }
    out.keys += keys.length;
    out.firstKey ??= keys[0]!;
    out.lastKey = keys[keys.length - 1]!;
  }
  out.tags = tracker.tags;
  return out;
}

/** The relative key just past every key starting with `prefix` (prefix ends in an ASCII byte). */
function prefixEndKey(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

function revisionOf(m: MigrationRow): string {
  if (!m.pinnedRevision) throw new BackgroundMigrationFailure(FAILURE_CODE.unknown, `migration ${m.name} has no pinned etcd revision`);
  return m.pinnedRevision;
}

// ---------------------------------------------------------------------------------------------
// the batch: N whole tags

/**
 * The next batch: `size` tags after `after`, extended to where no tag's keys continue. Reads
 * keys only, segment by segment up to the next fences (100 fences cover 200,000 keys; a batch
 * larger than that reads its last segment to the end of the range).
 */
async function nextImageBatch(ctx: ClaimContext, after: string | undefined, size: number): Promise<BatchRange | undefined> {
  const m = ctx.migration;
  const fences = (
    await ctx.client.query<{ key: string }>('SELECT key FROM mgr.etcd_range_fences WHERE migration_name = $1 AND key > $2 ORDER BY key LIMIT 100', [
      m.name,
      after ?? '',
    ])
  ).rows.map((r) => r.key);
  return takeTagBatch(fencedPages(ctx.stores.etcd, after, [...fences, m.maxValue! + '\0'], revisionOf(m), Math.min(PAGE_KEYS, size * 12)), size);
}

/** Keys after `after` read segment by segment between fences, each range read bounded. */
async function* fencedPages(etcd: EtcdStore, after: string | undefined, bounds: string[], revision: string, limit: number): AsyncGenerator<string[]> {
  let from: { from: string; after?: string } = { from: IMAGES_PREFIX, after };
  for (const end of bounds) {
    yield* keyPages(etcd, { ...from, end, revision, limit });
    from = { from: end };
  }
}

interface BatchContents {
  tags: Map<string, TagEntry>;
  markers: Set<string>;
  strays: EtcdKV[];
}

async function readBatch(etcd: EtcdStore, batch: BatchRange, revision: string): Promise<BatchContents> {
  const out: BatchContents = { tags: new Map(), markers: new Set(), strays: [] };
  for await (const kvs of rangePages(etcd, { from: batch.min, end: batch.max + '\0', revision })) {
    for (const kv of kvs) {
      if (kv.key.startsWith(ALIASES_PREFIX)) continue; // the final job migrates aliases
      const tagKey = tagKeyOf(kv.key);
      if (tagKey !== undefined) {
        let entry = out.tags.get(tagKey);
        if (!entry) out.tags.set(tagKey, (entry = { tagKey, values: new Map() }));
        entry.values.set(kv.key.slice(tagKey.length + 1), kv.value);
      } else if (kv.key.split('/').length === 3) out.markers.add(kv.key);
      else out.strays.push(kv);
    }
  }
  return out;
}

/**
 * Registries configured in etcd now, read at each batch rather than taken from when the stores
 * were opened: a worker runs for hours, and an operator may add a registry meanwhile.
 */
async function configuredRegistryNames(stores: Stores): Promise<Set<string>> {
  return new Set((await loadSharedConfig(stores.etcd)).registries.map((r) => r.name));
}

async function writeImageBatch(ctx: BbmContext, batch: BatchRange): Promise<WorkResult> {
  const { stores, migration: m } = ctx;
  const revision = revisionOf(m);
  const contents = await readBatch(stores.etcd, batch, revision);
  const registries = await configuredRegistryNames(stores);
  // A repository's marker sorts before its tags but may sit in an earlier batch: ask etcd.
  const repoKeys = new Set([...contents.tags.keys()].map((k) => k.split('/').slice(0, 3).join('/')));
  await Promise.all(
    [...repoKeys]
      .filter((k) => !contents.markers.has(k))
      .map(async (k) => {
        if ((await getAt(stores.etcd, k, revision)) !== undefined) contents.markers.add(k);
      }),
  );
  const rows: EtcdImageRow[] = [];
  const quarantine: QuarantineEntry[] = [];
  for (const entry of contents.tags.values()) {
    const r = imageRowFromEtcd(entry, registries, contents.markers.has(entry.tagKey.split('/').slice(0, 3).join('/')));
    if ('row' in r) rows.push(r.row);
    else quarantine.push(quarantined(entry.tagKey, 'tag', r.problems, [...entry.values].map(([sub, v]) => [sub ? `${entry.tagKey}/${sub}` : entry.tagKey, v])));
  }
  for (const kv of contents.strays) {
    quarantine.push(quarantined(kv.key, 'key', [{ code: QUARANTINE_REASON.keyMalformed, message: 'key outside the image layout (neither a repository, a tag nor an alias)' }], [[kv.key, kv.value]]));
  }
  const written = await stores.pg.withTransaction(async (c) => {
    const n = await upsertImages(c, rows);
    await recordQuarantine(c, m.name, quarantine);
    return n;
  });
  const skipped = quarantine.filter((q) => q.kind === 'tag').length;
  if (quarantine.length) ctx.log.warn({ migration: m.name, batch, quarantined: quarantine.length }, 'entries quarantined (see mgr.image_quarantine)');
  return { rows: written + skipped, skipped };
}

function quarantined(key: string, kind: QuarantineEntry['kind'], problems: Problem[], raw: [string, string][]): QuarantineEntry {
  // PostgreSQL text and jsonb cannot hold NUL characters; what is kept here is evidence, not data.
  const text = (s: string) => s.replace(/\0/g, '\ufffd');
  return {
    key: text(key),
    kind,
    reason_code: problems[0]!.code,
    reason: text(problems.map((p) => p.message).join('; ')),
    raw: Object.fromEntries(raw.map(([k, v]) => [text(k), text(v)])),
  };
}

/** Multi-row upsert on the unique index ix_image_name_architecture, one jsonb parameter per statement. */
export async function upsertImages(c: pg.ClientBase, rows: EtcdImageRow[]): Promise<number> {
  let n = 0;
  for (let i = 0; i < rows.length; i += UPSERT_ROWS) {
    const r = await c.query(
      `INSERT INTO public.images (name, image, tag, registry, architecture, config_digest, size_bytes, type, accelerators, labels, resources)
       SELECT name, image, tag, registry, architecture, config_digest, size_bytes, 'COMPUTE'::public.image_type, accelerators, labels, resources
       FROM jsonb_to_recordset($1::jsonb) AS r(name text, image text, tag text, registry text, architecture text, config_digest text,
                                              size_bytes bigint, accelerators text, labels jsonb, resources jsonb)
       ON CONFLICT (name, architecture) DO UPDATE SET image = EXCLUDED.image, tag = EXCLUDED.tag, registry = EXCLUDED.registry,
         config_digest = EXCLUDED.config_digest, size_bytes = EXCLUDED.size_bytes, type = EXCLUDED.type,
         accelerators = EXCLUDED.accelerators, labels = EXCLUDED.labels, resources = EXCLUDED.resources`,
      [JSON.stringify(rows.slice(i, i + UPSERT_ROWS))],
    );
    n += r.rowCount ?? 0;
  }
  return n;
}

async function recordQuarantine(c: pg.ClientBase, migrationName: string, entries: QuarantineEntry[]): Promise<void> {
  if (!entries.length) return;
  await c.query(
    `INSERT INTO mgr.image_quarantine (migration_name, key, kind, reason_code, reason, raw)
     SELECT $1, key, kind, reason_code, reason, raw FROM jsonb_to_recordset($2::jsonb) AS r(key text, kind text, reason_code text, reason text, raw jsonb)
     ON CONFLICT (migration_name, key) DO UPDATE SET kind = EXCLUDED.kind, reason_code = EXCLUDED.reason_code, reason = EXCLUDED.reason, raw = EXCLUDED.raw`,
    [migrationName, JSON.stringify(entries)],
  );
}

// ---------------------------------------------------------------------------------------------
// the final job: aliases, then the integrity check

/**
 * Resolves every alias (multi-hop, at most 8 lookups as ImageRef.resolve_alias) to the image
 * row of its canonical name and upserts it. One alias → one row (`alias` is unique): the
 * x86_64 row when several architectures share the name.
 */
async function migrateAliases(ctx: BbmContext): Promise<WorkResult> {
  const { stores, migration: m } = ctx;
  const revision = revisionOf(m);
  const registries = await configuredRegistryNames(stores);
  // Hops may lead anywhere among the aliases: hold them all (aliases are few, unlike tags).
  const all: EtcdKV[] = [];
  for await (const kvs of rangePages(stores.etcd, { from: ALIASES_PREFIX, end: prefixEndKey(ALIASES_PREFIX), revision })) all.push(...kvs);
  const targets = new Map(all.map((kv) => [unquote(kv.key.slice(ALIASES_PREFIX.length)), kv.value]));
  let written = 0;
  let skipped = 0;
  for (let i = 0; i < all.length; i += ALIAS_CHUNK) {
    const kvs = all.slice(i, i + ALIAS_CHUNK);
    const resolved: { kv: EtcdKV; alias: string; name: string }[] = [];
    const quarantine: QuarantineEntry[] = [];
    const bad = (kv: EtcdKV, problem: Problem) => quarantine.push(quarantined(kv.key, 'alias', [problem], [[kv.key, kv.value]]));
    for (const kv of kvs) {
      const raw = kv.key.slice(ALIASES_PREFIX.length);
      const alias = unquote(raw);
      if (!alias || quote(alias) !== raw) {
        bad(kv, { code: QUARANTINE_REASON.keyMalformed, message: `alias key ${JSON.stringify(raw)} is not one alias name quoted as Backend.AI quotes` });
        continue;
      }
      // As ImageRef.resolve_alias: the 8th successful lookup in a row is a failure (chain or cycle).
      let target = kv.value;
      let found = 1;
      let next: string | undefined;
      while (found < MAX_ALIAS_HOPS && (next = targets.get(target)) !== undefined) {
        target = next;
        found++;
      }
      if (found >= MAX_ALIAS_HOPS) {
        bad(kv, { code: QUARANTINE_REASON.aliasUnresolved, message: `alias does not resolve within ${MAX_ALIAS_HOPS} lookups (a chain too long, or a cycle)` });
        continue;
      }
      const ref = canonicalReference(target, registries);
      if ('problem' in ref) bad(kv, ref.problem);
      else resolved.push({ kv, alias, name: ref.name });
    }
    const found = await stores.pg.withTransaction(async (c) => {
      const ids = await c.query<{ name: string; id: string }>(
        `SELECT DISTINCT ON (name) name, id::text FROM public.images WHERE name = ANY($1::text[])
         ORDER BY name, (architecture = 'x86_64') DESC, architecture`,
        [[...new Set(resolved.map((r) => r.name))]],
      );
      const byName = new Map(ids.rows.map((r) => [r.name, r.id]));
      const rows: { alias: string; image: string }[] = [];
      for (const r of resolved) {
        const image = byName.get(r.name);
        if (image) rows.push({ alias: r.alias, image });
        else bad(r.kv, { code: QUARANTINE_REASON.aliasUnresolved, message: `alias target ${r.name} is not an image (not in etcd, or quarantined)` });
      }
      if (rows.length) {
        await c.query(
          `INSERT INTO public.image_aliases (alias, image) SELECT alias, image FROM jsonb_to_recordset($1::jsonb) AS r(alias text, image uuid)
           ON CONFLICT (alias) DO UPDATE SET image = EXCLUDED.image`,
          [JSON.stringify(rows)],
        );
      }
      await recordQuarantine(c, m.name, quarantine);
      return rows.length;
    });
    written += found;
    skipped += quarantine.length;
  }
  return { rows: written + skipped, skipped };
}

export interface ImageMigrationCounts {
  /** Tags in etcd at the pinned revision (counted when the migration was enqueued). */
  tags: number;
  imagesWritten: number;
  tagsQuarantined: number;
  aliases: number;
  aliasesWritten: number;
  aliasesQuarantined: number;
  strayKeysQuarantined: number;
  /** Rows now in public.images (rows rescan or earlier runs wrote count too). */
  imagesInTable: number;
}

/** The counts the integrity check compares, and what is wrong with them (empty when consistent). */
export async function imageMigrationCounts(client: pg.ClientBase, m: MigrationRow): Promise<{ counts: ImageMigrationCounts; mismatches: string[] }> {
  const r = await client.query<{ batch_rows: number; batch_skipped: number; final_rows: number | null; final_skipped: number | null; q_tag: number; q_alias: number; q_key: number; images: number }>(
    `SELECT
       (SELECT coalesce(sum(rows), 0)::bigint FROM mgr.batched_background_migration_jobs WHERE migration_id = $1 AND kind = 'batch' AND status = 2) AS batch_rows,
       (SELECT coalesce(sum(skipped), 0)::bigint FROM mgr.batched_background_migration_jobs WHERE migration_id = $1 AND kind = 'batch' AND status = 2) AS batch_skipped,
       (SELECT rows FROM mgr.batched_background_migration_jobs WHERE migration_id = $1 AND kind = 'final' AND status = 2) AS final_rows,
       (SELECT skipped FROM mgr.batched_background_migration_jobs WHERE migration_id = $1 AND kind = 'final' AND status = 2) AS final_skipped,
       (SELECT count(*) FROM mgr.image_quarantine WHERE migration_name = $2 AND kind = 'tag')::bigint AS q_tag,
       (SELECT count(*) FROM mgr.image_quarantine WHERE migration_name = $2 AND kind = 'alias')::bigint AS q_alias,
       (SELECT count(*) FROM mgr.image_quarantine WHERE migration_name = $2 AND kind = 'key')::bigint AS q_key,
       (SELECT count(*) FROM public.images)::bigint AS images`,
    [m.id, m.name],
  );
  const x = r.rows[0]!;
  const counts: ImageMigrationCounts = {
    tags: m.totalTupleCount ?? 0,
    imagesWritten: Number(x.batch_rows) - Number(x.batch_skipped),
    tagsQuarantined: Number(x.q_tag),
    aliases: Number(x.final_rows ?? 0),
    aliasesWritten: Number(x.final_rows ?? 0) - Number(x.final_skipped ?? 0),
    aliasesQuarantined: Number(x.q_alias),
    strayKeysQuarantined: Number(x.q_key),
    imagesInTable: Number(x.images),
  };
  const mismatches: string[] = [];
  if (counts.imagesWritten + counts.tagsQuarantined !== counts.tags) {
    mismatches.push(`etcd has ${counts.tags} tags at revision ${m.pinnedRevision} but ${counts.imagesWritten} rows were written and ${counts.tagsQuarantined} quarantined`);
  }
  if (Number(x.batch_skipped) !== counts.tagsQuarantined) mismatches.push(`batches set aside ${x.batch_skipped} tags but mgr.image_quarantine holds ${counts.tagsQuarantined}`);
  if (counts.imagesInTable < counts.imagesWritten) mismatches.push(`public.images holds ${counts.imagesInTable} rows, fewer than the ${counts.imagesWritten} written`);
  if (x.final_rows !== null && Number(x.final_skipped) !== counts.aliasesQuarantined) {
    mismatches.push(`the alias pass set aside ${x.final_skipped} aliases but mgr.image_quarantine holds ${counts.aliasesQuarantined}`);
  }
  return { counts, mismatches };
}

/** How a failed integrity check starts in failure_error: the migration fails instead of finishing. */
const INTEGRITY_FAILURE = 'integrity check failed';

async function finalizeImages(ctx: BbmContext): Promise<WorkResult> {
  const result = await migrateAliases(ctx);
  // The final job's own counts are not recorded yet: check the batches' side here.
  // The final job's own row is not finished yet, so this checks the batches' side only.
  const { mismatches } = await ctx.stores.pg.withClient((c) => imageMigrationCounts(c, ctx.migration));
  if (mismatches.length) throw new BackgroundMigrationFailure(FAILURE_CODE.unknown, `${INTEGRITY_FAILURE}: ${mismatches.join('; ')}`);
  return result;
}

/** Lines and counts for the operator; throws MgrError('integrity') when the counts disagree. */
export async function imageMigrationReport(client: pg.ClientBase, m: MigrationRow): Promise<MigrationReport> {
  const { counts, mismatches } = await imageMigrationCounts(client, m);
  if (mismatches.length) throw new MgrError('integrity', `image migration ${m.name}: ${mismatches.join('; ')}`, { details: { counts } });
  const q = await client.query<{ key: string; kind: string; reason_code: string; reason: string }>(
    'SELECT key, kind, reason_code, reason FROM mgr.image_quarantine WHERE migration_name = $1 ORDER BY id LIMIT 1000',
    [m.name],
  );
  const lines = [
    `etcd tags at revision ${m.pinnedRevision}: ${counts.tags} = ${counts.imagesWritten} image rows written + ${counts.tagsQuarantined} quarantined (checked)`,
    `aliases: ${counts.aliases} = ${counts.aliasesWritten} written + ${counts.aliasesQuarantined} quarantined`,
    ...(counts.strayKeysQuarantined ? [`stray keys quarantined: ${counts.strayKeysQuarantined}`] : []),
    ...q.rows.slice(0, 50).map((e) => `quarantined ${e.kind} ${e.key}: [${e.reason_code}] ${e.reason}`),
    ...(q.rows.length > 50 ? [`… and more: SELECT key, reason FROM mgr.image_quarantine WHERE migration_name = '${m.name}'`] : []),
    'etcd keys were left in place; nothing was deleted',
  ];
  return { counts: { ...counts }, lines, details: { quarantine: q.rows } };
}

export const imagesFromEtcdMigration: BackgroundMigrationDefinition = {
  name: IMAGES_FROM_ETCD,
  cursorKind: 'etcd_range',
  nextBatch: nextImageBatch,
  work: writeImageBatch,
  estimateTotal: async (ctx) => (await countEtcdImages(ctx.stores.etcd, revisionOf(ctx.migration))).tags,
  finalize: finalizeImages,
  report: (ctx) => ctx.stores.pg.withClient((c) => imageMigrationReport(c, ctx.migration)),
};

/** Makes images_from_etcd known to this process's workers (idempotent). */
export function registerImageMigrations(): void {
  registerBackgroundMigration(imagesFromEtcdMigration);
}

/**
 * Enqueues images_from_etcd pinned to etcd's current revision with its exact tag count, or
 * returns the existing one (an upgrade rerun must not re-pin it).
 */
export async function enqueueImagesFromEtcd(
  stores: Stores,
  opts: { batchSize?: number; maxAttempts?: number } = {},
): Promise<{ migration: MigrationRow; created: boolean; counts?: EtcdImageCounts }> {
  registerImageMigrations();
  await stores.pg.withClient(ensureImageMigrationTables);
  const existing = await stores.pg.withClient((c) => findMigration(c, IMAGES_FROM_ETCD));
  if (existing) return { migration: existing, created: false };
  const counts = await countEtcdImages(stores.etcd);
  const r = await stores.pg.withTransaction(async (c) => {
    const enqueued = await enqueueBackgroundMigration(c, {
      name: IMAGES_FROM_ETCD,
      jobSignatureName: IMAGES_FROM_ETCD,
      batchSize: opts.batchSize ?? DEFAULT_IMAGE_BATCH_SIZE,
      cursorKind: 'etcd_range',
      etcdPrefix: IMAGES_PREFIX,
      pinnedRevision: counts.revision,
      minValue: counts.firstKey,
      maxValue: counts.lastKey,
      totalEstimate: counts.tags,
      maxAttempts: opts.maxAttempts,
    });
    if (enqueued.created) {
      await c.query('DELETE FROM mgr.etcd_range_fences WHERE migration_name = $1', [IMAGES_FROM_ETCD]);
      await c.query('INSERT INTO mgr.etcd_range_fences (migration_name, key) SELECT $1, unnest($2::text[])', [IMAGES_FROM_ETCD, counts.fences]);
    }
    return enqueued;
  });
  return { ...r, counts };
}

// ---------------------------------------------------------------------------------------------
// the 22.03 upgrade steps

function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The exact command that finishes the migration by hand. */
export function finishImagesCommand(ctx: Pick<StepContext, 'options'>): string {
  return `${ctx.options.mgrCommand} -f ${shellQuote(ctx.options.managerTomlPath)} background-migrate run ${IMAGES_FROM_ETCD}`;
}

const REINITIALIZE_WARNING =
  '!!! --reinitialize-images: NO image metadata was copied from etcd. images and image_aliases are EMPTY: ' +
  'every image, alias and hand-set resource limit of 21.x is absent until `mgr image rescan` runs (aliases and limits must be re-created by hand). ' +
  'The etcd images/ keys are untouched.';

/**
 * 22.03 step after 015d84d5a5ef: copies etcd's image metadata into the new tables (Backend.AI's
 * own upgrade leaves them empty). Inline by default; with --background it only enqueues.
 */
export function imagesFromEtcdStep(): Step {
  return {
    id: '22.03/images-from-etcd',
    title: 'Copy images, aliases and hand-set resource limits from etcd into images / image_aliases',
    kind: 'data',
    async plan(ctx): Promise<Change[]> {
      const untouched: Change = { store: 'etcd', action: 'read only: the etcd images/ keys stay in place, nothing is deleted' };
      if (ctx.options.reinitializeImages) {
        return [{ store: 'postgres', action: 'copy NOTHING (--reinitialize-images): images and image_aliases start empty; run `mgr image rescan` afterwards' }, untouched];
      }
      const existing = await ctx.stores.pg.withClient((c) => findMigration(c, IMAGES_FROM_ETCD));
      const c = await countEtcdImages(ctx.stores.etcd, existing?.pinnedRevision ?? undefined);
      return [
        {
          store: 'postgres',
          action:
            `copy ${c.tags} image tags and ${c.aliases} aliases (etcd revision ${c.revision}) into images / image_aliases as background migration ${IMAGES_FROM_ETCD}` +
            (existing ? ` (already enqueued, ${existing.rowsDone} tags done)` : '') +
            (ctx.options.background ? '; left to `background-migrate run` workers' : '; run inline'),
          detail: 'malformed entries go to mgr.image_quarantine; etcd tags = rows written + quarantined is checked at the end',
        },
        untouched,
      ];
    },
    async apply(ctx) {
      if (ctx.options.reinitializeImages) {
        return { summary: 'images NOT copied (--reinitialize-images): images and image_aliases start empty', warnings: [REINITIALIZE_WARNING], skipped: true };
      }
      const { migration } = await enqueueImagesFromEtcd(ctx.stores);
      const command = finishImagesCommand(ctx);
      if (ctx.options.background) {
        return {
          summary: `enqueued ${IMAGES_FROM_ETCD} (${migration.totalTupleCount ?? 0} tags at etcd revision ${migration.pinnedRevision}) for background workers`,
          counts: { tags: migration.totalTupleCount ?? 0 },
          warnings: [`the images table fills as background workers run; the upgrade is not complete until it is finished: ${command}`],
        };
      }
      const summary = await runBackgroundMigrations(ctx.stores, {
        names: [IMAGES_FROM_ETCD],
        workers: 2,
        signal: ctx.signal,
        log: ctx.log,
        onProgress: (e) => ctx.progress({ done: e.rowsDone, total: e.total ?? undefined, unit: 'tags', message: e.kind === 'final' ? 'aliases' : '' }),
      });
      const failure = summary.migrations[0]?.failureError;
      if (failure?.startsWith(INTEGRITY_FAILURE)) throw new MgrError('integrity', `image migration ${IMAGES_FROM_ETCD}: ${failure}`, { hint: 'inspect mgr.batched_background_migration_jobs and mgr.image_quarantine' });
      const error = unfinishedError(summary, command);
      if (error) throw error;
      const report = summary.migrations[0]!.report!;
      const c = report.counts;
      const quarantined = (c.tagsQuarantined ?? 0) + (c.aliasesQuarantined ?? 0) + (c.strayKeysQuarantined ?? 0);
      return {
        summary: `copied ${c.imagesWritten} image tags and ${c.aliasesWritten} aliases from etcd; ${quarantined} entries quarantined`,
        counts: c,
        warnings: quarantined ? report.lines.filter((l) => l.startsWith('quarantined') || l.startsWith('…')) : [],
      };
    },
    async verify(ctx) {
      if (ctx.options.reinitializeImages) return;
      await ctx.stores.pg.withClient(async (c) => {
        const m = await findMigration(c, IMAGES_FROM_ETCD);
        if (!m) throw new MgrError('integrity', `background migration ${IMAGES_FROM_ETCD} was not enqueued`);
        if (m.finishedAt === null) {
          if (ctx.options.background) return;
          throw new MgrError('integrity', `background migration ${IMAGES_FROM_ETCD} is not finished`, { hint: `finish it with: ${finishImagesCommand(ctx)}` });
        }
        await imageMigrationReport(c, m);
      });
    },
  };
}

/**
 * The 22.03 module's last step: 22.03 is not done while images_from_etcd is unfinished (left to
 * background workers, paused or failed). Refuses with exit code 10 and the command that finishes it.
 */
export function ensureImageMigrationFinishedStep(): Step {
  const check = async (ctx: StepContext, log: Logger = silentLogger) => {
    const [st] = await ctx.stores.pg.withClient(async (c) => ((await findMigration(c, IMAGES_FROM_ETCD)) ? backgroundMigrationStatus(c, IMAGES_FROM_ETCD) : []));
    const command = finishImagesCommand(ctx);
    if (!st) throw new MgrError('pending', `background migration ${IMAGES_FROM_ETCD} has not been enqueued`, { hint: `run the upgrade again, or ${command}` });
    if (st.status !== 'finished') {
      log.warn({ migration: IMAGES_FROM_ETCD, status: st.status }, 'image migration not finished');
      throw new MgrError(
        'pending',
        `22.03 is not complete: background migration ${IMAGES_FROM_ETCD} is ${st.status} (${st.progressPct}%, ${st.rowsDone}/${st.totalEstimate ?? '?'} tags)` +
          (st.failureError ? `: ${st.failureError}` : ''),
        { hint: `finish it with: ${command}${st.status === 'paused' ? ` (resume it first: ${command.replace(/ run /, ' resume ')})` : ''}; then run the upgrade again` },
      );
    }
    return st;
  };
  return {
    id: '22.03/images-from-etcd-finished',
    title: `Check that background migration ${IMAGES_FROM_ETCD} is finished`,
    kind: 'data',
    async plan(ctx) {
      return ctx.options.reinitializeImages
        ? []
        : [{ store: 'postgres', action: `refuse to complete 22.03 until background migration ${IMAGES_FROM_ETCD} is finished` }];
    },
    async apply(ctx) {
      if (ctx.options.reinitializeImages) return { summary: 'no image migration to wait for (--reinitialize-images)', skipped: true };
      const st = await check(ctx, ctx.log);
      return { summary: `${IMAGES_FROM_ETCD} is finished (${st.rowsDone} tags)`, counts: { tags: st.rowsDone } };
    },
    async verify(ctx) {
      if (!ctx.options.reinitializeImages) await check(ctx);
    },
  };
}
