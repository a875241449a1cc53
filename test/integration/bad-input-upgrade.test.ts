import { readFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/errors.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import type { Stores } from '../../src/stores/index.js';
import { etcdChecksum } from '../helpers/checksums.js';
import { runMgr, type MgrResult } from '../helpers/cli.js';
import { putRegistry, startHttpServer, type TestServer } from '../helpers/registry-push.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { persistExpiringKeys, runBadInputCase, type BadInputCase } from './bad-input-corpus.js';

/**
 * Bad input that must NOT stop an upgrade: malformed 21.03 image entries in etcd
 * (test/fixtures/bad-input/etcd-images-21.03.json) are quarantined by `mgr upgrade`, end to end
 * through the CLI. Then, on the upgraded installation, registries that answer garbage.
 */

interface ImageFixture {
  good: Record<string, string>;
  entries: { key: string; kind: 'tag' | 'alias' | 'key'; reason: string; kvs: Record<string, string> }[];
}
const FIXTURE = JSON.parse(readFileSync(path.join(PACKAGE_ROOT, 'test/fixtures/bad-input/etcd-images-21.03.json'), 'utf8')) as ImageFixture;
const SEEDED_TAGS = 50;
const QUARANTINED_TAGS = FIXTURE.entries.filter((e) => e.kind === 'tag').length;

describe('malformed etcd image entries: quarantined by `mgr upgrade`, never fatal', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let upgrade: MgrResult;
  let etcdImagesBefore: { keys: number; sha256: string };
  let garbage: TestServer;
  let failing: TestServer;
  let misshapen: TestServer;

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await seedInstallation(stores, { kernels: 300, images: SEEDED_TAGS });
    const kvs = { ...FIXTURE.good, ...Object.assign({}, ...FIXTURE.entries.map((e) => e.kvs)) } as Record<string, string>;
    await stores.etcd.putMany(Object.entries(kvs).map(([key, value]) => ({ key, value })));
    etcdImagesBefore = await etcdChecksum(stores.etcd, 'images/');
    upgrade = await runMgr(['-f', sb.managerToml, 'upgrade', '--yes', '--no-backup', '--no-schedule']);
    expect(await persistExpiringKeys(stores)).toBeGreaterThan(0);

    // Registries that answer, but not what a registry should.
    garbage = await startHttpServer((req, res) => {
      if (req.url?.startsWith('/v2/_catalog')) res.writeHead(200, { 'content-type': 'application/json' }).end('<html>Service Temporarily Unavailable');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    failing = await startHttpServer((_req, res) => res.writeHead(500).end('internal server error'));
    misshapen = await startHttpServer((req, res) => {
      if (req.url?.startsWith('/v2/_catalog')) res.writeHead(200, { 'content-type': 'application/json' }).end('{"repositories": "stable/python"}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  afterAll(async () => {
    await Promise.all([garbage?.close(), failing?.close(), misshapen?.close()]);
    await stores?.close();
    await sb?.stop();
  });

  it('the upgrade finishes (exit 0), copies the good tags and leaves etcd untouched', async () => {
    expect(upgrade.code, upgrade.stderr).toBe(EXIT.ok);
    expect(await etcdChecksum(stores.etcd, 'images/')).toEqual(etcdImagesBefore);
    const images = await stores.pg.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM images`);
    expect(images.rows[0]!.n).toBe(SEEDED_TAGS + 1); // the fixture's one good tag
    const good = await stores.pg.pool.query(`SELECT 1 FROM images WHERE name = 'cr.backend.ai/bad-input/fixture:good'`);
    expect(good.rowCount).toBe(1);
    // The finished-check step counts etcd tags = rows + quarantined.
    expect(upgrade.stdout).toContain(`images_from_etcd is finished (${SEEDED_TAGS + 1 + QUARANTINED_TAGS} tags)`);
  });

  it('every malformed entry is in mgr.image_quarantine with its key, kind and reason', async () => {
    const rows = await stores.pg.pool.query<{ key: string; kind: string; reason_code: string; reason: string }>(
      `SELECT key, kind, reason_code, reason FROM mgr.image_quarantine ORDER BY key`,
    );
    const got = rows.rows.map((r) => ({ key: r.key, kind: r.kind, reason: r.reason_code }));
    const expected = FIXTURE.entries.map((e) => ({ key: e.key, kind: e.kind, reason: e.reason }));
    expect(got).toEqual(expect.arrayContaining(expected));
    expect(got).toHaveLength(expected.length);
    for (const r of rows.rows) expect(r.reason, r.key).not.toBe('');
  });

  it('the summary counts them and lists the first few by key and reason, pointing to the rest', () => {
    const total = FIXTURE.entries.length;
    expect(upgrade.stdout).toMatch(new RegExp(`done +22\\.03/images-from-etcd +copied ${SEEDED_TAGS + 1} image tags and \\d+ aliases from etcd; ${total} entries quarantined`));
    const listed = [...upgrade.stdout.matchAll(/^ {2}22\.03\/images-from-etcd: quarantined (tag|alias|key) (\S+): \[(\w+)\] .+$/gm)].map((m) => ({
      kind: m[1],
      key: m[2],
      reason: m[3],
    }));
    expect(listed.length).toBeGreaterThan(0);
    for (const l of listed) expect(FIXTURE.entries.map((e) => ({ kind: e.kind, key: e.key, reason: e.reason }))).toContainEqual(l);
    if (listed.length < total) expect(upgrade.stdout).toContain(`… and ${total - listed.length} more (all of them: --json`);
  });

  const registryCase = (name: string, server: () => TestServer, exit: number, message: RegExp): BadInputCase => ({
    name: `registry: ${name}`,
    args: () => ['-f', sb.managerToml, 'image', 'rescan', `bad-${name}`],
    setup: () => putRegistry(stores, `bad-${name}`, server().url, { type: 'docker' }),
    teardown: async () => void (await stores.etcd.deletePrefix(`config/docker/registry/bad-${name}`)),
    exit,
    stream: 'stdout',
    message,
  });
  const REGISTRY_CASES: BadInputCase[] = [
    registryCase('garbage', () => garbage, EXIT.partial, /FAILED registry bad-garbage: listing repositories failed: GET http:\/\/127\.0\.0\.1:\d+\/v2\/_catalog\?n=\d+: the answer is not JSON: <html>Service Temporarily Unavailable/),
    registryCase('failing', () => failing, EXIT.partial, /FAILED registry bad-failing: listing repositories failed: GET http:\/\/127\.0\.0\.1:\d+\/v2\/: the registry answered 500: internal server error/),
    registryCase('misshapen', () => misshapen, EXIT.partial, /FAILED registry bad-misshapen: listing repositories failed: GET http:\/\/127\.0\.0\.1:\d+\/v2\/_catalog\?n=\d+: unexpected catalog: repositories: expected array, got string "stable\/python"/),
    {
      name: 'registry: unknown REGISTRY argument (exit 3 naming the known ones)',
      args: () => ['-f', sb.managerToml, 'image', 'rescan', 'nope.example.com'],
      exit: EXIT.config,
      message: /unknown registry "nope\.example\.com"; known registries: cr\.backend\.ai\n/,
    },
    {
      name: 'registry: unknown project of a harbor registry',
      args: () => ['-f', sb.managerToml, 'image', 'rescan', 'cr.backend.ai/nope'],
      exit: EXIT.config,
      message: /registry "cr\.backend\.ai" has no project "nope"; configured projects: stable, ngc/,
    },
    {
      name: 'registry: --json of a garbage answer says ok: false with the reason',
      args: () => ['-f', sb.managerToml, 'image', 'rescan', 'bad-garbage', '--json'],
      setup: () => putRegistry(stores, 'bad-garbage', garbage.url, { type: 'docker' }),
      teardown: async () => void (await stores.etcd.deletePrefix('config/docker/registry/bad-garbage')),
      exit: EXIT.partial,
      stream: 'stdout',
      message: /"ok": false/,
      check: (r) => {
        const out = JSON.parse(r.stdout) as { perRegistry: { name: string; failed: { reason: string }[] }[] };
        expect(out.perRegistry[0]!.failed[0]!.reason).toMatch(/the answer is not JSON/);
      },
    },
  ];

  it.for(REGISTRY_CASES)('$name', async (c) => {
    expect(upgrade.code, upgrade.stderr).toBe(EXIT.ok); // these need the 22.03 images table
    await runBadInputCase(c, stores, sb.managerToml);
  });
});
