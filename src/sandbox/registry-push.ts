import { createHash, randomBytes } from 'node:crypto';

/**
 * Pushes images to a real distribution registry over the HTTP API v2 (blob uploads + manifest
 * PUT; no docker needed): single-platform Docker schema 2 or OCI images with labels in their
 * config, and multi-arch manifest lists / OCI indexes. Used by the demo, the benchmarks and the
 * tests.
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
