import { quote, unquote } from '../stores/etcd.js';
import { ACCELERATORS_LABEL, canonicalImageName } from './labels.js';

/**
 * The 21.03/21.09 image metadata layout in etcd (backend-ai.md §2.3), read back into 22.03
 * `images` rows. Pure functions: no I/O, unit-tested.
 *
 *   images/{quote(registry)}/{quote(image)}                       = "1" (repository marker)
 *   images/{quote(registry)}/{quote(image)}/{tag}                 = config digest
 *   images/…/{tag}/size_bytes | accels | labels/{raw key} | resource/{slot}/min|max
 *   images/_aliases/{quote(alias)}                                = "{registry}/{image}:{tag}"
 *
 * A tag's keys are NOT always contiguous in etcd's byte order: "-" and "." sort before "/", so
 * `…/3.9`, `…/3.9-ubuntu20.04`, `…/3.9-ubuntu20.04/size_bytes`, `…/3.9/size_bytes` come in that
 * order. What holds is that a tag's keys all lie in [tagKey, tagKey + "0") ("0" is the byte
 * after "/"), and those spans nest. TagSpanTracker uses that to cut batches between tags.
 */

export const IMAGES_PREFIX = 'images/';
export const ALIASES_PREFIX = 'images/_aliases/';

/**
 * 21.x images carry no architecture: 21.x scanned only the manager's own platform and never
 * stored it. Backend.AI's own 22.03 migration 911023380bc9 backfills every existing kernel and
 * agent with 'x86_64'; migrated images get the same value, so (image, architecture) references
 * of existing kernels keep resolving.
 */
export const LEGACY_IMAGE_ARCHITECTURE = 'x86_64';

/** ImageRef.resolve_alias gives up after this many hops (C:21.09 docker.py). */
export const MAX_ALIAS_HOPS = 8;

/** Docker Hub, where a reference without a known registry points (ImageRef's default). */
export const DEFAULT_REGISTRY = 'index.docker.io';

/** The key of a tag (the 4-component `images/{r}/{i}/{tag}`) that a key belongs to, or undefined. */
export function tagKeyOf(key: string): string | undefined {
  if (!key.startsWith(IMAGES_PREFIX) || key.startsWith(ALIASES_PREFIX)) return undefined;
  let slash = IMAGES_PREFIX.length - 1;
  for (let i = 0; i < 3; i++) {
    slash = key.indexOf('/', slash + 1);
    if (slash < 0) return i === 2 ? key : undefined;
  }
  return key.slice(0, slash);
}

/** Whether `key` lies in the span of the tag at `tagKey`: [tagKey, tagKey + "0"). */
function inTagSpan(key: string, tagKey: string): boolean {
  return key.startsWith(tagKey) && (key.length === tagKey.length || key.charCodeAt(tagKey.length) < 0x30);
}

/**
 * Follows keys in etcd order and knows which tags' spans are still open, so a batch can end
 * exactly where no tag continues, and counts tags without remembering them all.
 */
export class TagSpanTracker {
  /** Tags seen so far. */
  tags = 0;
  private readonly open: string[] = [];

  /** True when no span of a tag seen so far contains `key`: a batch may end just before it. */
  boundaryBefore(key: string): boolean {
    while (this.open.length && !inTagSpan(key, this.open[this.open.length - 1]!)) this.open.pop();
    return this.open.length === 0;
  }

  /** Takes `key` (call boundaryBefore(key) first). */
  add(key: string): void {
    const tagKey = tagKeyOf(key);
    if (tagKey === undefined || this.open[this.open.length - 1] === tagKey) return;
    // A new tag's span is nested in the innermost open one (or there is none): a stack suffices.
    this.open.push(tagKey);
    this.tags++;
  }
}

/**
 * The first batch of `size` whole tags from keys in etcd order (pages, read lazily): from the
 * first key to the last key before which no tag's span is open. Stops reading as soon as it can.
 */
export async function takeTagBatch(pages: AsyncIterable<string[]>, size: number): Promise<{ min: string; max: string } | undefined> {
  const tracker = new TagSpanTracker();
  let min: string | undefined;
  let last: string | undefined;
  for await (const keys of pages) {
    for (const key of keys) {
      if (tracker.boundaryBefore(key) && last !== undefined && tracker.tags >= size) return { min: min!, max: last };
      tracker.add(key);
      min ??= key;
      last = key;
    }
  }
  return min === undefined ? undefined : { min, max: last! };
}

export const QUARANTINE_REASON = {
  keyMalformed: 'key_malformed',
  digestMissing: 'digest_missing',
  digestInvalid: 'digest_invalid',
  registryUnknown: 'registry_unknown',
  repositoryMarkerMissing: 'repository_marker_missing',
  sizeInvalid: 'size_invalid',
  resourceInvalid: 'resource_invalid',
  labelInvalid: 'label_invalid',
  jsonInvalid: 'json_invalid',
  aliasTargetInvalid: 'alias_target_invalid',
  aliasUnresolved: 'alias_unresolved',
} as const;
export type QuarantineReasonCode = (typeof QUARANTINE_REASON)[keyof typeof QUARANTINE_REASON];

export interface Problem {
  code: QuarantineReasonCode;
  message: string;
}

/** One `images` row from etcd (type is always COMPUTE). */
export interface EtcdImageRow {
  name: string;
  image: string;
  tag: string;
  registry: string;
  architecture: string;
  config_digest: string;
  /** Decimal string: BIGINT may exceed 2^53. */
  size_bytes: string;
  accelerators: string | null;
  labels: Record<string, string>;
  resources: Record<string, { min: string | null; max: string | null }>;
}

/** All keys of one tag: `values` maps the key relative to the tag key ("" is the tag key itself). */
export interface TagEntry {
  tagKey: string;
  values: Map<string, string>;
}

const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
/** Docker's tag grammar. */
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const SIZE_RE = /^\d{1,19}$/;
const INT8_MAX = 9223372036854775807n;
/** A resource amount as Backend.AI writes one: a decimal with an optional binary-size suffix, or infinity. */
const RESOURCE_VALUE_RE = /^(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[kmgtpe]i?b?|b)?|inf|infinity)$/i;
const CONTROL_RE = /[\u0000-\u001f\u007f\ufffd]/;

function checkComponent(raw: string, what: string, problems: Problem[]): string {
  const value = unquote(raw);
  if (raw === '' || CONTROL_RE.test(value)) problems.push({ code: QUARANTINE_REASON.keyMalformed, message: `${what} ${JSON.stringify(raw)} is empty or has control characters` });
  else if (quote(value) !== raw)
    problems.push({
      code: QUARANTINE_REASON.keyMalformed,
      message: `${what} ${JSON.stringify(raw)} is not quoted the way Backend.AI quotes (expected ${JSON.stringify(quote(value))})`,
    });
  return value;
}

/**
 * The images row of one tag, or every problem that keeps it out (the first one's code is the
 * quarantine reason). `registries` are the configured registry names; `repositoryMarker` says
 * whether `images/{r}/{i}` exists.
 */
export function imageRowFromEtcd(
  entry: TagEntry,
  registries: ReadonlySet<string>,
  repositoryMarker: boolean,
): { row: EtcdImageRow } | { problems: Problem[] } {
  const problems: Problem[] = [];
  const [, rawRegistry = '', rawImage = '', tag = ''] = entry.tagKey.split('/');
  const registry = checkComponent(rawRegistry, 'registry', problems);
  const image = checkComponent(rawImage, 'image', problems);
  if (!TAG_RE.test(tag)) problems.push({ code: QUARANTINE_REASON.keyMalformed, message: `tag ${JSON.stringify(tag)} is not a valid Docker tag` });

  const digest = entry.values.get('');
  if (digest === undefined) problems.push({ code: QUARANTINE_REASON.digestMissing, message: 'the tag has keys under it but no value (config digest) of its own' });
  else if (!DIGEST_RE.test(digest)) problems.push({ code: QUARANTINE_REASON.digestInvalid, message: `config digest ${JSON.stringify(digest.slice(0, 100))} is not "sha256:" + 64 hex digits` });
  if (registry && !registries.has(registry)) {
    problems.push({
      code: QUARANTINE_REASON.registryUnknown,
      message: `registry ${JSON.stringify(registry)} is not configured under config/docker/registry (known: ${[...registries].join(', ') || 'none'})`,
    });
  }
  if (!repositoryMarker) problems.push({ code: QUARANTINE_REASON.repositoryMarkerMissing, message: `repository marker ${entry.tagKey.split('/').slice(0, 3).join('/')} is missing` });

  const size = entry.values.get('size_bytes');
  if (size === undefined) problems.push({ code: QUARANTINE_REASON.sizeInvalid, message: 'size_bytes is missing' });
  else if (!SIZE_RE.test(size) || BigInt(size) > INT8_MAX) problems.push({ code: QUARANTINE_REASON.sizeInvalid, message: `size_bytes ${JSON.stringify(size.slice(0, 100))} is not a whole number of bytes` });

  const labels: Record<string, string> = {};
  const resources: EtcdImageRow['resources'] = {};
  let accels: string | undefined;
  for (const [sub, value] of entry.values) {
    if (sub === '' || sub === 'size_bytes') continue;
    if (sub === 'accels' || sub === 'accelerators') {
      if (value.includes('\u0000')) problems.push({ code: QUARANTINE_REASON.labelInvalid, message: `${sub} has a NUL character in its value` });
      else accels ??= value;
    }
    else if (sub === 'labels') Object.assign(labels, labelsFromJson(value, problems));
    else if (sub.startsWith('labels/')) {
      const key = sub.slice('labels/'.length);
      if (key === '' || key.split('/').includes('') || CONTROL_RE.test(key)) {
        problems.push({ code: QUARANTINE_REASON.labelInvalid, message: `label key ${JSON.stringify(key)} is empty, has an empty path segment or control characters` });
      } else if (value.includes('\u0000')) {
        problems.push({ code: QUARANTINE_REASON.labelInvalid, message: `label ${key} has a NUL character in its value` });
      } else labels[key] = value;
    } else if (sub.startsWith('resource/')) {
      const m = /^resource\/([^/]+)\/(min|max)$/.exec(sub);
      if (!m) problems.push({ code: QUARANTINE_REASON.resourceInvalid, message: `unexpected resource key ${sub} (expected resource/{slot}/min or /max)` });
      else if (!RESOURCE_VALUE_RE.test(value.trim())) {
        problems.push({ code: QUARANTINE_REASON.resourceInvalid, message: `${sub} = ${JSON.stringify(value.slice(0, 100))} is not a resource amount (e.g. "2", "0.5", "256m", "4g")` });
      } else {
        const slot = (resources[m[1]!] ??= { min: null, max: null });
        slot[m[2] as 'min' | 'max'] = value.trim();
      }
    } else problems.push({ code: QUARANTINE_REASON.keyMalformed, message: `unexpected key ${sub} under the tag` });
  }
  if (problems.length) return { problems };
  return {
    row: {
      name: canonicalImageName(registry, image, tag),
      image,
      tag,
      registry,
      architecture: LEGACY_IMAGE_ARCHITECTURE,
      config_digest: digest!,
      size_bytes: size!,
      accelerators: accels ?? labels[ACCELERATORS_LABEL] ?? null,
      labels,
      resources,
    },
  };
}

/** A whole label set kept as one JSON object at `…/{tag}/labels` (hand-written installs): strings only. */
function labelsFromJson(value: string, problems: Problem[]): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch (e) {
    problems.push({ code: QUARANTINE_REASON.jsonInvalid, message: `labels value is not valid JSON: ${(e as Error).message}` });
    return {};
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) || !Object.values(parsed).every((v) => typeof v === 'string')) {
    problems.push({ code: QUARANTINE_REASON.jsonInvalid, message: 'labels value is JSON but not an object of string values' });
    return {};
  }
  return parsed as Record<string, string>;
}

/**
 * A reference as ImageRef parses it: "{registry}/{image}:{tag}" when the first component is a
 * known registry, else Docker Hub (with "library/" for single-component names); tag "latest"
 * when absent. Returns the canonical name, or a problem.
 */
export function canonicalReference(ref: string, registries: ReadonlySet<string>): { name: string } | { problem: Problem } {
  const bad = (why: string) => ({ problem: { code: QUARANTINE_REASON.aliasTargetInvalid, message: `alias target ${JSON.stringify(ref.slice(0, 200))} ${why}` } });
  if (ref === '' || ref.includes('://') || ref.startsWith('//') || CONTROL_RE.test(ref)) return bad('is not an image reference');
  if (ref.includes('@')) return bad('is a digest reference, which 21.x aliases never were');
  const first = ref.split('/', 1)[0]!;
  const known = ref.includes('/') && registries.has(first);
  const registry = known ? first : DEFAULT_REGISTRY;
  let rest = known ? ref.slice(first.length + 1) : ref;
  const colon = rest.lastIndexOf(':');
  let tag = 'latest';
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  if (!known && !rest.includes('/')) rest = `library/${rest}`;
  if (!rest || rest.split('/').includes('') || !TAG_RE.test(tag)) return bad('has an empty path component or an invalid tag');
  return { name: canonicalImageName(registry, rest, tag) };
}
