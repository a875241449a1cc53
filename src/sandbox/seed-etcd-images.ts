import { quote, type EtcdKV, type EtcdStore } from '../stores/etcd.js';
import type { Rng } from './seed-random.js';

/**
 * Image metadata as 21.03/21.09 keep it in etcd (backend-ai.md §2.3), written by the seeder and
 * reusable by the tests of the image migration: build a SeedImage, get its keys from
 * etcdImageKeys, or write many with writeEtcdImages.
 */
export interface SeedImage {
  /** Registry name as in etcd and image references, e.g. "cr.backend.ai" or "localhost:5000". */
  registry: string;
  /** Repository path, e.g. "stable/python". */
  image: string;
  tag: string;
  /** Config digest, "sha256:<64 hex>". */
  digest: string;
  sizeBytes: number;
  /** Image labels with their raw keys, e.g. "ai.backend.resource.min.cpu". */
  labels: Record<string, string>;
  /** Per slot: `resource/{slot}/min` (from the labels) and a hand-set `resource/{slot}/max`. */
  resources: Record<string, { min: string; max?: string }>;
  /** Alias names pointing at this image (`images/_aliases/{quote(alias)}`). */
  aliases: string[];
}

export const ALIASES_PREFIX = 'images/_aliases/';

/** "{registry}/{image}:{tag}", the canonical reference aliases and kernels use. */
export function imageRef(img: Pick<SeedImage, 'registry' | 'image' | 'tag'>): string {
  return `${img.registry}/${img.image}:${img.tag}`;
}

/** The repository key: `images/{quote(registry)}/{quote(image)}`. */
export function repositoryKey(img: Pick<SeedImage, 'registry' | 'image'>): string {
  return `images/${quote(img.registry)}/${quote(img.image)}`;
}

/**
 * Every etcd key one image tag has in the 21.03 layout, relative to the namespace root: the
 * repository marker, the tag (= config digest; the tag itself is not quoted), size_bytes,
 * labels/{raw key}, accels (when the accelerators label exists), resource/{slot}/min|max, and
 * its aliases.
 */
export function etcdImageKeys(img: SeedImage): EtcdKV[] {
  const repo = repositoryKey(img);
  const tag = `${repo}/${img.tag}`;
  const kvs: EtcdKV[] = [
    { key: repo, value: '1' },
    { key: tag, value: img.digest },
    { key: `${tag}/size_bytes`, value: String(img.sizeBytes) },
  ];
  for (const [k, v] of Object.entries(img.labels)) kvs.push({ key: `${tag}/labels/${k}`, value: v });
  const accels = img.labels['ai.backend.accelerators'];
  if (accels !== undefined) kvs.push({ key: `${tag}/accels`, value: accels });
  for (const [slot, r] of Object.entries(img.resources)) {
    kvs.push({ key: `${tag}/resource/${slot}/min`, value: r.min });
    if (r.max !== undefined) kvs.push({ key: `${tag}/resource/${slot}/max`, value: r.max });
  }
  for (const alias of img.aliases) kvs.push({ key: ALIASES_PREFIX + quote(alias), value: imageRef(img) });
  return kvs;
}

export interface EtcdImagesWritten {
  keys: number;
  tags: number;
  aliases: number;
  repositories: number;
}

/**
 * Writes images in the 21.03 layout with batched transactions (EtcdStore.putMany). Streams:
 * only one batch of keys is held at a time. Each repository marker is written once.
 */
export async function writeEtcdImages(
  etcd: EtcdStore,
  images: Iterable<SeedImage>,
  opts: { batchKeys?: number; onProgress?: (written: EtcdImagesWritten) => void } = {},
): Promise<EtcdImagesWritten> {
  const batchKeys = opts.batchKeys ?? 20_000;
  const seenRepos = new Set<string>();
  const done: EtcdImagesWritten = { keys: 0, tags: 0, aliases: 0, repositories: 0 };
  let batch: EtcdKV[] = [];
  const flush = async () => {
    if (!batch.length) return;
    await etcd.putMany(batch);
    done.keys += batch.length;
    batch = [];
    opts.onProgress?.({ ...done });
  };
  for (const img of images) {
    const repo = repositoryKey(img);
    const kvs = etcdImageKeys(img);
    if (seenRepos.has(repo)) kvs.shift(); // the marker comes first; one put per repository is enough
    else {
      seenRepos.add(repo);
      done.repositories++;
    }
    batch.push(...kvs);
    done.tags++;
    done.aliases += img.aliases.length;
    if (batch.length >= batchKeys) await flush();
  }
  await flush();
  return done;
}

interface RepoSpec {
  registry: string;
  image: string;
  runtimeType: string;
  runtimePath: string;
  distro: string;
  /** Tag naming: "semver" → "1.3-ubuntu20.04", "ngc" → "21.03-py3". */
  style: 'semver' | 'ngc';
  cuda: boolean;
  /** Tags every installation of this era has, listed first. */
  fixedTags?: string[];
}

/** Well-known repositories first (what a 21.03 cluster pulled from cr.backend.ai), then generated ones. */
const KNOWN_REPOS: RepoSpec[] = [
  { registry: 'cr.backend.ai', image: 'stable/python', runtimeType: 'python', runtimePath: '/usr/bin/python3', distro: 'ubuntu20.04', style: 'semver', cuda: false, fixedTags: ['3.9-ubuntu20.04', '3.8-ubuntu20.04', '3.7-ubuntu18.04', '3.6-ubuntu18.04'] },
  { registry: 'cr.backend.ai', image: 'ngc/pytorch', runtimeType: 'python', runtimePath: '/usr/bin/python', distro: 'ubuntu20.04', style: 'ngc', cuda: true },
  { registry: 'cr.backend.ai', image: 'ngc/tensorflow', runtimeType: 'python', runtimePath: '/usr/bin/python', distro: 'ubuntu20.04', style: 'ngc', cuda: true },
  { registry: 'cr.backend.ai', image: 'stable/python-tensorflow', runtimeType: 'python', runtimePath: '/usr/bin/python3', distro: 'ubuntu18.04', style: 'semver', cuda: true },
  { registry: 'cr.backend.ai', image: 'stable/python-pytorch', runtimeType: 'python', runtimePath: '/usr/bin/python3', distro: 'ubuntu20.04', style: 'semver', cuda: true },
  { registry: 'cr.backend.ai', image: 'stable/r-base', runtimeType: 'app', runtimePath: '/usr/bin/R', distro: 'ubuntu20.04', style: 'semver', cuda: false },
  { registry: 'cr.backend.ai', image: 'stable/julia', runtimeType: 'app', runtimePath: '/usr/local/bin/julia', distro: 'ubuntu18.04', style: 'semver', cuda: false },
  { registry: 'index.docker.io', image: 'lablup/python-ff', runtimeType: 'python', runtimePath: '/usr/bin/python3', distro: 'ubuntu20.04', style: 'semver', cuda: false },
  { registry: 'localhost:5000', image: 'custom/lab-env', runtimeType: 'python', runtimePath: '/opt/conda/bin/python', distro: 'centos7.6', style: 'semver', cuda: true },
];

/** Registries generated repositories are spread over, by weight (historic ones need not be configured). */
const GENERATED_REGISTRIES: [string, number][] = [
  ['cr.backend.ai', 85],
  ['index.docker.io', 10],
  ['localhost:5000', 5],
];

export interface ImageGenOptions {
  count: number;
  /** Tags per repository (default 50): many tags per repository, as real registries have. */
  tagsPerRepository?: number;
  /** Fraction of tags with an alias (default 0.1). */
  aliasRate?: number;
  /** Fraction of tags with a hand-set resource max (default 0.05). */
  maxRate?: number;
}

function repoSpec(i: number, rng: Rng): RepoSpec {
  const known = KNOWN_REPOS[i];
  if (known) return known;
  const registry = rng.weighted(GENERATED_REGISTRIES);
  const project = registry === 'cr.backend.ai' ? rng.pick(['stable', 'community', 'testing']) : registry === 'index.docker.io' ? 'lablup' : 'custom';
  const cuda = rng.chance(0.3);
  return {
    registry,
    image: `${project}/${cuda ? 'gpu' : 'app'}-${i}`,
    runtimeType: rng.pick(['python', 'app']),
    runtimePath: rng.pick(['/usr/bin/python3', '/opt/conda/bin/python', '/usr/local/bin/app']),
    distro: rng.pick(['ubuntu18.04', 'ubuntu20.04', 'alpine3.8']),
    style: cuda ? 'ngc' : 'semver',
    cuda,
  };
}

function tagName(spec: RepoSpec, t: number): string {
  const fixed = spec.fixedTags ?? [];
  if (t < fixed.length) return fixed[t]!;
  const n = t - fixed.length;
  return spec.style === 'ngc'
    ? `${20 + Math.floor(n / 12)}.${String((n % 12) + 1).padStart(2, '0')}-py3`
    : `${1 + Math.floor(n / 20)}.${n % 20}-${spec.distro}`;
}

/**
 * Deterministic image tags, repository by repository. The first is always
 * cr.backend.ai/stable/python:3.9-ubuntu20.04 with the alias "python", as install-dev.sh sets up.
 */
export function* generateSeedImages(rng: Rng, opts: ImageGenOptions): Generator<SeedImage> {
  const perRepo = opts.tagsPerRepository ?? 50;
  const aliasRate = opts.aliasRate ?? 0.1;
  const maxRate = opts.maxRate ?? 0.05;
  const usedAliases = new Set<string>();
  let produced = 0;
  for (let r = 0; produced < opts.count; r++) {
    const spec = repoSpec(r, rng);
    const tags = Math.min(perRepo, opts.count - produced);
    for (let t = 0; t < tags; t++, produced++) {
      const tag = tagName(spec, t);
      const minMem = rng.pick(['256m', '512m', '1g', '2g']);
      const labels: Record<string, string> = {
        'ai.backend.kernelspec': '1',
        'ai.backend.features': rng.pick(['batch query uid-match user-input', 'batch uid-match', 'query uid-match user-input']),
        'ai.backend.base-distro': spec.distro,
        'ai.backend.runtime-type': spec.runtimeType,
        'ai.backend.runtime-path': spec.runtimePath,
        'ai.backend.resource.min.cpu': rng.pick(['1', '1', '2']),
        'ai.backend.resource.min.mem': minMem,
      };
      const resources: SeedImage['resources'] = {
        cpu: { min: labels['ai.backend.resource.min.cpu']! },
        mem: { min: minMem },
      };
      if (spec.cuda) {
        labels['ai.backend.accelerators'] = 'cuda';
        labels['ai.backend.resource.min.cuda.device'] = '1';
        labels['ai.backend.resource.min.cuda.shares'] = '0.1';
        resources['cuda.device'] = { min: '1' };
        resources['cuda.shares'] = { min: '0.1' };
      }
      if (rng.chance(0.4)) labels['ai.backend.service-ports'] = 'jupyter:http:8080,jupyterlab:http:8090,tensorboard:http:6006';
      if (rng.chance(0.3)) labels.maintainer = 'Lablup Inc. <contact@lablup.com>';
      if (rng.chance(maxRate)) {
        if (rng.chance(0.5)) resources.cpu!.max = rng.pick(['4', '8', '16']);
        else resources.mem!.max = rng.pick(['8g', '16g', '64g']);
      }
      const aliases: string[] = [];
      const first = r === 0 && t === 0;
      if (first || rng.chance(aliasRate)) {
        const name = first ? 'python' : `${spec.image.split('/').pop()}:${tag}`;
        if (!usedAliases.has(name)) {
          usedAliases.add(name);
          aliases.push(name);
        }
      }
      yield {
        registry: spec.registry,
        image: spec.image,
        tag,
        digest: `sha256:${rng.hex(64)}`,
        sizeBytes: rng.int(150_000_000, 12_000_000_000),
        labels,
        resources,
        aliases,
      };
    }
  }
}
