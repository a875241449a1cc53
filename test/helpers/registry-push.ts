import { createPrivateKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { quote, type Stores } from '../../src/stores/index.js';

/**
 * Test helpers around a real distribution registry: tiny HTTP servers (stand-ins, a delaying
 * proxy) and a JWT token issuer for token auth. Pushing images lives in src/sandbox/registry-push.ts.
 */
export * from '../../src/sandbox/registry-push.js';

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
