import { createHash, createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { quote, type Stores } from '../../src/stores/index.js';

/**
 * Test helpers around a real distribution registry: push images over the HTTP API (no docker),
 * run tiny HTTP servers (stand-ins, a delaying proxy) and a JWT token issuer for token auth.
 */

export const MT = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

export type PushAuth =
  | { basic: { username: string; password: string } }
  | { bearer: (scope: string) => string | Promise<string> };

export interface PushedImage {
  repo: string;
  tag: string;
  manifestDigest: string;
  configDigest: string;
  /** Σ layer sizes + config size: what images.size_bytes must hold. */
  sizeBytes: number;
  mediaType: string;
}

export interface ImageSpec {
  labels?: Record<string, string> | null;
  /** Put labels under container_config instead of config (Docker's classic builder). */
  containerConfigLabels?: Record<string, string> | null;
  architecture?: string;
  os?: string;
  format?: 'docker' | 'oci';
  /** Layer contents; default one small random layer. */
  layers?: Buffer[];
}

export const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export class RegistryPusher {
  private readonly pushed = new Set<string>();
  constructor(
    readonly url: string,
    private readonly auth?: PushAuth,
  ) {}

  private async headers(repo: string): Promise<Record<string, string>> {
    if (!this.auth) return {};
    if ('basic' in this.auth) {
      const { username, password } = this.auth.basic;
      return { authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` };
    }
    return { authorization: `Bearer ${await this.auth.bearer(`repository:${repo}:pull,push`)}` };
  }

  private async req(repo: string, url: string, init: RequestInit, expect: number[]): Promise<Response> {
    const res = await fetch(new URL(url, this.url), { ...init, headers: { ...(await this.headers(repo)), ...(init.headers as Record<string, string>) } });
    if (!expect.includes(res.status)) throw new Error(`${init.method ?? 'GET'} ${url}: ${res.status} ${await res.text()}`);
    return res;
  }

  /** Monolithic blob upload: POST an upload, PUT the bytes with ?digest=. Returns the digest. */
  async blob(repo: string, data: Buffer): Promise<string> {
    const digest = sha256(data);
    if (this.pushed.has(`${repo}@${digest}`)) return digest;
    const start = await this.req(repo, `/v2/${repo}/blobs/uploads/`, { method: 'POST' }, [202]);
    const location = new URL(start.headers.get('location')!, this.url);
    location.searchParams.set('digest', digest);
    await this.req(repo, location.toString(), { method: 'PUT', body: data, headers: { 'content-type': 'application/octet-stream' } }, [201]);
    this.pushed.add(`${repo}@${digest}`);
    return digest;
  }

  /** PUT a manifest body under a tag or digest with its media type. Returns the manifest digest. */
  async manifest(repo: string, reference: string, body: string | Buffer, contentType: string): Promise<string> {
    const res = await this.req(repo, `/v2/${repo}/manifests/${reference}`, { method: 'PUT', body, headers: { 'content-type': contentType } }, [201]);
    return res.headers.get('docker-content-digest') ?? sha256(body);
  }

  async deleteManifest(repo: string, digest: string): Promise<void> {
    await this.req(repo, `/v2/${repo}/manifests/${digest}`, { method: 'DELETE' }, [202]);
  }

  /**
   * One single-platform image: layers, config blob (labels inside) and a schema-2 or OCI
   * manifest, under `reference` (a tag), or by its own digest when reference is undefined.
   */
  async image(repo: string, reference: string | undefined, spec: ImageSpec = {}): Promise<PushedImage> {
    const oci = spec.format === 'oci';
    const layers = spec.layers ?? [randomBytes(64)];
    const layerDescs = [];
    for (const l of layers) layerDescs.push({ mediaType: oci ? MT.ociLayer : MT.dockerLayer, size: l.length, digest: await this.blob(repo, l) });
    const config: Record<string, unknown> = {
      architecture: spec.architecture ?? 'amd64',
      os: spec.os ?? 'linux',
      config: spec.labels === undefined ? {} : { Labels: spec.labels },
      rootfs: { type: 'layers', diff_ids: layerDescs.map((d) => d.digest) },
    };
    if (spec.containerConfigLabels !== undefined) config.container_config = { Labels: spec.containerConfigLabels };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDigest = await this.blob(repo, configBytes);
    const mediaType = oci ? MT.ociManifest : MT.dockerManifest;
    const manifest = JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: oci ? MT.ociConfig : MT.dockerConfig, size: configBytes.length, digest: configDigest },
      layers: layerDescs,
    });
    const manifestDigest = await this.manifest(repo, reference ?? sha256(manifest), manifest, mediaType);
    return { repo, tag: reference ?? manifestDigest, manifestDigest, configDigest, sizeBytes: configBytes.length + layers.reduce((a, l) => a + l.length, 0), mediaType };
  }

  /** A multi-arch image: each platform pushed by digest, then a manifest list / OCI index under the tag. */
  async index(repo: string, tag: string, platforms: ImageSpec[], opts: { format?: 'docker' | 'oci'; extraEntries?: object[] } = {}): Promise<{ digest: string; children: PushedImage[] }> {
    const oci = opts.format === 'oci';
    const children: PushedImage[] = [];
    const entries: object[] = [];
    for (const p of platforms) {
      const child = await this.image(repo, undefined, { ...p, format: opts.format });
      children.push(child);
      entries.push({ mediaType: child.mediaType, size: 0, digest: child.manifestDigest, platform: { architecture: p.architecture ?? 'amd64', os: p.os ?? 'linux' } });
    }
    const mediaType = oci ? MT.ociIndex : MT.dockerList;
    const body = JSON.stringify({ schemaVersion: 2, mediaType, manifests: [...entries, ...(opts.extraEntries ?? [])] });
    const digest = await this.manifest(repo, tag, body, mediaType);
    return { digest, children };
  }
}

/** Kernel-image labels as Backend.AI's images carry them. */
export function kernelLabels(extra: Record<string, string> = {}): Record<string, string> {
  return {
    'ai.backend.kernelspec': '1',
    'ai.backend.features': 'batch query uid-match user-input',
    'ai.backend.resource.min.cpu': '1',
    'ai.backend.resource.min.mem': '256m',
    ...extra,
  };
}

// ---- tiny HTTP servers ----

export interface TestServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

/** An HTTP server on a free loopback port running `handler`. */
export async function startHttpServer(handler: http.RequestListener): Promise<TestServer & { server: http.Server }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A reverse proxy to `target`; `delayMs` is added to every request (a far-away registry);
 * `intercept` may answer a request itself (return true) instead of forwarding it.
 */
export async function startProxy(
  target: string,
  opts: { delayMs?: number; intercept?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean } = {},
): Promise<TestServer & { requests: number }> {
  const t = new URL(target);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const state = { requests: 0 };
  const srv = await startHttpServer((req, res) => {
    state.requests++;
    const forward = () => {
      if (opts.intercept?.(req, res)) return;
      const up = http.request(
        { host: t.hostname, port: t.port, method: req.method, path: req.url, headers: { ...req.headers, host: t.host }, agent },
        (upRes) => {
          res.writeHead(upRes.statusCode ?? 502, upRes.headers);
          upRes.pipe(res);
        },
      );
      up.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      req.pipe(up);
    };
    if (opts.delayMs) setTimeout(forward, opts.delayMs);
    else forward();
  });
  return {
    url: srv.url,
    port: srv.port,
    get requests() {
      return state.requests;
    },
    close: async () => {
      await srv.close();
      agent.destroy();
    },
  };
}

// ---- auth ----

/** One htpasswd line with a bcrypt hash: `htpasswd -B` when installed, else libxcrypt via perl (Debian's perl-base). */
export function htpasswdLine(username: string, password: string): string {
  try {
    return execFileSync('htpasswd', ['-nbB', username, password], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    const alphabet = './ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
    // 22 salt chars; the last one carries only 2 bits, so pick it from ".Oeu"
    const salt = Array.from(randomBytes(21), (b) => alphabet[b % 64]).join('') + '.Oeu'[randomBytes(1)[0]! % 4];
    const hash = execFileSync('perl', ['-e', 'print crypt($ARGV[0], $ARGV[1])', password, `$2b$05$${salt}`]).toString().trim();
    if (!hash.startsWith('$2b$')) throw new Error('no bcrypt available: install apache2-utils (htpasswd)');
    return `${username}:${hash}`;
  }
}

/**
 * A token service for the registry's `auth.token` mode: signs RS256 JWTs with a key whose
 * self-signed certificate is the registry's rootcertbundle; the token header carries the
 * certificate in `x5c`, which distribution verifies against that bundle.
 */
export interface TokenIssuer extends TestServer {
  /** The registry config block: `{ auth: { token: … } }`. */
  registryAuth: Record<string, unknown>;
  /** Scopes asked for, in order. */
  requests: { scope: string; user: string | undefined }[];
  mint(scope: string, opts?: { expiresIn?: number }): string;
}

export async function startTokenIssuer(opts: { username?: string; password?: string; expiresIn?: number } = {}): Promise<TokenIssuer> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mgr-test-token-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '2', '-subj', '/CN=mgr-test-token-issuer'], { stdio: 'ignore' });
  const key: KeyObject = createPrivateKey(readFileSync(path.join(dir, 'key.pem')));
  const certPem = readFileSync(path.join(dir, 'cert.pem'), 'utf8');
  const certDer = certPem.replace(/-----(BEGIN|END) CERTIFICATE-----|\s/g, '');
  const issuer = 'mgr-test-issuer';
  const service = 'mgr-test-registry';
  const b64url = (v: Buffer | string) => Buffer.from(v).toString('base64url');
  const mint = (scope: string, o: { expiresIn?: number } = {}) => {
    const now = Math.floor(Date.now() / 1000);
    const access = scope
      .split(' ')
      .filter(Boolean)
      .map((s) => {
        const [type, ...rest] = s.split(':');
        const actions = rest.pop()!.split(',');
        return { type, name: rest.join(':'), actions };
      });
    const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [certDer] }));
    const claims = b64url(JSON.stringify({ iss: issuer, sub: opts.username ?? 'anonymous', aud: service, exp: now + (o.expiresIn ?? opts.expiresIn ?? 300), nbf: now - 1, iat: now, jti: randomBytes(8).toString('hex'), access }));
    const signature = sign('sha256', Buffer.from(`${header}.${claims}`), key);
    return `${header}.${claims}.${b64url(signature)}`;
  };
  const requests: { scope: string; user: string | undefined }[] = [];
  const srv = await startHttpServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const basic = /^Basic (.+)$/.exec(req.headers.authorization ?? '');
    const [user, pass] = basic ? Buffer.from(basic[1]!, 'base64').toString().split(':') : [undefined, undefined];
    const scope = url.searchParams.getAll('scope').join(' ');
    requests.push({ scope, user });
    if (opts.username && (user !== opts.username || pass !== opts.password)) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const expiresIn = opts.expiresIn ?? 300;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: mint(scope, { expiresIn }), expires_in: expiresIn, issued_at: new Date().toISOString() }));
  });
  return {
    ...srv,
    requests,
    mint,
    registryAuth: { auth: { token: { realm: `${srv.url}/token`, service, issuer, rootcertbundle: path.join(dir, 'cert.pem') } } },
    close: async () => {
      await srv.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---- the stores side of a rescan test ----

/** Backend.AI 22.03's schema as its migrations produce it (copied dump, see the fixture's header). */
export const SCHEMA_22_03 = path.join(PACKAGE_ROOT, 'test/fixtures/schema-dumps/22.03-81c264528f20-upgraded.sql');

/** Creates the 22.03 tables (images, image_aliases, …) in the sandbox's empty database. */
export async function load2203Schema(stores: Stores): Promise<void> {
  const sql = await readFile(SCHEMA_22_03, 'utf8');
  await stores.pg.withClient((c) => c.query(sql));
}

/** Registry config as Backend.AI keeps it: config/docker/registry/{quote(name)} = URL, child keys for the rest. */
export async function putRegistry(stores: Stores, name: string, url: string, extra: Record<string, string> = {}): Promise<void> {
  const key = `config/docker/registry/${quote(name)}`;
  await stores.etcd.put(key, url);
  for (const [k, v] of Object.entries(extra)) await stores.etcd.put(`${key}/${k}`, v);
}
