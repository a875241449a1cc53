import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rescanImages, type RegistryRescanReport } from '../../src/images/rescan.js';
import { enterMaintenance, leaveMaintenance } from '../../src/maintenance/index.js';
import type { Stores } from '../../src/stores/index.js';
import { RegistryPusher, kernelLabels, load2203Schema, putRegistry, sha256, type PushedImage } from '../helpers/registry-push.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

interface Row {
  id: string;
  name: string;
  architecture: string;
  registry: string;
  image: string;
  tag: string;
  config_digest: string;
  size_bytes: number;
  type: string;
  accelerators: string | null;
  labels: Record<string, string>;
  resources: Record<string, { min?: string; max?: string | null }>;
  xmin: string;
}

async function rows(stores: Stores): Promise<Map<string, Row>> {
  const res = await stores.pg.pool.query<Row>(
    `SELECT id, name, architecture, registry, image, tag, trim(config_digest) AS config_digest, size_bytes, type::text AS type,
            accelerators, labels, resources, xmin::text AS xmin FROM images ORDER BY name, architecture`,
  );
  return new Map(res.rows.map((r) => [`${r.name} ${r.architecture}`, r]));
}

async function tableChecksum(stores: Stores): Promise<string> {
  const res = await stores.pg.pool.query<{ sum: string | null }>(
    `SELECT md5(coalesce(string_agg(t::text || ':' || t.xmin::text, '|' ORDER BY t.id), '')) AS sum FROM images t`,
  );
  const aliases = await stores.pg.pool.query<{ sum: string | null }>(`SELECT md5(coalesce(string_agg(a::text, '|' ORDER BY a.id), '')) AS sum FROM image_aliases a`);
  return `${res.rows[0]!.sum}/${aliases.rows[0]!.sum}`;
}

const REG = 'local-registry';

describe('image rescan into the 22.03 images table (real registry, real PostgreSQL and etcd)', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let push: RegistryPusher;
  const pushed: Record<string, PushedImage> = {};
  let multi: { digest: string; children: PushedImage[] };

  beforeAll(async () => {
    sb = await startTestSandbox({ withRegistry: true });
    stores = await sb.openStores();
    await load2203Schema(stores);
    await putRegistry(stores, REG, sb.registry!.url);
    push = new RegistryPusher(sb.registry!.url);
    pushed.py39 = await push.image('stable/python', '3.9', { labels: kernelLabels({ 'ai.backend.accelerators': 'cuda' }) });
    pushed.pyOci = await push.image('stable/python', '3.10-oci', { labels: kernelLabels(), format: 'oci' });
    pushed.classic = await push.image('stable/classic', '1', { containerConfigLabels: kernelLabels(), labels: { ignored: 'yes' } });
    multi = await push.index('stable/multi', 'latest', [
      { labels: kernelLabels(), architecture: 'amd64' },
      { labels: kernelLabels({ 'ai.backend.resource.min.mem': '512m' }), architecture: 'arm64' },
    ], { format: 'oci' });
    await push.image('stable/plain', '1', { labels: { maintainer: 'someone' } });
    await push.image('stable/base-python', '1', { labels: kernelLabels() });
    // A repository whose manifest points at a config blob that is not an image config.
    const garbage = await push.blob('stable/broken', Buffer.from('this is not json'));
    const layer = await push.blob('stable/broken', randomBytes(32));
    await push.manifest(
      'stable/broken',
      '1',
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
        config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: 16, digest: garbage },
        layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: 32, digest: layer }],
      }),
      'application/vnd.docker.distribution.manifest.v2+json',
    );
  });

  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  let first: RegistryRescanReport;

  it('adds one row per image and architecture, skips non-kernel images with a reason, reports the broken one', async () => {
    const progress: number[] = [];
    const report = await rescanImages(stores, { onProgress: (p) => progress.push(p.done), pageSize: 2 });
    first = report.perRegistry[0]!;
    expect(report.perRegistry.map((r) => r.name)).toEqual([REG]);
    expect(first).toMatchObject({ added: 5, updated: 0, unchanged: 0, pruned: [] });
    expect(first.skipped).toEqual(
      expect.arrayContaining([
        { ref: 'stable/base-python', reason: 'repository name contains "base-" (not a kernel image)' },
        { ref: `${REG}/stable/plain:1 (x86_64)`, reason: 'no ai.backend.kernelspec label (not a Backend.AI kernel image)' },
      ]),
    );
    expect(first.skipped).toHaveLength(2);
    expect(first.failed).toEqual([{ ref: `${REG}/stable/broken:1`, reason: expect.stringMatching(/\/v2\/stable\/broken\/blobs\/sha256:[0-9a-f]{64}: the answer is not JSON: this is not json/) }]);
    expect(report.totals).toEqual({ added: 5, updated: 0, unchanged: 0, skipped: 2, failed: 1, pruned: 0 });
    expect(progress.at(-1)).toBe(6); // tags: python ×2, classic, multi, plain, broken (base-python is never listed)
    const r = await rows(stores);
    expect([...r.keys()]).toEqual([
      `${REG}/stable/classic:1 x86_64`,
      `${REG}/stable/multi:latest aarch64`,
      `${REG}/stable/multi:latest x86_64`,
      `${REG}/stable/python:3.10-oci x86_64`,
      `${REG}/stable/python:3.9 x86_64`,
    ]);
    expect(r.get(`${REG}/stable/python:3.9 x86_64`)).toMatchObject({
      registry: REG,
      image: 'stable/python',
      tag: '3.9',
      config_digest: pushed.py39!.configDigest,
      size_bytes: pushed.py39!.sizeBytes,
      type: 'COMPUTE',
      accelerators: 'cuda',
      labels: kernelLabels({ 'ai.backend.accelerators': 'cuda' }),
      resources: { cpu: { min: '1' }, mem: { min: '256m' } },
    });
    // classic builder: labels from container_config, not config
    expect(r.get(`${REG}/stable/classic:1 x86_64`)!.labels).toEqual(kernelLabels());
    const arm = r.get(`${REG}/stable/multi:latest aarch64`)!;
    expect(arm.config_digest).toBe(multi.children[1]!.configDigest);
    expect(arm.resources).toEqual({ cpu: { min: '1' }, mem: { min: '512m' } });
    expect(r.get(`${REG}/stable/python:3.10-oci x86_64`)!.size_bytes).toBe(pushed.pyOci!.sizeBytes);
  });

  it('leaves unchanged rows untouched, keeps hand-set max limits, and updates a changed digest', async () => {
    await stores.pg.pool.query(
      `UPDATE images SET resources = '{"cpu": {"min": "1", "max": "4"}, "mem": {"min": "256m", "max": null}}' WHERE name = $1`,
      [`${REG}/stable/python:3.9`],
    );
    const before = await rows(stores);
    const again = (await rescanImages(stores)).perRegistry[0]!;
    expect(again).toMatchObject({ added: 0, updated: 0, unchanged: 5 });
    const after = await rows(stores);
    for (const [k, row] of before) expect(after.get(k)!.xmin, `${k} was rewritten`).toBe(row.xmin);

    // A new build of python:3.9: new config (cpu minimum 2) → new digest.
    const rebuilt = await push.image('stable/python', '3.9', { labels: kernelLabels({ 'ai.backend.resource.min.cpu': '2' }) });
    const third = (await rescanImages(stores)).perRegistry[0]!;
    expect(third).toMatchObject({ added: 0, updated: 1, unchanged: 4 });
    const now = await rows(stores);
    const py = now.get(`${REG}/stable/python:3.9 x86_64`)!;
    expect(py.id).toBe(before.get(`${REG}/stable/python:3.9 x86_64`)!.id);
    expect(py.config_digest).toBe(rebuilt.configDigest);
    expect(py.accelerators).toBeNull();
    expect(py.resources).toEqual({ cpu: { min: '2', max: '4' }, mem: { min: '256m', max: null } });
    for (const [k, row] of before) if (!k.includes('python:3.9')) expect(now.get(k)!.xmin, k).toBe(row.xmin);
  });

  it('--dry-run reports what would change and writes nothing', async () => {
    await push.image('stable/python', '3.11', { labels: kernelLabels() });
    const sum = await tableChecksum(stores);
    const report = await rescanImages(stores, { dryRun: true });
    expect(report.dryRun).toBe(true);
    expect(report.perRegistry[0]).toMatchObject({ added: 1, updated: 0, unchanged: 5 });
    expect(await tableChecksum(stores)).toBe(sum);
  });

  it('--prune --dry-run lists stale rows; --prune deletes them and their aliases, and nothing else', async () => {
    await rescanImages(stores); // take python:3.11 in
    const q = (sql: string, params: unknown[] = []) => stores.pg.pool.query(sql, params);
    const other = `'{}'::jsonb`;
    // rows the registry no longer has: a repository that is gone, and a tag deleted below
    await q(`INSERT INTO images (name, image, tag, registry, architecture, config_digest, size_bytes, type, labels, resources)
             VALUES ($1, 'stable/gone', '1', $2, 'x86_64', $3, 1, 'COMPUTE', ${other}, ${other}),
                    ('elsewhere/stable/gone:1', 'stable/gone', '1', 'elsewhere', 'x86_64', $3, 1, 'COMPUTE', ${other}, ${other})`,
      [`${REG}/stable/gone:1`, REG, sha256('x')]);
    const oci = (await rows(stores)).get(`${REG}/stable/python:3.10-oci x86_64`)!;
    await q(`INSERT INTO image_aliases (alias, image) VALUES ('python-oci', $1)`, [oci.id]);
    await push.deleteManifest('stable/python', pushed.pyOci!.manifestDigest);
    // the broken repository's row (hand-inserted) must stay: its tag exists, it just could not be read
    await q(`INSERT INTO images (name, image, tag, registry, architecture, config_digest, size_bytes, type, labels, resources)
             VALUES ($1, 'stable/broken', '1', $2, 'x86_64', $3, 1, 'COMPUTE', ${other}, ${other})`, [`${REG}/stable/broken:1`, REG, sha256('y')]);

    const sum = await tableChecksum(stores);
    const dry = (await rescanImages(stores, { prune: true, dryRun: true })).perRegistry[0]!;
    expect([...dry.pruned].sort((x, y) => x.ref.localeCompare(y.ref))).toEqual([
      { ref: `${REG}/stable/gone:1`, architecture: 'x86_64', aliases: [] },
      { ref: `${REG}/stable/python:3.10-oci`, architecture: 'x86_64', aliases: ['python-oci'] },
    ]);
    expect(await tableChecksum(stores)).toBe(sum);

    // maintenance blocks --prune (it deletes), not a plain rescan
    await enterMaintenance(stores.etcd, { reason: 'test', by: 'rescan.test' });
    try {
      await expect(rescanImages(stores, { prune: true })).rejects.toMatchObject({ code: 'refused' });
      expect((await rescanImages(stores, { dryRun: true })).totals.failed).toBe(1);
    } finally {
      await leaveMaintenance(stores.etcd);
    }

    const done = (await rescanImages(stores, { prune: true })).perRegistry[0]!;
    expect(done.pruned.map((p) => p.ref).sort()).toEqual([`${REG}/stable/gone:1`, `${REG}/stable/python:3.10-oci`]);
    const left = await rows(stores);
    expect(left.has(`${REG}/stable/gone:1 x86_64`)).toBe(false);
    expect(left.has(`${REG}/stable/python:3.10-oci x86_64`)).toBe(false);
    expect(left.has('elsewhere/stable/gone:1 x86_64')).toBe(true);
    expect(left.has(`${REG}/stable/broken:1 x86_64`)).toBe(true);
    expect(left.has(`${REG}/stable/python:3.9 x86_64`)).toBe(true);
    expect((await q(`SELECT count(*)::int AS n FROM image_aliases`)).rows[0].n).toBe(0);
  });

  it('an unknown registry is a config error naming the known ones', async () => {
    await expect(rescanImages(stores, { registry: 'nope' })).rejects.toMatchObject({
      code: 'config',
      message: `unknown registry "nope"; known registries: ${REG}`,
    });
  });

  it('refuses before touching any registry when the database has no images table (not 22.03 yet)', async () => {
    await stores.pg.pool.query('ALTER TABLE images RENAME TO images_hidden');
    try {
      await expect(rescanImages(stores)).rejects.toMatchObject({ code: 'refused', message: expect.stringContaining('the images table does not exist') });
    } finally {
      await stores.pg.pool.query('ALTER TABLE images_hidden RENAME TO images');
    }
  });
});
