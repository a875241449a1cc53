import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/errors.js';
import { enterMaintenance, leaveMaintenance } from '../../src/maintenance/index.js';
import type { Stores } from '../../src/stores/index.js';
import { runMgr, spawnMgr } from '../helpers/cli.js';
import { RegistryPusher, kernelLabels, load2203Schema, putRegistry, startHttpServer, type TestServer } from '../helpers/registry-push.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

async function imageCount(stores: Stores): Promise<number> {
  return (await stores.pg.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM images')).rows[0]!.n;
}

describe('mgr image rescan as a process', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let down: TestServer;
  let hangs: TestServer;
  let hangingRequests = 0;

  beforeAll(async () => {
    sb = await startTestSandbox({ withRegistry: true });
    stores = await sb.openStores();
    await load2203Schema(stores);
    const push = new RegistryPusher(sb.registry!.url);
    await push.image('stable/python', '3.9', { labels: kernelLabels() });
    await push.image('stable/r', '1', { labels: kernelLabels() });
    await push.image('stable/plain', '1', { labels: { maintainer: 'x' } });
    down = await startHttpServer((_req, res) => res.writeHead(500).end('no'));
    hangs = await startHttpServer(() => {
      hangingRequests++; // never answers
    });
    await putRegistry(stores, 'cr.local', sb.registry!.url);
  });

  afterAll(async () => {
    await Promise.all([down?.close(), hangs?.close()]);
    await stores?.close();
    await sb?.stop();
  });

  it('--dry-run prints the summary and writes nothing; a plain run saves', async () => {
    const dry = await runMgr(['-f', sb.managerToml, 'image', 'rescan', 'cr.local', '--dry-run']);
    expect(dry.code, dry.stderr).toBe(EXIT.ok);
    expect(dry.stdout).toContain('cr.local: 2 added, 0 updated, 0 unchanged, 1 skipped, 0 failed (dry run: nothing written)');
    expect(dry.stdout).toContain('  skipped 1 (no ai.backend.kernelspec label (not a Backend.AI kernel image)): cr.local/stable/plain:1 (x86_64)');
    expect(await imageCount(stores)).toBe(0);
    const run = await runMgr(['-f', sb.managerToml, 'image', 'rescan', '--json']);
    expect(run.code, run.stderr).toBe(EXIT.ok);
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: true, dryRun: false, totals: { added: 2, failed: 0 } });
    expect(await imageCount(stores)).toBe(2);
  });

  it('exits 8 (partial) when a registry fails, after saving the others', async () => {
    await putRegistry(stores, 'down', down.url);
    await new RegistryPusher(sb.registry!.url).image('stable/python', '3.10', { labels: kernelLabels() });
    try {
      const r = await runMgr(['-f', sb.managerToml, 'image', 'rescan', '--json']);
      expect(r.code, r.stderr).toBe(EXIT.partial);
      const out = JSON.parse(r.stdout);
      expect(out.ok).toBe(false);
      expect(out.perRegistry.find((p: { name: string }) => p.name === 'cr.local')).toMatchObject({ added: 1, unchanged: 2 });
      expect(out.perRegistry.find((p: { name: string }) => p.name === 'down').failed[0].reason).toMatch(/answered 500/);
      expect(await imageCount(stores)).toBe(3);
    } finally {
      await stores.etcd.deletePrefix('config/docker/registry/down');
    }
  });

  it('exits 3 naming the known registries for an unknown one, 2 for a bad flag', async () => {
    const r = await runMgr(['-f', sb.managerToml, 'image', 'rescan', 'nope']);
    expect(r.code).toBe(EXIT.config);
    expect(r.stderr).toContain('unknown registry "nope"; known registries: cr.local');
    const bad = await runMgr(['-f', sb.managerToml, 'image', 'rescan', '--concurrency', '0']);
    expect(bad.code).toBe(EXIT.usage);
    expect(bad.stderr).toContain('--concurrency must be a whole number ≥ 1');
  });

  it('refuses --prune during maintenance (exit 5) but not a plain rescan', async () => {
    await enterMaintenance(stores.etcd, { reason: 'upgrade', by: 'test' });
    try {
      const r = await runMgr(['-f', sb.managerToml, 'image', 'rescan', '--prune']);
      expect(r.code).toBe(EXIT.refused);
      expect(r.stderr).toMatch(/image rescan --prune refused: maintenance mode is on/);
      expect((await runMgr(['-f', sb.managerToml, 'image', 'rescan'])).code).toBe(EXIT.ok);
    } finally {
      await leaveMaintenance(stores.etcd);
    }
  });

  it('Ctrl-C stops a rescan waiting on a registry that hangs: exit 130 at once, nothing written', async () => {
    await putRegistry(stores, 'hangs', hangs.url);
    const before = await imageCount(stores);
    try {
      const child = spawnMgr(['-f', sb.managerToml, 'image', 'rescan', 'hangs']);
      // wait until mgr is really waiting on the registry (its /v2/ probe arrived)
      while (hangingRequests === 0) await new Promise((r) => setTimeout(r, 20));
      const t0 = Date.now();
      child.kill('SIGINT');
      const r = await child.result;
      expect(r.code, r.stderr).toBe(EXIT.interrupted);
      expect(Date.now() - t0).toBeLessThan(3_000); // the registry timeout is 20 s
      expect(await imageCount(stores)).toBe(before);
    } finally {
      await stores.etcd.deletePrefix('config/docker/registry/hangs');
    }
  });
});
