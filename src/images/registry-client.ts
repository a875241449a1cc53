import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { setMaxListeners } from 'node:events';
import pLimit, { type LimitFunction } from 'p-limit';
import pRetry from 'p-retry';
import { z } from 'zod';
import type { RegistryConfig } from '../config/shared.js';
import { issuesToProblems } from '../config/validate.js';
import { MgrError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { ImageConfigBlob, ManifestFacts } from './labels.js';

/**
 * A client for one container registry over the distribution HTTP API v2 (OCI distribution spec),
 * plus the listing APIs of Harbor v1/v2 and Docker Hub. Node's http/https with keep-alive agents:
 * they give per-registry TLS verification opt-out (`rejectUnauthorized`) without a dependency.
 * Every answer is validated at the edge; every failure names the URL.
 */

export const MEDIA_TYPE = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
} as const;

/** Every manifest type rescan understands; without Accept a registry down-converts to schema 1. */
export const MANIFEST_ACCEPT = Object.values(MEDIA_TYPE).join(', ');

export const CATALOG_SCOPE = 'registry:catalog:*';
export const pullScope = (repository: string) => `repository:${repository}:pull`;

export interface RegistryClientOptions {
  /** Requests in flight at once against this registry (default 16). */
  concurrency?: number;
  /** Per request, including reading the body (default 20 s). */
  timeoutMs?: number;
  /** Retries after the first attempt on 429, 5xx, timeouts and connection errors (default 3). */
  retries?: number;
  /** First back-off delay; doubles per retry, with jitter (default 250 ms). */
  retryMinDelayMs?: number;
  /** Longest Retry-After honoured (default 30 s). */
  maxRetryAfterMs?: number;
  /** Answers larger than this are refused (default 16 MiB; manifests and configs are small). */
  maxBodyBytes?: number;
  signal?: AbortSignal;
  log?: Logger;
}

export const DEFAULT_REGISTRY_CONCURRENCY = 16;

/** A registry request that failed: the URL, and the HTTP status when there was an answer. */
export class RegistryError extends MgrError {
  readonly url: string;
  readonly status: number | undefined;
  readonly retryable: boolean;
  readonly retryAfterMs: number | undefined;
  constructor(
    url: string,
    message: string,
    opts: { status?: number; retryable?: boolean; retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super('storeUnreachable', `GET ${redactUrl(url)}: ${message}`, { cause: opts.cause, details: { url: redactUrl(url), status: opts.status } });
    this.name = 'RegistryError';
    this.url = url;
    this.status = opts.status;
    this.retryable = opts.retryable ?? false;
    this.retryAfterMs = opts.retryAfterMs;
  }
}

export interface HttpResponse {
  /** The URL that answered (after redirects). */
  url: string;
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

type AuthState = { kind: 'anonymous' } | { kind: 'basic' } | { kind: 'bearer'; realm: string; service: string };

interface CachedToken {
  token: string;
  /** ms since epoch after which the token is fetched again. */
  refreshAt: number;
}

/** One platform entry of a manifest list / OCI index. */
export interface IndexEntry {
  digest: string;
  mediaType: string | undefined;
  platform: { architecture: string; os: string; variant?: string | undefined } | undefined;
}

export type FetchedManifest =
  | { kind: 'image'; mediaType: string; facts: ManifestFacts }
  | { kind: 'index'; mediaType: string; entries: IndexEntry[] }
  | { kind: 'unsupported'; mediaType: string }
  | { kind: 'missing' };

// ---- answer shapes (validated at the edge) ----

const catalogSchema = z.object({ repositories: z.array(z.string()).nullable().optional() });
const tagListSchema = z.object({ name: z.string().optional(), tags: z.array(z.string()).nullable().optional() });
const tokenSchema = z
  .object({
    token: z.string().min(1).optional(),
    access_token: z.string().min(1).optional(),
    expires_in: z.number().positive().optional(),
    issued_at: z.string().optional(),
  })
  .refine((t) => t.token || t.access_token, 'expected a "token" or "access_token" field');
/** OCI digest grammar; the registered algorithms must have their exact hex length. */
const digestSchema = z.string().refine((d) => {
  const m = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/.exec(d);
  if (!m) return false;
  const hexLength = ({ sha256: 64, sha512: 128 } as Record<string, number>)[m[1]!];
  return hexLength === undefined || new RegExp(`^[a-f0-9]{${hexLength}}$`).test(m[2]!);
}, 'expected a digest like sha256:<64 hex>');
const descriptorSchema = z.object({ mediaType: z.string().optional(), digest: digestSchema, size: z.number().int().nonnegative() });
const imageManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema.partial({ mediaType: true })),
});
const indexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(
    z.object({
      mediaType: z.string().optional(),
      digest: digestSchema,
      platform: z.object({ architecture: z.string(), os: z.string(), variant: z.string().optional() }).optional(),
    }),
  ),
});
const labelsSchema = z.record(z.string(), z.string()).nullable().optional();
const imageConfigSchema = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  config: z.object({ Labels: labelsSchema }).nullable().optional(),
  container_config: z.object({ Labels: labelsSchema }).nullable().optional(),
});
const harborRepositoriesSchema = z.array(z.object({ name: z.string() }));
const harborProjectsSchema = z.array(z.object({ project_id: z.number(), name: z.string() }));
const dockerHubPageSchema = z.object({ next: z.string().nullable().optional(), results: z.array(z.object({ name: z.string() })) });

export class RegistryClient {
  readonly name: string;
  readonly baseUrl: string;
  private readonly opts: Required<Omit<RegistryClientOptions, 'signal' | 'log'>>;
  /** Aborted with the caller's signal; every pending call and request listens to this one. */
  private readonly aborter = new AbortController();
  private readonly signal: AbortSignal;
  private readonly unlinkCaller: () => void;
  private readonly log: Logger;
  private readonly limit: LimitFunction;
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;
  private auth: Promise<AuthState> | undefined;
  private readonly tokens = new Map<string, Promise<CachedToken>>();
  private readonly configs = new Map<string, Promise<ImageConfigBlob>>();

  constructor(
    readonly config: RegistryConfig,
    options: RegistryClientOptions = {},
  ) {
    this.name = config.name;
    this.baseUrl = config.url.replace(/\/+$/, '');
    this.opts = {
      concurrency: options.concurrency ?? DEFAULT_REGISTRY_CONCURRENCY,
      timeoutMs: options.timeoutMs ?? 20_000,
      retries: options.retries ?? 3,
      retryMinDelayMs: options.retryMinDelayMs ?? 250,
      maxRetryAfterMs: options.maxRetryAfterMs ?? 30_000,
      maxBodyBytes: options.maxBodyBytes ?? 16 * 1024 * 1024,
    };
    // One listener on the caller's (shared) signal; the many per-call listeners go on ours.
    this.signal = this.aborter.signal;
    setMaxListeners(0, this.signal);
    const caller = options.signal;
    const forward = () => this.aborter.abort(caller?.reason);
    if (caller?.aborted) forward();
    else caller?.addEventListener('abort', forward, { once: true });
    this.unlinkCaller = () => caller?.removeEventListener('abort', forward);
    this.log = options.log ?? silentLogger;
    this.limit = pLimit(this.opts.concurrency);
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets: this.opts.concurrency + 2 });
    this.httpsAgent = new https.Agent({ keepAlive: true, maxSockets: this.opts.concurrency + 2, rejectUnauthorized: config.sslVerify });
  }

  close(): void {
    this.unlinkCaller();
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  /** True for registries Backend.AI treats as Docker Hub (host ends with .docker.io). */
  get isDockerHub(): boolean {
    return new URL(this.baseUrl).hostname.endsWith('.docker.io');
  }

  // ---- authentication ----

  private basicHeader(): Record<string, string> {
    const { username, password } = this.config;
    if (!username || !password) return {};
    return { authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` };
  }

  /**
   * The `/v2/` probe (Backend.AI's login): decides anonymous, basic or bearer for this registry.
   * Run once per client; every API call awaits it.
   */
  ping(): Promise<AuthState> {
    this.auth ??= (async (): Promise<AuthState> => {
      const url = `${this.baseUrl}/v2/`;
      const res = await this.call(url, this.basicHeader());
      if (res.status >= 200 && res.status < 300) return this.basicHeader().authorization ? { kind: 'basic' } : { kind: 'anonymous' };
      if (res.status === 404) throw new RegistryError(url, 'registry API v2 not implemented (404)', { status: 404 });
      if (res.status === 401) {
        const challenge = parseChallenge(res.headers['www-authenticate']);
        if (challenge?.scheme === 'bearer') {
          return { kind: 'bearer', realm: challenge.params.realm ?? `${this.baseUrl}/token`, service: challenge.params.service ?? 'registry' };
        }
        throw new RegistryError(
          url,
          this.basicHeader().authorization
            ? 'the registry rejected the username/password from etcd (401)'
            : 'the registry requires credentials (401); set username and password under its etcd key',
          { status: 401 },
        );
      }
      throw new RegistryError(url, `unexpected answer ${res.status} to the API v2 probe`, { status: res.status });
    })();
    return this.auth;
  }

  private async authHeader(scope: string): Promise<Record<string, string>> {
    const state = await this.ping();
    if (state.kind === 'basic') return this.basicHeader();
    if (state.kind === 'anonymous') return {};
    return { authorization: `Bearer ${await this.token(state, scope)}` };
  }

  /** A bearer token for one scope, cached until shortly before it expires; concurrent askers share one fetch. */
  private async token(state: Extract<AuthState, { kind: 'bearer' }>, scope: string): Promise<string> {
    const cached = this.tokens.get(scope);
    if (cached) {
      const t = await cached; // a failed fetch fails every caller that shared it
      if (t.refreshAt > Date.now()) return t.token;
      if (this.tokens.get(scope) === cached) this.tokens.delete(scope);
      return this.token(state, scope);
    }
    const fetching = this.fetchToken(state, scope);
    this.tokens.set(scope, fetching);
    fetching.catch(() => {
      if (this.tokens.get(scope) === fetching) this.tokens.delete(scope);
    });
    return (await fetching).token;
  }

  private async fetchToken(state: Extract<AuthState, { kind: 'bearer' }>, scope: string): Promise<CachedToken> {
    const url = new URL(state.realm);
    url.searchParams.set('scope', scope);
    url.searchParams.set('service', state.service);
    url.searchParams.set('offline_token', 'true');
    url.searchParams.set('client_id', 'mgr');
    const res = await this.call(url.toString(), this.basicHeader());
    if (res.status === 401 || res.status === 403) {
      throw new RegistryError(url.toString(), `the token service refused ${this.config.username ? `user "${this.config.username}"` : 'anonymous access'} for scope ${scope} (${res.status})`, { status: res.status });
    }
    expectOk(res);
    const body = parseAnswer(res, tokenSchema, 'token answer');
    const lifetimeMs = (body.expires_in ?? 60) * 1000;
    const issued = body.issued_at ? Date.parse(body.issued_at) : NaN;
    const start = Number.isFinite(issued) && Math.abs(issued - Date.now()) < 5 * 60_000 ? issued : Date.now();
    // Refresh a little early so a token never expires between the check and its use.
    return { token: (body.token ?? body.access_token)!, refreshAt: start + lifetimeMs - Math.min(10_000, lifetimeMs / 4) };
  }

  /**
   * GET a registry API URL with the auth the probe chose. A 401 with a fresh Bearer challenge
   * (token expired early, or a registry that lets /v2/ through anonymously) gets one retry with a
   * new token.
   */
  async get(url: string, scope: string, headers: Record<string, string> = {}): Promise<HttpResponse> {
    const res = await this.call(url, { ...headers, ...(await this.authHeader(scope)) });
    if (res.status !== 401) return res;
    const challenge = parseChallenge(res.headers['www-authenticate']);
    if (challenge?.scheme !== 'bearer') return res;
    const state = { kind: 'bearer' as const, realm: challenge.params.realm ?? `${this.baseUrl}/token`, service: challenge.params.service ?? 'registry' };
    this.auth = Promise.resolve(state);
    this.tokens.delete(scope);
    return this.call(url, { ...headers, authorization: `Bearer ${await this.token(state, scope)}` });
  }

  // ---- listing ----

  /** Repository names of the whole registry via `_catalog`, following Link pagination. */
  async *catalog(pageSize = 100): AsyncGenerator<string[]> {
    let next: string | undefined = `${this.baseUrl}/v2/_catalog?n=${pageSize}`;
    while (next) {
      const res = await this.get(next, CATALOG_SCOPE, { accept: 'application/json' });
      expectOk(res);
      yield parseAnswer(res, catalogSchema, 'catalog').repositories ?? [];
      next = nextLink(res);
    }
  }

  /** All tags of one repository, following Link pagination. A repository that is gone has none. */
  async tags(repository: string, pageSize = 100): Promise<string[]> {
    const tags: string[] = [];
    let next: string | undefined = `${this.baseUrl}/v2/${repoPath(repository)}/tags/list?n=${pageSize}`;
    while (next) {
      const res = await this.get(next, pullScope(repository), { accept: 'application/json' });
      if (res.status === 404) return tags;
      expectOk(res);
      tags.push(...(parseAnswer(res, tagListSchema, 'tag list').tags ?? []));
      next = nextLink(res);
    }
    return tags;
  }

  /**
   * The repositories to scan, per registry kind (§3.2 step 3): Docker Hub's listing API for
   * *.docker.io, Harbor v1/v2 project APIs, else the v2 catalog. Harbor names include the project.
   */
  async *repositories(projects: string[], pageSize = 100): AsyncGenerator<string[]> {
    if (this.isDockerHub) yield* this.dockerHubRepositories(pageSize);
    else if (this.config.type === 'harbor2') {
      for (const project of projects) {
        yield* this.pagedJson(`${this.baseUrl}/api/v2.0/projects/${encodeURIComponent(project)}/repositories?page_size=${pageSize}`, harborRepositoriesSchema, (items) => items.map((r) => r.name));
      }
    } else if (this.config.type === 'harbor') {
      const ids: number[] = [];
      for await (const page of this.pagedJson(`${this.baseUrl}/api/projects?page_size=${pageSize}`, harborProjectsSchema, (items) => items)) {
        ids.push(...page.filter((p) => projects.includes(p.name)).map((p) => p.project_id));
      }
      for (const id of ids) {
        yield* this.pagedJson(`${this.baseUrl}/api/repositories?project_id=${id}&page_size=${pageSize}`, harborRepositoriesSchema, (items) => items.map((r) => r.name));
      }
    } else yield* this.catalog(pageSize);
  }

  /** Harbor's REST API: basic auth when credentials exist, Link pagination. */
  private async *pagedJson<T, R>(first: string, schema: z.ZodType<T>, pick: (v: T) => R[]): AsyncGenerator<R[]> {
    let next: string | undefined = first;
    while (next) {
      const res = await this.call(next, { accept: 'application/json', ...this.basicHeader() });
      expectOk(res);
      yield pick(parseAnswer(res, schema, 'listing'));
      next = nextLink(res);
    }
  }

  /** Docker Hub: `hub.docker.com/v2/repositories/{username}/`, JSON `next` pagination, `kernel-*` skipped. */
  private async *dockerHubRepositories(pageSize: number): AsyncGenerator<string[]> {
    const user = this.config.username;
    if (!user) throw new MgrError('config', `registry "${this.name}" is Docker Hub (${this.baseUrl}); its repositories are listed per user, so it needs a username in etcd`);
    let next: string | undefined = `https://hub.docker.com/v2/repositories/${encodeURIComponent(user)}/?page_size=${pageSize}`;
    while (next) {
      const res = await this.call(next, { accept: 'application/json' });
      expectOk(res);
      const page = parseAnswer(res, dockerHubPageSchema, 'Docker Hub listing');
      yield page.results.filter((r) => !r.name.startsWith('kernel-')).map((r) => `${user}/${r.name}`);
      next = page.next ?? undefined;
    }
  }

  // ---- manifests and configs ----

  /** A manifest by tag or digest, asking for every type mgr understands. 404 → `missing`. */
  async manifest(repository: string, reference: string): Promise<FetchedManifest> {
    const url = `${this.baseUrl}/v2/${repoPath(repository)}/manifests/${refPath(reference)}`;
    const res = await this.get(url, pullScope(repository), { accept: MANIFEST_ACCEPT });
    if (res.status === 404) return { kind: 'missing' };
    expectOk(res);
    const body = parseJsonBody(res);
    const declared = isRecord(body) && typeof body.mediaType === 'string' ? body.mediaType : undefined;
    const mediaType = declared ?? contentType(res) ?? 'unknown';
    if (isRecord(body) && body.schemaVersion === 1) return { kind: 'unsupported', mediaType: mediaType || 'schema 1' };
    if (isRecord(body) && Array.isArray(body.manifests)) {
      const idx = validate(res, indexSchema, body, 'manifest index');
      return {
        kind: 'index',
        mediaType,
        entries: idx.manifests.map((m) => ({ digest: m.digest, mediaType: m.mediaType, platform: m.platform })),
      };
    }
    if (isRecord(body) && 'config' in body) {
      const m = validate(res, imageManifestSchema, body, 'image manifest');
      return { kind: 'image', mediaType, facts: { configDigest: m.config.digest, configSize: m.config.size, layerSizes: m.layers.map((l) => l.size) } };
    }
    if (declared && !Object.values(MEDIA_TYPE).includes(declared as never)) return { kind: 'unsupported', mediaType: declared };
    throw new RegistryError(res.url, `the manifest is neither an image manifest nor an index (media type ${mediaType})`, { status: res.status });
  }

  /**
   * The image config blob (labels, architecture), checked against its digest. Cached per digest
   * for this client: tags that share a config are fetched once.
   */
  configBlob(repository: string, digest: string): Promise<ImageConfigBlob> {
    let p = this.configs.get(digest);
    if (!p) {
      p = this.fetchConfigBlob(repository, digest);
      this.configs.set(digest, p);
      p.catch(() => this.configs.delete(digest));
    }
    return p;
  }

  private async fetchConfigBlob(repository: string, digest: string): Promise<ImageConfigBlob> {
    const url = `${this.baseUrl}/v2/${repoPath(repository)}/blobs/${refPath(digest)}`;
    const res = await this.get(url, pullScope(repository));
    expectOk(res);
    const [algo, hex] = digest.split(':');
    if (algo === 'sha256' && createHash('sha256').update(res.body).digest('hex') !== hex) {
      throw new RegistryError(url, `the config blob does not match its digest ${digest}`, { status: res.status });
    }
    return parseAnswer(res, imageConfigSchema, 'image config');
  }

  // ---- transport ----

  /**
   * One GET with the registry's concurrency limit, a per-attempt timeout and retries with
   * exponential back-off and jitter on 429 (honouring Retry-After), 5xx, timeouts and connection
   * errors. Other statuses are returned to the caller.
   */
  call(url: string, headers: Record<string, string>): Promise<HttpResponse> {
    return pRetry(
      async () => {
        const res = await this.limit(() => this.send(url, headers));
        if (res.status === 429 || res.status >= 500) {
          throw new RegistryError(res.url, `the registry answered ${res.status}${snippet(res.body)}`, {
            status: res.status,
            retryable: true,
            retryAfterMs: parseRetryAfter(res.headers['retry-after']),
          });
        }
        return res;
      },
      {
        retries: this.opts.retries,
        factor: 2,
        minTimeout: this.opts.retryMinDelayMs,
        maxTimeout: 10_000,
        randomize: true,
        signal: this.signal,
        shouldRetry: (e) => e instanceof RegistryError && e.retryable && !this.signal.aborted,
        onFailedAttempt: async (e) => {
          this.log.debug({ registry: this.name, url: redactUrl(url), attempt: e.attemptNumber, retriesLeft: e.retriesLeft, err: e.message }, 'registry request failed; retrying');
          const wait = e instanceof RegistryError ? e.retryAfterMs : undefined;
          if (wait && e.retriesLeft > 0) await sleep(Math.min(wait, this.opts.maxRetryAfterMs), this.signal);
        },
      },
    );
  }

  /** One HTTP GET, following up to 5 redirects (dropping credentials when the host changes). */
  private async send(url: string, headers: Record<string, string>, redirects = 0): Promise<HttpResponse> {
    const request = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      request.abort();
    }, this.opts.timeoutMs);
    const stop = () => request.abort();
    this.signal.addEventListener('abort', stop, { once: true });
    const target = new URL(url);
    const lib = target.protocol === 'https:' ? https : http;
    const agent = target.protocol === 'https:' ? this.httpsAgent : this.httpAgent;
    let res: HttpResponse;
    try {
      res = await new Promise<HttpResponse>((resolve, reject) => {
        const req = lib.request(target, { method: 'GET', headers: { 'user-agent': 'mgr', ...headers }, agent, signal: request.signal }, (msg) => {
          const chunks: Buffer[] = [];
          let size = 0;
          msg.on('data', (c: Buffer) => {
            size += c.length;
            if (size > this.opts.maxBodyBytes) {
              req.destroy(new RegistryError(url, `the answer is larger than ${this.opts.maxBodyBytes} bytes`, { status: msg.statusCode }));
              return;
            }
            chunks.push(c);
          });
          msg.on('end', () => resolve({ url, status: msg.statusCode ?? 0, headers: msg.headers, body: Buffer.concat(chunks) }));
          msg.on('error', reject);
        });
        req.on('error', reject);
        req.end();
      });
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      if (this.signal.aborted) throw this.signal.reason ?? e;
      if (timedOut) throw new RegistryError(url, `no complete answer within ${this.opts.timeoutMs} ms`, { retryable: true, cause: e });
      const code = (e as NodeJS.ErrnoException).code;
      const tls = typeof code === 'string' && (code.startsWith('ERR_TLS') || code.includes('CERT') || code.includes('SELF_SIGNED'));
      throw new RegistryError(url, tls ? `TLS verification failed (${code}); if this registry uses a private CA, set ssl-verify to false under its etcd key` : `connection failed: ${errorMessage(e)}`, {
        retryable: !tls,
        cause: e,
      });
    } finally {
      clearTimeout(timer);
      this.signal.removeEventListener('abort', stop);
    }
    if ([301, 302, 303, 307, 308].includes(res.status) && res.headers.location) {
      if (redirects >= 5) throw new RegistryError(url, 'too many redirects', { status: res.status });
      const next = new URL(res.headers.location, url);
      const sameOrigin = next.origin === target.origin;
      const { authorization: _dropped, ...rest } = headers;
      return this.send(next.toString(), sameOrigin ? headers : rest, redirects + 1);
    }
    return res;
  }
}

// ---- helpers ----

function repoPath(repository: string): string {
  return repository.split('/').map(encodeURIComponent).join('/');
}

/** A tag or digest in a URL path; the ":" of a digest stays readable. */
function refPath(reference: string): string {
  return encodeURIComponent(reference).replace(/%3A/gi, ':');
}

function expectOk(res: HttpResponse): void {
  if (res.status >= 200 && res.status < 300) return;
  const hint = res.status === 401 || res.status === 403 ? ' (not allowed: check the registry credentials in etcd)' : '';
  throw new RegistryError(res.url, `the registry answered ${res.status}${hint}${snippet(res.body)}`, { status: res.status });
}

function snippet(body: Buffer): string {
  const text = body.toString('utf8', 0, Math.min(body.length, 200)).replace(/\s+/g, ' ').trim();
  return text ? `: ${text}` : '';
}

function contentType(res: HttpResponse): string | undefined {
  return res.headers['content-type']?.split(';')[0]?.trim() || undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJsonBody(res: HttpResponse): unknown {
  try {
    return JSON.parse(res.body.toString('utf8'));
  } catch {
    throw new RegistryError(res.url, `the answer is not JSON${snippet(res.body)}`, { status: res.status });
  }
}

function validate<S extends z.ZodType>(res: HttpResponse, schema: S, value: unknown, what: string): z.output<S> {
  // reportInput: so a wrong type reads "expected array, got string" rather than "required"
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  const problems = issuesToProblems(r.error, res.url).map((p) => `${p.key ? `${p.key}: ` : ''}${p.message}`);
  throw new RegistryError(res.url, `unexpected ${what}: ${problems.join('; ')}`, { status: res.status });
}

function parseAnswer<S extends z.ZodType>(res: HttpResponse, schema: S, what: string): z.output<S> {
  return validate(res, schema, parseJsonBody(res), what);
}

/** The `rel="next"` target of a Link header, resolved against the request URL (relative or absolute). */
export function nextLink(res: Pick<HttpResponse, 'url' | 'headers'>): string | undefined {
  const header = res.headers.link;
  const value = Array.isArray(header) ? header.join(', ') : header;
  if (!value) return undefined;
  for (const part of value.split(/,(?=\s*<)/)) {
    const m = /^\s*<([^>]*)>(.*)$/.exec(part);
    if (m && /;\s*rel="?next"?/i.test(m[2]!)) return new URL(m[1]!, res.url).toString();
  }
  return undefined;
}

/** `WWW-Authenticate: Bearer realm="…",service="…",scope="…"` → scheme and parameters. */
export function parseChallenge(header: string | undefined): { scheme: string; params: Record<string, string> } | undefined {
  if (!header) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) params[p[1]!.toLowerCase()] = (p[2] ?? p[3] ?? '').replace(/\\(.)/g, '$1');
  return { scheme: m[1]!.toLowerCase(), params };
}

/** Retry-After as seconds or an HTTP date → ms (undefined when absent or unreadable). */
export function parseRetryAfter(v: string | undefined): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - Date.now()) : undefined;
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}
