import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RegistryConfig } from '../../src/config/shared.js';
import { RegistryClient, RegistryError, nextLink, parseChallenge, parseRetryAfter, type RegistryClientOptions } from '../../src/images/registry-client.js';
import { startRegistry, type RegistryHandle } from '../../src/sandbox/services.js';
import { TEST_SANDBOX_PREFIX } from '../helpers/sandbox.js';
import { RegistryPusher, htpasswdLine, kernelLabels, startHttpServer, startTokenIssuer, type TestServer, type TokenIssuer } from '../helpers/registry-push.js';

function registryConfig(url: string, extra: Partial<RegistryConfig> = {}): RegistryConfig {
  return { name: 'test-registry', url, type: 'docker', username: undefined, password: undefined, projects: [], sslVerify: true, ...extra };
}

const fast: RegistryClientOptions = { retries: 2, retryMinDelayMs: 20, timeoutMs: 5_000 };

async function collect(gen: AsyncGenerator<string[]>): Promise<string[][]> {
  const pages: string[][] = [];
  for await (const p of gen) pages.push(p);
  return pages;
}

/** Runs fn with a client and always closes it. */
async function withClient<T>(cfg: RegistryConfig, opts: RegistryClientOptions, fn: (c: RegistryClient) => Promise<T>): Promise<T> {
  const c = new RegistryClient(cfg, opts);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

describe('registry client against a real distribution registry', () => {
  let dir: string;
  let open: RegistryHandle;
  let basic: RegistryHandle;
  let tokenReg: RegistryHandle;
  let issuer: TokenIssuer;
  const servers: TestServer[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(TEST_SANDBOX_PREFIX);
    await writeFile(path.join(dir, 'htpasswd'), htpasswdLine('alice', 's3cret') + '\n');
    issuer = await startTokenIssuer({ username: 'bob', password: 'hunter2', expiresIn: 2 });
    [open, basic, tokenReg] = await Promise.all([
      startRegistry(path.join(dir, 'open')),
      startRegistry(path.join(dir, 'basic'), { extraConfig: { auth: { htpasswd: { realm: 'mgr-test', path: path.join(dir, 'htpasswd') } } } }),
      startRegistry(path.join(dir, 'token'), { extraConfig: issuer.registryAuth }),
    ]);
    const p = new RegistryPusher(open.url);
    for (let i = 0; i < 5; i++) await p.image(`stable/repo${i}`, 'latest', { labels: kernelLabels() });
    for (let i = 0; i < 5; i++) await p.image('stable/repo0', `t${i}`, { labels: kernelLabels({ n: String(i) }) });
    await p.image('stable/oci', '1.0', { labels: kernelLabels(), format: 'oci' });
    await p.index('stable/multi', 'docker-list', [{ labels: kernelLabels(), architecture: 'amd64' }, { labels: kernelLabels(), architecture: 'arm64' }]);
    await p.index('stable/multi', 'oci-index', [{ labels: kernelLabels(), architecture: 'amd64' }, { labels: kernelLabels(), architecture: 'arm64' }], { format: 'oci' });
    await new RegistryPusher(basic.url, { basic: { username: 'alice', password: 's3cret' } }).image('private/app', 'v1', { labels: kernelLabels() });
    await new RegistryPusher(tokenReg.url, { bearer: (scope) => issuer.mint(scope) }).image('secure/app', 'v1', { labels: kernelLabels() });
    await new RegistryPusher(tokenReg.url, { bearer: (scope) => issuer.mint(scope) }).image('secure/app', 'v2', { labels: kernelLabels() });
    issuer.requests.length = 0;
  });

  afterAll(async () => {
    await Promise.all([open?.stop(), basic?.stop(), tokenReg?.stop(), issuer?.close(), ...servers.map((s) => s.close())]);
    await rm(dir, { recursive: true, force: true });
  });

  it('pages the catalog and tag lists with small n, following relative Link headers', async () => {
    await withClient(registryConfig(open.url), fast, async (c) => {
      const pages = await collect(c.catalog(2));
      expect(pages.length).toBeGreaterThanOrEqual(4);
      expect(pages.every((pg) => pg.length <= 2)).toBe(true);
      expect(pages.flat().sort()).toEqual(['stable/multi', 'stable/oci', 'stable/repo0', 'stable/repo1', 'stable/repo2', 'stable/repo3', 'stable/repo4']);
      expect((await c.tags('stable/repo0', 2)).sort()).toEqual(['latest', 't0', 't1', 't2', 't3', 't4']);
      expect(await c.tags('no/such-repo')).toEqual([]);
    });
  });

  it('reads Docker schema 2 and OCI manifests, manifest lists and OCI indexes, and config labels', async () => {
    await withClient(registryConfig(open.url), fast, async (c) => {
      const docker = await c.manifest('stable/repo1', 'latest');
      expect(docker.kind).toBe('image');
      const oci = await c.manifest('stable/oci', '1.0');
      expect(oci).toMatchObject({ kind: 'image', mediaType: 'application/vnd.oci.image.manifest.v1+json' });
      const list = await c.manifest('stable/multi', 'docker-list');
      const index = await c.manifest('stable/multi', 'oci-index');
      for (const m of [list, index]) {
        expect(m.kind).toBe('index');
        if (m.kind === 'index') expect(m.entries.map((e) => e.platform?.architecture)).toEqual(['amd64', 'arm64']);
      }
      if (index.kind !== 'index' || docker.kind !== 'image') throw new Error('unreachable');
      const child = await c.manifest('stable/multi', index.entries[1]!.digest);
      expect(child.kind).toBe('image');
      if (child.kind !== 'image') throw new Error('unreachable');
      expect((await c.configBlob('stable/multi', child.facts.configDigest)).architecture).toBe('arm64');
      expect((await c.configBlob('stable/repo1', docker.facts.configDigest)).config?.Labels?.['ai.backend.kernelspec']).toBe('1');
      expect(await c.manifest('stable/repo1', 'no-such-tag')).toEqual({ kind: 'missing' });
    });
  });

  it('basic auth: anonymous is told to configure credentials, wrong ones are rejected, right ones work', async () => {
    await expect(withClient(registryConfig(basic.url), fast, (c) => c.ping())).rejects.toThrow(/requires credentials/);
    await expect(withClient(registryConfig(basic.url, { username: 'alice', password: 'wrong' }), fast, (c) => c.ping())).rejects.toThrow(/rejected the username\/password/);
    await withClient(registryConfig(basic.url, { username: 'alice', password: 's3cret' }), fast, async (c) => {
      expect(await c.ping()).toEqual({ kind: 'basic' });
      expect((await collect(c.catalog())).flat()).toEqual(['private/app']);
      expect(await c.tags('private/app')).toEqual(['v1']);
    });
  });

  it('token auth: bearer tokens per scope from the challenge realm, cached until shortly before expiry', async () => {
    await withClient(registryConfig(tokenReg.url, { username: 'bob', password: 'hunter2' }), fast, async (c) => {
      expect(await c.ping()).toMatchObject({ kind: 'bearer', realm: `${issuer.url}/token`, service: 'mgr-test-registry' });
      expect((await collect(c.catalog())).flat()).toEqual(['secure/app']);
      expect((await c.tags('secure/app')).sort()).toEqual(['v1', 'v2']);
      const m1 = await c.manifest('secure/app', 'v1');
      const m2 = await c.manifest('secure/app', 'v2');
      expect(m1.kind).toBe('image');
      expect(m2.kind).toBe('image');
      // one token for the catalog, one for the repository, shared by tags/list and both manifests
      expect(issuer.requests.map((r) => r.scope)).toEqual(['registry:catalog:*', 'repository:secure/app:pull']);
      expect(issuer.requests.every((r) => r.user === 'bob')).toBe(true);
      // the issuer's tokens live 2 s; the client refreshes 0.5 s early
      await new Promise((r) => setTimeout(r, 1_600));
      await c.manifest('secure/app', 'v1');
      expect(issuer.requests.map((r) => r.scope)).toEqual(['registry:catalog:*', 'repository:secure/app:pull', 'repository:secure/app:pull']);
    });
    await expect(
      withClient(registryConfig(tokenReg.url, { username: 'bob', password: 'nope' }), fast, (c) => c.tags('secure/app')),
    ).rejects.toThrow(/token service refused user "bob" for scope repository:secure\/app:pull \(401\)/);
  });

  it('retries 5xx with back-off, then fails naming the URL and status', async () => {
    let hits = 0;
    const s = await startHttpServer((_req, res) => {
      hits++;
      res.writeHead(500).end('internal trouble');
    });
    servers.push(s);
    const err = await withClient(registryConfig(s.url), fast, (c) => c.ping()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryError);
    expect((err as RegistryError).status).toBe(500);
    expect((err as Error).message).toContain(`GET ${s.url}/v2/: the registry answered 500: internal trouble`);
    expect(hits).toBe(3); // first attempt + 2 retries
  });

  it('honours Retry-After on 429 and then succeeds', async () => {
    let hits = 0;
    const s = await startHttpServer((_req, res) => {
      hits++;
      if (hits === 1) res.writeHead(429, { 'retry-after': '1' }).end();
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    servers.push(s);
    const t0 = Date.now();
    expect(await withClient(registryConfig(s.url), fast, (c) => c.ping())).toEqual({ kind: 'anonymous' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_000);
    expect(hits).toBe(2);
  });

  it('times out a registry that never answers, after its retries', async () => {
    let hits = 0;
    const s = await startHttpServer(() => {
      hits++; // never answers
    });
    servers.push(s);
    const t0 = Date.now();
    const err = await withClient(registryConfig(s.url), { retries: 1, retryMinDelayMs: 10, timeoutMs: 300 }, (c) => c.ping()).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/no complete answer within 300 ms/);
    expect(hits).toBe(2);
    expect(Date.now() - t0).toBeLessThan(3_000);
  });

  it('rejects garbage and wrongly shaped JSON with the URL named; follows absolute Link headers', async () => {
    const s = await startHttpServer((req, res) => {
      const url = req.url ?? '';
      if (url === '/v2/') res.writeHead(200).end('{}');
      else if (url.startsWith('/v2/_catalog?n=1&last=b')) res.writeHead(200).end('{"repositories": "not-a-list"}');
      else if (url.startsWith('/v2/_catalog?n=1&last=a')) res.writeHead(200, { link: `<http://127.0.0.1:${s.port}/v2/_catalog?n=1&last=b>; rel="next"` }).end('{"repositories":["b"]}');
      else if (url.startsWith('/v2/_catalog')) res.writeHead(200, { link: `<http://127.0.0.1:${s.port}/v2/_catalog?n=1&last=a>; rel="next"` }).end('{"repositories":["a"]}');
      else if (url.startsWith('/v2/x/tags/list')) res.writeHead(200).end('<html>proxy error</html>');
      else if (url.startsWith('/v2/x/manifests/')) res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end('{"schemaVersion":2,"config":{"digest":"sha256:abc"},"layers":[]}');
      else res.writeHead(404).end();
    });
    servers.push(s);
    await withClient(registryConfig(s.url), fast, async (c) => {
      const seen: string[][] = [];
      const err = await (async () => {
        for await (const pg of c.catalog(1)) seen.push(pg);
      })().catch((e: unknown) => e);
      expect(seen).toEqual([['a'], ['b']]);
      expect((err as Error).message).toBe(`GET ${s.url}/v2/_catalog?n=1&last=b: unexpected catalog: repositories: expected array, got string "not-a-list"`);
      await expect(c.tags('x')).rejects.toThrow(`GET ${s.url}/v2/x/tags/list?n=100: the answer is not JSON: <html>proxy error</html>`);
      await expect(c.manifest('x', 'latest')).rejects.toThrow(/manifests\/latest: unexpected image manifest: config\.digest: expected a digest like sha256:<64 hex>, got string "sha256:abc"; config\.size: required, expected number/);
    });
  });

  it('verifies TLS by default and skips verification only when ssl-verify is false', async () => {
    const certDir = await mkdtemp(path.join(dir, 'tls-'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(certDir, 'k.pem'), '-out', path.join(certDir, 'c.pem'), '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
    const server = https.createServer({ key: await readFile(path.join(certDir, 'k.pem')), cert: await readFile(path.join(certDir, 'c.pem')) }, (_req, res) => res.writeHead(200).end('{}'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `https://127.0.0.1:${(server.address() as { port: number }).port}`;
    try {
      await expect(withClient(registryConfig(url), fast, (c) => c.ping())).rejects.toThrow(/TLS verification failed .*set ssl-verify to false/);
      expect(await withClient(registryConfig(url, { sslVerify: false }), fast, (c) => c.ping())).toEqual({ kind: 'anonymous' });
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('fails fast on a closed port with a connection error', async () => {
    const s = await startHttpServer(() => undefined);
    await s.close();
    await expect(withClient(registryConfig(s.url), { ...fast, retries: 1 }, (c) => c.ping())).rejects.toThrow(/connection failed: .*ECONNREFUSED/);
  });
});

describe('registry protocol details', () => {
  it('parses Link, WWW-Authenticate and Retry-After', () => {
    expect(nextLink({ url: 'http://r:5000/v2/_catalog?n=2', headers: { link: '</v2/_catalog?last=b&n=2>; rel="next"' } })).toBe('http://r:5000/v2/_catalog?last=b&n=2');
    expect(nextLink({ url: 'http://r/v2/x', headers: { link: '<https://h/api?page=1>; rel="prev", <https://h/api?page=3>; rel="next"' } })).toBe('https://h/api?page=3');
    expect(nextLink({ url: 'http://r/', headers: {} })).toBeUndefined();
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:a/b:pull' },
    });
    expect(parseChallenge('Basic realm="x"')?.scheme).toBe('basic');
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(new Date(Date.now() + 60_000).toUTCString())).toBeGreaterThan(50_000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });
});
