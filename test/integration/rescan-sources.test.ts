import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rescanImages } from '../../src/images/rescan.js';
import { startRegistry, type RegistryHandle } from '../../src/sandbox/services.js';
import type { Stores } from '../../src/stores/index.js';
import { RegistryPusher, kernelLabels, load2203Schema, putRegistry, sha256, startHttpServer, startProxy, startTokenIssuer, type TestServer, type TokenIssuer } from '../helpers/registry-push.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

/** (registry, name, architecture) of every images row, sorted. */
async function keys(stores: Stores): Promise<string[]> {
  const res = await stores.pg.pool.query<{ k: string }>(`SELECT registry || ' ' || name || ' ' || architecture AS k FROM images ORDER BY 1`);
  return res.rows.map((r) => r.k);
}

const fastClient = { timeoutMs: 400, retries: 1, retryMinDelayMs: 10 };

describe('rescan sources: Harbor v2 listing, projects, token auth, failing registries', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let harbor: TestServer & { requests: number };
  let tokenReg: RegistryHandle;
  let issuer: TokenIssuer;
  const harborCalls: { url: string; auth: string | undefined }[] = [];
  const stubs: TestServer[] = [];
  /** What the stand-in's project API lists: Harbor names include the project. */
  const harborProjects: Record<string, string[]> = {
    community: ['community/r1', 'community/r2', 'community/r3', 'community/base-tools'],
    stable: ['stable/python'],
  };

  beforeAll(async () => {
    sb = await startTestSandbox({ withRegistry: true });
    stores = await sb.openStores();
    await load2203Schema(stores);
    issuer = await startTokenIssuer({ username: 'robot', password: 'pw' });
    tokenReg = await startRegistry(path.join(sb.dir, 'token-registry'), { extraConfig: issuer.registryAuth });

    const push = new RegistryPusher(sb.registry!.url);
    for (const repo of ['community/r1', 'community/r2', 'community/r3', 'community/base-tools', 'stable/python']) {
      await push.image(repo, 'v1', { labels: kernelLabels() });
    }
    await new RegistryPusher(tokenReg.url, { bearer: (scope) => issuer.mint(scope) }).index('lab/app', '2.0', [
      { labels: kernelLabels(), architecture: 'amd64' },
      { labels: kernelLabels(), architecture: 'arm64' },
    ]);

    // No Harbor can run here: a stand-in serves Harbor v2's project repositories API (Link
    // pagination, basic auth) and proxies the registry API (/v2/...) to the real registry.
    harbor = await startProxy(sb.registry!.url, {
      intercept: (req, res) => {
        const url = new URL(req.url ?? '/', 'http://x');
        const m = /^\/api\/v2\.0\/projects\/([^/]+)\/repositories$/.exec(url.pathname);
        if (!m) return false;
        harborCalls.push({ url: req.url ?? '', auth: req.headers.authorization });
        if (req.headers.authorization !== `Basic ${Buffer.from('admin:harbor-pw').toString('base64')}`) {
          res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized"}]}');
          return true;
        }
        const size = Number(url.searchParams.get('page_size'));
        const page = Number(url.searchParams.get('page') ?? '1');
        const names = harborProjects[decodeURIComponent(m[1]!)] ?? [];
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (page * size < names.length) headers.link = `<${url.pathname}?page=${page + 1}&page_size=${size}>; rel="next"`;
        res.writeHead(200, headers).end(JSON.stringify(names.slice((page - 1) * size, page * size).map((name, i) => ({ id: i + 1, name, artifact_count: 1 }))));
        return true;
      },
    });

    const failing500 = await startHttpServer((_req, res) => res.writeHead(503).end('upstream down'));
    const hanging = await startHttpServer(() => undefined);
    const garbage = await startHttpServer((req, res) => {
      if (req.url === '/v2/') res.writeHead(200).end('{}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"repositories": [1, 2');
    });
    stubs.push(failing500, hanging, garbage);

    await putRegistry(stores, 'local', sb.registry!.url);
    await putRegistry(stores, 'harbor.example', harbor.url, { type: 'harbor2', project: 'community', username: 'admin', password: 'harbor-pw' });
    await putRegistry(stores, 'secure:5000', tokenReg.url, { username: 'robot', password: 'pw' });
    await putRegistry(stores, 'down', failing500.url);
    await putRegistry(stores, 'hangs', hanging.url);
    await putRegistry(stores, 'garbage', garbage.url);
  });

  afterAll(async () => {
    await Promise.all([harbor?.close(), tokenReg?.stop(), issuer?.close(), ...stubs.map((s) => s.close())]);
    await stores?.close();
    await sb?.stop();
  });

  it('harbor2: lists the configured project through the project API with Link pagination and basic auth', async () => {
    const report = await rescanImages(stores, { registry: 'harbor.example', pageSize: 2 });
    const h = report.perRegistry[0]!;
    expect(h).toMatchObject({ name: 'harbor.example', projects: ['community'], added: 3, failed: [] });
    expect(h.skipped).toEqual([{ ref: 'community/base-tools', reason: 'repository name contains "base-" (not a kernel image)' }]);
    expect(await keys(stores)).toEqual([
      'harbor.example harbor.example/community/r1:v1 x86_64',
      'harbor.example harbor.example/community/r2:v1 x86_64',
      'harbor.example harbor.example/community/r3:v1 x86_64',
    ]);
    expect(harborCalls.map((c) => c.url)).toEqual([
      '/api/v2.0/projects/community/repositories?page_size=2',
      '/api/v2.0/projects/community/repositories?page=2&page_size=2',
    ]);
    await expect(rescanImages(stores, { registry: 'harbor.example', project: 'stable' })).rejects.toThrow(
      'registry "harbor.example" has no project "stable"; configured projects: community',
    );
  });

  it('harbor2 --prune deletes only rows of the scanned project that are gone', async () => {
    const q = `INSERT INTO images (name, image, tag, registry, architecture, config_digest, size_bytes, type, labels, resources)
               VALUES ($1, $2, 'v1', 'harbor.example', 'x86_64', $3, 1, 'COMPUTE', '{}', '{}')`;
    await stores.pg.pool.query(q, ['harbor.example/community/gone:v1', 'community/gone', sha256('a')]);
    await stores.pg.pool.query(q, ['harbor.example/other/kept:v1', 'other/kept', sha256('b')]);
    const h = (await rescanImages(stores, { registry: 'harbor.example', prune: true })).perRegistry[0]!;
    expect(h.pruned).toEqual([{ ref: 'harbor.example/community/gone:v1', architecture: 'x86_64', aliases: [] }]);
    expect(await keys(stores)).toContain('harbor.example harbor.example/other/kept:v1 x86_64');
  });

  it('REGISTRY/PROJECT on a docker registry scans only that repository prefix', async () => {
    const report = await rescanImages(stores, { registry: 'local', project: 'stable' });
    expect(report.perRegistry[0]).toMatchObject({ name: 'local', projects: ['stable'], added: 1 });
    expect((await keys(stores)).filter((k) => k.startsWith('local '))).toEqual(['local local/stable/python:v1 x86_64']);
  });

  it('token auth end to end: a multi-arch image behind bearer tokens becomes two rows', async () => {
    const report = await rescanImages(stores, { registry: 'secure:5000' });
    expect(report.perRegistry[0]).toMatchObject({ added: 2, failed: [] });
    expect((await keys(stores)).filter((k) => k.startsWith('secure'))).toEqual([
      'secure:5000 secure:5000/lab/app:2.0 aarch64',
      'secure:5000 secure:5000/lab/app:2.0 x86_64',
    ]);
    expect(issuer.requests.every((r) => r.user === 'robot')).toBe(true);
  });

  it('registries that answer 503, hang or send garbage fail on their own; the others are saved', async () => {
    await stores.pg.pool.query(`DELETE FROM images WHERE registry = 'local'`);
    const t0 = Date.now();
    const report = await rescanImages(stores, { client: fastClient });
    expect(Date.now() - t0).toBeLessThan(10_000);
    const by = Object.fromEntries(report.perRegistry.map((r) => [r.name, r]));
    expect(Object.keys(by).sort()).toEqual(['down', 'garbage', 'hangs', 'harbor.example', 'local', 'secure:5000']);
    expect(by.down!.failed).toEqual([{ registry: 'down', reason: expect.stringMatching(/listing repositories failed: GET http:\/\/127\.0\.0\.1:\d+\/v2\/: the registry answered 503: upstream down/) }]);
    expect(by.hangs!.failed).toEqual([{ registry: 'hangs', reason: expect.stringMatching(/\/v2\/: no complete answer within 400 ms/) }]);
    expect(by.garbage!.failed).toEqual([{ registry: 'garbage', reason: expect.stringMatching(/\/v2\/_catalog\?n=100: the answer is not JSON: \{"repositories": \[1, 2/) }]);
    expect(by.local).toMatchObject({ added: 4, failed: [] }); // community/r1..r3 and stable/python; base-tools is filtered
    expect(by['harbor.example']).toMatchObject({ unchanged: 3, failed: [] });
    expect(report.totals.failed).toBe(3);
    expect((await keys(stores)).filter((k) => k.startsWith('local '))).toHaveLength(4);
  });

  it('--prune never deletes rows of a registry whose listing failed', async () => {
    await stores.pg.pool.query(
      `INSERT INTO images (name, image, tag, registry, architecture, config_digest, size_bytes, type, labels, resources)
       VALUES ('down/x/y:1', 'x/y', '1', 'down', 'x86_64', $1, 1, 'COMPUTE', '{}', '{}')`,
      [sha256('c')],
    );
    const d = (await rescanImages(stores, { registry: 'down', prune: true, client: fastClient })).perRegistry[0]!;
    expect(d.pruned).toEqual([]);
    expect(d.notes).toEqual(['prune withheld: the repository listing did not complete']);
    expect(await keys(stores)).toContain('down down/x/y:1 x86_64');
  });
});
