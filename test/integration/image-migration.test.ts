import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { load2203Schema, putRegistry } from '../helpers/registry-push.js';
import type { Stores } from '../../src/stores/index.js';
import { quote } from '../../src/stores/etcd.js';
import { MgrError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { Rng } from '../../src/sandbox/seed-random.js';
import { etcdImageKeys, generateSeedImages, imageRef, writeEtcdImages, type SeedImage } from '../../src/sandbox/seed-etcd-images.js';
import { backgroundMigrationStatus, getMigration, runBackgroundMigrations } from '../../src/bbm/index.js';
import {
  IMAGES_FROM_ETCD,
  enqueueImagesFromEtcd,
  ensureImageMigrationFinishedStep,
  imagesFromEtcdStep,
} from '../../src/images/etcd-migration.js';
import type { StepContext, UpgradeOptions } from '../../src/engine/types.js';

/**
 * images_from_etcd on real etcd and PostgreSQL: 1,500 seeded tags in the 21.03 layout plus
 * hand-made entries (nested tag names, multi-hop aliases, one malformed entry of each kind).
 */

const DIGEST = `sha256:${'cd'.repeat(32)}`;
const PY = `images/cr.backend.ai/${quote('stable/python')}`;

/** The runbook statements (test/fixtures/gitlab-bbm-runbook.sql), by their comment label. */
function runbookStatement(label: 'pause' | 'start' | 'view'): string {
  const text = readFileSync(path.join(PACKAGE_ROOT, 'test/fixtures/gitlab-bbm-runbook.sql'), 'utf8');
  const m = new RegExp(`^-- ${label}\\n([\\s\\S]*?;)`, 'm').exec(text);
  return m![1]!.replace('<migration_name>', IMAGES_FROM_ETCD);
}

/** A well-formed extra tag: "3.9" next to the seeded "3.9-ubuntu20.04" (their keys interleave), with a hand-set max. */
const PY39: SeedImage = {
  registry: 'cr.backend.ai',
  image: 'stable/python',
  tag: '3.9',
  digest: DIGEST,
  sizeBytes: 123,
  labels: { 'ai.backend.kernelspec': '1', 'ai.backend.resource.min.mem': '1g' },
  resources: { mem: { min: '1g', max: '32g' } },
  aliases: [],
};

/** One malformed entry per quarantine reason: key → the reason code it must get. */
const MALFORMED: { kvs: Record<string, string>; key: string; kind: 'tag' | 'alias' | 'key'; reason: string }[] = [
  { key: `${PY}/bad-digest`, kind: 'tag', reason: 'digest_invalid', kvs: { [`${PY}/bad-digest`]: 'not-a-digest', [`${PY}/bad-digest/size_bytes`]: '1' } },
  { key: `${PY}/no-digest`, kind: 'tag', reason: 'digest_missing', kvs: { [`${PY}/no-digest/size_bytes`]: '1' } },
  {
    key: 'images/gone.example.com/x%2Fy/1.0',
    kind: 'tag',
    reason: 'registry_unknown',
    kvs: { 'images/gone.example.com/x%2Fy': '1', 'images/gone.example.com/x%2Fy/1.0': DIGEST, 'images/gone.example.com/x%2Fy/1.0/size_bytes': '1' },
  },
  { key: 'images/cr.backend.ai/no%2Fmarker/1.0', kind: 'tag', reason: 'repository_marker_missing', kvs: { 'images/cr.backend.ai/no%2Fmarker/1.0': DIGEST, 'images/cr.backend.ai/no%2Fmarker/1.0/size_bytes': '1' } },
  { key: `${PY}/bad-size`, kind: 'tag', reason: 'size_invalid', kvs: { [`${PY}/bad-size`]: DIGEST, [`${PY}/bad-size/size_bytes`]: '12 MB' } },
  {
    key: `${PY}/bad-limit`,
    kind: 'tag',
    reason: 'resource_invalid',
    kvs: { [`${PY}/bad-limit`]: DIGEST, [`${PY}/bad-limit/size_bytes`]: '1', [`${PY}/bad-limit/resource/mem/max`]: 'lots' },
  },
  {
    key: `${PY}/bad-label`,
    kind: 'tag',
    reason: 'label_invalid',
    kvs: { [`${PY}/bad-label`]: DIGEST, [`${PY}/bad-label/size_bytes`]: '1', [`${PY}/bad-label/labels/a//b`]: 'x' },
  },
  { key: `${PY}/bad-json`, kind: 'tag', reason: 'json_invalid', kvs: { [`${PY}/bad-json`]: DIGEST, [`${PY}/bad-json/size_bytes`]: '1', [`${PY}/bad-json/labels`]: '{"a": ' } },
  {
    key: 'images/cr.backend.ai/stable%2fbroken/1.0',
    kind: 'tag',
    reason: 'key_malformed',
    kvs: { 'images/cr.backend.ai/stable%2fbroken': '1', 'images/cr.backend.ai/stable%2fbroken/1.0': DIGEST, 'images/cr.backend.ai/stable%2fbroken/1.0/size_bytes': '1' },
  },
  { key: 'images/strayvalue', kind: 'key', reason: 'key_malformed', kvs: { 'images/strayvalue': 'x' } },
  { key: 'images/_aliases/nowhere', kind: 'alias', reason: 'alias_unresolved', kvs: { 'images/_aliases/nowhere': 'cr.backend.ai/stable/nothing:1' } },
  { key: 'images/_aliases/with-url', kind: 'alias', reason: 'alias_target_invalid', kvs: { 'images/_aliases/with-url': 'https://cr.backend.ai/stable/python:3.9' } },
  { key: 'images/_aliases/loop-a', kind: 'alias', reason: 'alias_unresolved', kvs: { 'images/_aliases/loop-a': 'loop-b', 'images/_aliases/loop-b': 'loop-a' } },
  { key: 'images/_aliases/to-quarantined', kind: 'alias', reason: 'alias_unresolved', kvs: { 'images/_aliases/to-quarantined': 'cr.backend.ai/stable/python:bad-size' } },
];
/** loop-b is quarantined too (the same cycle seen from the other end). */
const MALFORMED_TAGS = MALFORMED.filter((m) => m.kind === 'tag').length;
const MALFORMED_ALIASES = MALFORMED.filter((m) => m.kind === 'alias').length + 1;

/** Good aliases beyond the seeded ones: two and seven hops (ImageRef gives up at the 8th lookup). */
const EXTRA_ALIASES: Record<string, string> = {
  'images/_aliases/py': 'python',
  [`images/_aliases/${quote('py3.9')}`]: 'cr.backend.ai/stable/python:3.9',
  ...Object.fromEntries(Array.from({ length: 6 }, (_, i) => [`images/_aliases/hop${i}`, i === 5 ? 'python' : `hop${i + 1}`])),
};

describe('images_from_etcd (real etcd and PostgreSQL)', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let seeds: SeedImage[];
  const sql = (text: string, params: unknown[] = []) => stores.pg.withClient((c) => c.query(text, params));
  const reset = () => sql(`DELETE FROM mgr.batched_background_migrations; TRUNCATE mgr.image_quarantine; TRUNCATE images CASCADE`);
  const ctx = (options: Partial<UpgradeOptions> = {}): StepContext => ({
    stores,
    log: silentLogger,
    options: {
      lockBackend: 'pg_advisory',
      reinitializeImages: false,
      background: false,
      skipRedisAof: true,
      noSchedule: true,
      scheduleRetention: '30d',
      scheduleAt: '03:00',
      cronFile: undefined,
      managerTomlPath: sb.managerToml,
      mgrCommand: 'mgr',
      ...options,
    },
    signal: new AbortController().signal,
    progress: () => undefined,
    checkpoint: { get: async () => undefined, set: async () => undefined },
    release: '22.03',
  });
  const goodTags = () => seeds.length + 1;

  beforeAll(async () => {
    sb = await startTestSandbox();
    const setup = await sb.openStores();
    await load2203Schema(setup);
    await putRegistry(setup, 'cr.backend.ai', 'https://cr.backend.ai');
    await putRegistry(setup, 'index.docker.io', 'https://registry-1.docker.io');
    await putRegistry(setup, 'localhost:5000', 'http://localhost:5000');
    seeds = [...generateSeedImages(new Rng(20210309), { count: 1500, tagsPerRepository: 50, maxRate: 0.2 })];
    await writeEtcdImages(setup.etcd, seeds);
    await setup.etcd.putMany(etcdImageKeys(PY39).slice(1));
    const extra = Object.assign({}, ...MALFORMED.map((m) => m.kvs), EXTRA_ALIASES) as Record<string, string>;
    await setup.etcd.putMany(Object.entries(extra).map(([key, value]) => ({ key, value })));
    await setup.close();
    stores = await sb.openStores(); // with the registries just configured
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  it('copies every tag into one images row with its content, resolves aliases, and leaves etcd untouched', async () => {
    const revisionBefore = await stores.etcd.revision();
    await enqueueImagesFromEtcd(stores, { batchSize: 100 });
    const summary = await runBackgroundMigrations(stores, { names: [IMAGES_FROM_ETCD], workers: 2 });
    expect(summary.outcome).toBe('finished');
    expect(await stores.etcd.revision()).toBe(revisionBefore); // nothing was written to etcd

    const rows = (await sql(`SELECT name, image, tag, registry, architecture, trim(config_digest) AS digest, size_bytes::text AS size, type::text,
                              accelerators, labels, resources FROM images`)).rows;
    expect(rows).toHaveLength(goodTags());
    const byName = new Map(rows.map((r) => [r.name as string, r]));
    expect(byName.size).toBe(rows.length);
    for (const s of [...seeds, PY39]) {
      const r = byName.get(imageRef(s));
      expect(r, imageRef(s)).toBeDefined();
      expect(r).toEqual({
        name: imageRef(s),
        image: s.image,
        tag: s.tag,
        registry: s.registry,
        architecture: 'x86_64',
        digest: s.digest,
        size: String(s.sizeBytes),
        type: 'COMPUTE',
        accelerators: s.labels['ai.backend.accelerators'] ?? null,
        labels: s.labels,
        resources: Object.fromEntries(Object.entries(s.resources).map(([slot, v]) => [slot, { min: v.min, max: v.max ?? null }])),
      });
    }
    // hand-set maximums are kept (the point of copying instead of rescanning)
    const withMax = seeds.filter((s) => Object.values(s.resources).some((v) => v.max !== undefined));
    expect(withMax.length).toBeGreaterThan(10);
    expect(byName.get('cr.backend.ai/stable/python:3.9')!.resources).toEqual({ mem: { min: '1g', max: '32g' } });

    const aliases = new Map(
      (await sql('SELECT a.alias, i.name FROM image_aliases a JOIN images i ON i.id = a.image')).rows.map((r) => [r.alias as string, r.name as string]),
    );
    const seededAliases = seeds.flatMap((s) => s.aliases.map((a) => [a, imageRef(s)] as const));
    expect(seededAliases.length).toBeGreaterThan(50);
    for (const [alias, name] of seededAliases) expect(aliases.get(alias), alias).toBe(name);
    expect(aliases.get('python')).toBe('cr.backend.ai/stable/python:3.9-ubuntu20.04');
    expect(aliases.get('py')).toBe('cr.backend.ai/stable/python:3.9-ubuntu20.04'); // alias → alias → image
    expect(aliases.get('hop0')).toBe('cr.backend.ai/stable/python:3.9-ubuntu20.04'); // seven lookups
    expect(aliases.get('py3.9')).toBe('cr.backend.ai/stable/python:3.9');
    expect(aliases.size).toBe(seededAliases.length + Object.keys(EXTRA_ALIASES).length);

    const report = summary.migrations[0]!.report!;
    expect(report.counts).toMatchObject({
      tags: goodTags() + MALFORMED_TAGS,
      imagesWritten: goodTags(),
      tagsQuarantined: MALFORMED_TAGS,
      aliasesWritten: aliases.size,
      aliasesQuarantined: MALFORMED_ALIASES,
      strayKeysQuarantined: 1,
    });
    expect(report.lines[0]).toBe(
      `etcd tags at revision ${revisionBefore}: ${goodTags() + MALFORMED_TAGS} = ${goodTags()} image rows written + ${MALFORMED_TAGS} quarantined (checked)`,
    );
  });

  it('quarantines each malformed entry with its reason instead of stopping, and lists them', async () => {
    const q = new Map(
      (await sql(`SELECT key, kind, reason_code, reason, raw FROM mgr.image_quarantine WHERE migration_name = $1`, [IMAGES_FROM_ETCD])).rows.map((r) => [r.key as string, r]),
    );
    expect(new Set(MALFORMED.map((m) => m.reason)).size).toBeGreaterThanOrEqual(10);
    for (const m of MALFORMED) {
      expect(q.get(m.key), m.key).toMatchObject({ kind: m.kind, reason_code: m.reason });
      expect(q.get(m.key)!.reason.length).toBeGreaterThan(15);
    }
    expect(q.get('images/_aliases/loop-b')).toMatchObject({ reason_code: 'alias_unresolved' });
    expect(q.size).toBe(MALFORMED.length + 1);
    // the whole entry is kept as evidence
    expect(q.get(`${PY}/bad-limit`)!.raw).toEqual(MALFORMED.find((m) => m.key === `${PY}/bad-limit`)!.kvs);
    // and the summary lists them
    const m = await stores.pg.withClient((c) => getMigration(c, IMAGES_FROM_ETCD));
    const { imageMigrationReport } = await import('../../src/images/etcd-migration.js');
    const report = await stores.pg.withClient((c) => imageMigrationReport(c, m));
    for (const x of MALFORMED) expect(report.lines.some((l) => l.includes(x.key) && l.includes(x.reason)), x.key).toBe(true);
  });

  it('pauses between batches on the runbook UPDATE (exact text) and resumes to the end with the other', async () => {
    await reset();
    await enqueueImagesFromEtcd(stores, { batchSize: 20 });
    let paused: Promise<unknown> | undefined;
    const first = await runBackgroundMigrations(stores, {
      names: [IMAGES_FROM_ETCD],
      onProgress: () => {
        // An operator in psql: mgr's schema on the session's search_path, then the runbook text.
        paused ??= stores.pg.withClient(async (c) => {
          await c.query('SET search_path = mgr, public');
          const r = await c.query(runbookStatement('pause'));
          expect(r.rowCount).toBe(1);
        });
      },
    });
    await paused;
    expect(first.outcome).toBe('paused');
    const mid = await stores.pg.withClient((c) => backgroundMigrationStatus(c, IMAGES_FROM_ETCD));
    expect(mid[0]).toMatchObject({ status: 'paused', jobs: { active: 0, failed: 0 } });
    expect(mid[0]!.rowsDone).toBeGreaterThan(0);
    expect(mid[0]!.rowsDone).toBeLessThan(goodTags());
    expect(mid[0]!.progressPct).toBeLessThan(100);
    const rowsAtPause = (await sql('SELECT count(*)::int AS n FROM images')).rows[0].n;
    const view = await stores.pg.withClient(async (c) => {
      await c.query('SET search_path = mgr, public');
      return c.query(runbookStatement('view'));
    });
    expect(view.rows[0]).toMatchObject({ name: IMAGES_FROM_ETCD, status: 0 });
    // paused stays paused: a run does nothing
    expect((await runBackgroundMigrations(stores, { names: [IMAGES_FROM_ETCD] })).outcome).toBe('paused');
    expect((await sql('SELECT count(*)::int AS n FROM images')).rows[0].n).toBe(rowsAtPause);

    await stores.pg.withClient(async (c) => {
      await c.query('SET search_path = mgr, public');
      await c.query(runbookStatement('start'));
    });
    const second = await runBackgroundMigrations(stores, { names: [IMAGES_FROM_ETCD], workers: 2 });
    expect(second.outcome).toBe('finished');
    expect((await sql('SELECT count(*)::int AS n FROM images')).rows[0].n).toBe(goodTags());
    expect(second.migrations[0]!.report!.counts).toMatchObject({ imagesWritten: goodTags(), tagsQuarantined: MALFORMED_TAGS });
    // batches ran once each: progress equals the tag count exactly
    expect(second.migrations[0]!.rowsDone).toBe(goodTags() + MALFORMED_TAGS);
  });

  it('fails past the attempt limit when writes keep failing, and finishes on the next run once the cause is fixed', async () => {
    await reset();
    await sql(`ALTER TABLE images ADD CONSTRAINT test_no_julia CHECK (image <> 'stable/julia')`);
    try {
      await enqueueImagesFromEtcd(stores, { batchSize: 200, maxAttempts: 2 });
      const failed = await runBackgroundMigrations(stores, { names: [IMAGES_FROM_ETCD] });
      expect(failed.outcome).toBe('failed');
      expect(failed.migrations[0]).toMatchObject({ status: 'failed', failureErrorCode: 4 });
      expect(failed.migrations[0]!.failureError).toMatch(/failed 2 times: .*test_no_julia/);
    } finally {
      await sql('ALTER TABLE images DROP CONSTRAINT test_no_julia');
    }
    const again = await runBackgroundMigrations(stores, { names: [IMAGES_FROM_ETCD] });
    expect(again.outcome).toBe('finished');
    expect((await sql(`SELECT count(*)::int AS n FROM images WHERE image = 'stable/julia'`)).rows[0].n).toBe(50);
    expect(again.migrations[0]!.report!.counts.imagesWritten).toBe(goodTags());
  });

  it('upgrade steps: --reinitialize-images copies nothing, loudly; --background enqueues and the last step refuses until finished', async () => {
    await reset();
    const reinit = ctx({ reinitializeImages: true });
    expect((await imagesFromEtcdStep().plan(reinit))[0]!.action).toMatch(/copy NOTHING/);
    const skipped = await imagesFromEtcdStep().apply(reinit);
    expect(skipped.skipped).toBe(true);
    expect(skipped.warnings!.join(' ')).toMatch(/NO image metadata was copied/);
    expect((await sql('SELECT count(*)::int AS n FROM images')).rows[0].n).toBe(0);
    expect((await sql('SELECT count(*)::int AS n FROM mgr.batched_background_migrations')).rows[0].n).toBe(0);
    expect((await ensureImageMigrationFinishedStep().apply(reinit)).skipped).toBe(true);

    const bg = ctx({ background: true });
    const plan = await imagesFromEtcdStep().plan(bg);
    expect(plan[0]!.action).toContain(`copy ${goodTags() + MALFORMED_TAGS} image tags and ${seeds.flatMap((s) => s.aliases).length + Object.keys(EXTRA_ALIASES).length + MALFORMED_ALIASES} aliases`);
    expect(plan[1]).toMatchObject({ store: 'etcd' });
    const enq = await imagesFromEtcdStep().apply(bg);
    expect(enq.counts).toEqual({ tags: goodTags() + MALFORMED_TAGS });
    await imagesFromEtcdStep().verify(bg);
    expect((await sql('SELECT count(*)::int AS n FROM images')).rows[0].n).toBe(0);
    const refused = await ensureImageMigrationFinishedStep()
      .apply(bg)
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(MgrError);
    expect((refused as MgrError).code).toBe('pending');
    expect((refused as MgrError).exitCode).toBe(10);
    expect((refused as MgrError).hint).toContain(`mgr -f ${sb.managerToml} background-migrate run images_from_etcd`);

    // inline (the default) runs what is left and checks the counts
    const inline = ctx();
    const done = await imagesFromEtcdStep().apply(inline);
    expect(done.counts).toMatchObject({ imagesWritten: goodTags(), tagsQuarantined: MALFORMED_TAGS });
    expect(done.warnings!.some((w) => w.includes(`${PY}/bad-json`))).toBe(true);
    await imagesFromEtcdStep().verify(inline);
    expect((await ensureImageMigrationFinishedStep().apply(bg)).summary).toMatch(/finished/);
    // a rerun of the step (crash after apply) changes nothing
    await imagesFromEtcdStep().apply(inline);
    expect((await sql('SELECT count(*)::int AS n FROM images')).rows[0].n).toBe(goodTags());
  });

  it('the integrity check: a count that does not add up fails the migration instead of finishing it (exit code 9 from the step)', async () => {
    // after the fact: evidence removed from the quarantine table
    await sql(`DELETE FROM mgr.image_quarantine WHERE key = $1`, [`${PY}/bad-json`]);
    const verified = await imagesFromEtcdStep()
      .verify(ctx())
      .catch((e: unknown) => e);
    expect(verified).toBeInstanceOf(MgrError);
    expect((verified as MgrError).code).toBe('integrity');
    expect((verified as MgrError).message).toMatch(/written and \d+ quarantined/);

    // during the run: etcd's tag count (taken at enqueue) one more than the batches can find
    await reset();
    await imagesFromEtcdStep().apply(ctx({ background: true }));
    await sql('UPDATE mgr.batched_background_migrations SET total_tuple_count = total_tuple_count + 1');
    const failed = await imagesFromEtcdStep()
      .apply(ctx())
      .catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(MgrError);
    expect((failed as MgrError).code).toBe('integrity');
    expect((failed as MgrError).exitCode).toBe(9);
    const m = await stores.pg.withClient((c) => getMigration(c, IMAGES_FROM_ETCD));
    expect(m.status).toBe(3);
    expect(m.failureError).toMatch(/^integrity check failed: etcd has \d+ tags/);
  });
});
