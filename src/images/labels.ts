/**
 * Which registry images count as Backend.AI kernel images and how one becomes an `images` row
 * (backend-ai.md §3.2 steps 4 and 6, §1.5). Pure functions: no I/O, unit-tested.
 */

/** Repositories whose name contains one of these are never scanned (§3.2 step 4). */
export const SKIPPED_REPOSITORY_SUBSTRINGS = ['common-', 'commons-', 'base-', 'krunner', 'builder', 'backendai', 'geofront'] as const;

export const KERNELSPEC_LABEL = 'ai.backend.kernelspec';
export const ACCELERATORS_LABEL = 'ai.backend.accelerators';
export const RESOURCE_MIN_LABEL_PREFIX = 'ai.backend.resource.min.';
/** The kernelspec versions this manager understands (MIN_KERNELSPEC..MAX_KERNELSPEC). */
export const KERNELSPEC_RANGE = { min: 1, max: 1 } as const;

/** Docker/OCI architecture names → the names Backend.AI stores (`arch_name_aliases`). */
export const ARCHITECTURE_ALIASES: Readonly<Record<string, string>> = {
  amd64: 'x86_64',
  x64: 'x86_64',
  x86_64: 'x86_64',
  arm64: 'aarch64',
  aarch64: 'aarch64',
  x32: 'x86',
  i686: 'x86',
  x86: 'x86',
};

export function normalizeArchitecture(arch: string): string {
  return ARCHITECTURE_ALIASES[arch] ?? arch;
}

/** Why a repository is not scanned, or undefined when it is. */
export function repositorySkipReason(repository: string): string | undefined {
  const hit = SKIPPED_REPOSITORY_SUBSTRINGS.find((s) => repository.includes(s));
  return hit ? `repository name contains "${hit}" (not a kernel image)` : undefined;
}

type LabelMap = Record<string, string>;

/** The parts of an image config blob rescan reads (OCI image config / Docker container config). */
export interface ImageConfigBlob {
  architecture?: string | undefined;
  config?: { Labels?: LabelMap | null | undefined } | null | undefined;
  container_config?: { Labels?: LabelMap | null | undefined } | null | undefined;
}

/**
 * Labels as Backend.AI reads them: from `container_config.Labels` when the config has a
 * `container_config` key at all, otherwise from `config.Labels`. Missing or null → {} and a warning.
 */
export function imageLabels(cfg: ImageConfigBlob): { labels: LabelMap; warning: string | undefined } {
  const fromContainerConfig = 'container_config' in cfg && cfg.container_config !== undefined;
  const labels = fromContainerConfig ? cfg.container_config?.Labels : cfg.config?.Labels;
  if (labels === null || labels === undefined) {
    return { labels: {}, warning: `no labels in the image config (${fromContainerConfig ? 'container_config' : 'config'}.Labels is empty)` };
  }
  return { labels: { ...labels }, warning: undefined };
}

/** Why labels disqualify an image (kernelspec missing or out of range), or undefined. */
export function kernelspecSkipReason(labels: LabelMap): string | undefined {
  const raw = labels[KERNELSPEC_LABEL];
  if (raw === undefined) return `no ${KERNELSPEC_LABEL} label (not a Backend.AI kernel image)`;
  // Python int(): surrounding whitespace and a sign are allowed, nothing else.
  if (!/^\s*[+-]?\d+\s*$/.test(raw)) return `${KERNELSPEC_LABEL} label ${JSON.stringify(raw)} is not an integer`;
  const v = Number(raw.trim());
  if (v < KERNELSPEC_RANGE.min || v > KERNELSPEC_RANGE.max) {
    return `${KERNELSPEC_LABEL} ${v} is outside the supported range ${KERNELSPEC_RANGE.min}..${KERNELSPEC_RANGE.max}`;
  }
  return undefined;
}

/** `images.resources`: {slot: {min, max}}; `max` only where an operator set it (or a migration wrote it). */
export type ImageResources = Record<string, { min?: string | null; max?: string | null }>;

/** {slot: {min}} from the `ai.backend.resource.min.{slot}` labels; nothing reads `.max.` labels. */
export function resourceMinimums(labels: LabelMap): ImageResources {
  const out: ImageResources = {};
  for (const [k, v] of Object.entries(labels)) {
    if (k.startsWith(RESOURCE_MIN_LABEL_PREFIX) && k.length > RESOURCE_MIN_LABEL_PREFIX.length) {
      out[k.slice(RESOURCE_MIN_LABEL_PREFIX.length)] = { min: v };
    }
  }
  return out;
}

/**
 * Label minimums merged with what the row already has: every existing `max` is kept (22.03
 * replaced `resources` wholesale and lost hand-set limits). A slot the labels no longer declare
 * but that carries a `max` stays as it was, so no limit an operator set ever disappears.
 */
export function mergeResources(fromLabels: ImageResources, existing: ImageResources | undefined): ImageResources {
  const out: ImageResources = {};
  for (const [slot, v] of Object.entries(fromLabels)) {
    const prev = existing?.[slot];
    out[slot] = prev && 'max' in prev ? { min: v.min, max: prev.max } : { min: v.min };
  }
  for (const [slot, prev] of Object.entries(existing ?? {})) {
    if (!(slot in out) && prev && prev.max !== undefined && prev.max !== null) out[slot] = { ...prev };
  }
  return out;
}

/** The canonical reference stored in `images.name`. */
export function canonicalImageName(registry: string, image: string, tag: string): string {
  return `${registry}/${image}:${tag}`;
}

/** What a single-platform manifest says about an image (config digest and sizes). */
export interface ManifestFacts {
  configDigest: string;
  configSize: number;
  layerSizes: number[];
}

/** One `images` row as rescan computes it, before merging with an existing row. */
export interface ImageRowCandidate {
  name: string;
  image: string;
  tag: string;
  /** The registry NAME as used in etcd, not its URL. */
  registry: string;
  architecture: string;
  configDigest: string;
  sizeBytes: number;
  type: 'COMPUTE';
  accelerators: string | null;
  labels: LabelMap;
  /** Label minimums only; merged with the existing row's maximums at write time. */
  resources: ImageResources;
}

export type ImageRowResult =
  | { row: ImageRowCandidate; warning: string | undefined }
  | { skip: string; architecture: string | undefined; warning: string | undefined };

/**
 * Builds the row for one platform of one tag, or says why it is skipped. `fallbackArchitecture`
 * is the index entry's platform, used only when the config blob has no architecture.
 */
export function buildImageRow(input: {
  registry: string;
  image: string;
  tag: string;
  manifest: ManifestFacts;
  config: ImageConfigBlob;
  fallbackArchitecture?: string | undefined;
}): ImageRowResult {
  const rawArch = input.config.architecture || input.fallbackArchitecture;
  const { labels, warning } = imageLabels(input.config);
  if (!rawArch) return { skip: 'the image config names no architecture', architecture: undefined, warning };
  const architecture = normalizeArchitecture(rawArch);
  const reason = kernelspecSkipReason(labels);
  if (reason) return { skip: reason, architecture, warning };
  return {
    row: {
      name: canonicalImageName(input.registry, input.image, input.tag),
      image: input.image,
      tag: input.tag,
      registry: input.registry,
      architecture,
      configDigest: input.manifest.configDigest,
      sizeBytes: input.manifest.layerSizes.reduce((a, b) => a + b, 0) + input.manifest.configSize,
      type: 'COMPUTE',
      accelerators: labels[ACCELERATORS_LABEL] ?? null,
      labels,
      resources: resourceMinimums(labels),
    },
    warning,
  };
}

/** The content columns of an existing `images` row that rescan may rewrite. */
export interface ExistingImageRow {
  id: string;
  name: string;
  architecture: string;
  registry: string;
  image: string;
  /** CHAR(72): blank-padded as PostgreSQL returns it. */
  configDigest: string;
  sizeBytes: number | string;
  accelerators: string | null;
  labels: unknown;
  resources: unknown;
}

/** The values an existing row should hold after this rescan. */
export interface ImageRowUpdate {
  id: string;
  configDigest: string;
  sizeBytes: number;
  accelerators: string | null;
  labels: LabelMap;
  resources: ImageResources;
}

/** The update for an existing row, or undefined when the row already holds exactly these values. */
export function plannedUpdate(existing: ExistingImageRow, candidate: ImageRowCandidate): ImageRowUpdate | undefined {
  const resources = mergeResources(candidate.resources, asResources(existing.resources));
  const same =
    existing.configDigest.trimEnd() === candidate.configDigest &&
    String(existing.sizeBytes) === String(candidate.sizeBytes) &&
    (existing.accelerators ?? null) === candidate.accelerators &&
    jsonEqual(existing.labels, candidate.labels) &&
    jsonEqual(existing.resources, resources);
  if (same) return undefined;
  return {
    id: existing.id,
    configDigest: candidate.configDigest,
    sizeBytes: candidate.sizeBytes,
    accelerators: candidate.accelerators,
    labels: candidate.labels,
    resources,
  };
}

function asResources(v: unknown): ImageResources | undefined {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as ImageResources) : undefined;
}

/** Structural equality of JSON values, ignoring object key order (jsonb does not keep it). */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((v, i) => jsonEqual(v, bb[i]));
  }
  const ak = Object.keys(a);
  const bo = b as Record<string, unknown>;
  if (ak.length !== Object.keys(bo).length) return false;
  return ak.every((k) => k in bo && jsonEqual((a as Record<string, unknown>)[k], bo[k]));
}
