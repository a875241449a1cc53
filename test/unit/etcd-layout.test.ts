import { describe, expect, it } from 'vitest';
import {
  QUARANTINE_REASON,
  TagSpanTracker,
  canonicalReference,
  imageRowFromEtcd,
  tagKeyOf,
  takeTagBatch,
  type TagEntry,
} from '../../src/images/etcd-layout.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;
const REGISTRIES = new Set(['cr.backend.ai', 'localhost:5000', 'index.docker.io']);

/** etcd's order: bytewise (the same as JS string order for these ASCII keys). */
function etcdOrder(keys: string[]): string[] {
  return [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

async function* pagesOf(keys: string[], size = 3): AsyncGenerator<string[]> {
  for (let i = 0; i < keys.length; i += size) yield keys.slice(i, i + size);
}

function entry(tagKey: string, values: Record<string, string>): TagEntry {
  return { tagKey, values: new Map(Object.entries(values)) };
}

const PY = 'images/cr.backend.ai/stable%2Fpython';
// Tags whose names are prefixes of each other: "-" and "." sort before "/", so spans nest.
const NESTED_KEYS = etcdOrder([
  PY,
  `${PY}/3.9`,
  `${PY}/3.9/size_bytes`,
  `${PY}/3.9/labels/ai.backend.kernelspec`,
  `${PY}/3.9-ubuntu20.04`,
  `${PY}/3.9-ubuntu20.04/size_bytes`,
  `${PY}/3.9-ubuntu20.04/resource/cpu/min`,
  `${PY}/3.9.1`,
  `${PY}/3.9.1/size_bytes`,
  `${PY}/3.9-ubuntu20.04-gpu/size_bytes`, // a tag without its own digest key still is a tag
  `${PY}-gpu`,
  `${PY}-gpu/1.0`,
  `${PY}-gpu/1.0/size_bytes`,
  'images/_aliases/python',
  'images/cr.backend.ai/z%2Fz/1',
]);

describe('etcd image layout', () => {
  it('finds the tag key of every key under a tag, and none for markers, aliases and stray keys', () => {
    expect(tagKeyOf(`${PY}/3.9`)).toBe(`${PY}/3.9`);
    expect(tagKeyOf(`${PY}/3.9/labels/a/b`)).toBe(`${PY}/3.9`);
    expect(tagKeyOf(PY)).toBeUndefined();
    expect(tagKeyOf('images/cr.backend.ai')).toBeUndefined();
    expect(tagKeyOf('images/_aliases/python')).toBeUndefined();
    expect(tagKeyOf('config/docker/registry/x')).toBeUndefined();
  });

  it('keys of one tag are not contiguous in etcd order, which is why spans are tracked', () => {
    const i39 = NESTED_KEYS.indexOf(`${PY}/3.9`);
    const i39size = NESTED_KEYS.indexOf(`${PY}/3.9/size_bytes`);
    expect(NESTED_KEYS.slice(i39, i39size)).toContain(`${PY}/3.9-ubuntu20.04/size_bytes`);
  });

  it('counts each tag once, however its keys interleave with other tags', () => {
    const t = new TagSpanTracker();
    for (const k of NESTED_KEYS) {
      t.boundaryBefore(k);
      t.add(k);
    }
    // 3.9, 3.9-ubuntu20.04, 3.9-ubuntu20.04-gpu, 3.9.1, python-gpu:1.0, z/z:1
    expect(t.tags).toBe(6);
  });

  it('cuts batches only where no tag continues, so every tag lies in exactly one batch and batches tile the keys', async () => {
    for (const size of [1, 2, 3, 100]) {
      const batches: { min: string; max: string }[] = [];
      let rest = NESTED_KEYS;
      while (rest.length) {
        const b = await takeTagBatch(pagesOf(rest), size);
        expect(b).toBeDefined();
        batches.push(b!);
        rest = rest.slice(rest.indexOf(b!.max) + 1);
      }
      expect(await takeTagBatch(pagesOf([]), size)).toBeUndefined();
      // tiling: consecutive, no overlap, nothing left out
      const covered = batches.flatMap((b) => NESTED_KEYS.slice(NESTED_KEYS.indexOf(b.min), NESTED_KEYS.indexOf(b.max) + 1));
      expect(covered).toEqual(NESTED_KEYS);
      // no tag split across batches
      const batchOf = new Map<string, number>();
      batches.forEach((b, i) => {
        for (const k of NESTED_KEYS.slice(NESTED_KEYS.indexOf(b.min), NESTED_KEYS.indexOf(b.max) + 1)) {
          const tag = tagKeyOf(k);
          if (!tag) continue;
          expect(batchOf.get(tag) ?? i, `${tag} split (size ${size})`).toBe(i);
          batchOf.set(tag, i);
        }
      });
    }
  });

  it('puts the nested 3.9 family in one batch even with batch size 1', async () => {
    // "_aliases" sorts before lowercase registries, and python-gpu before python/…: the first
    // batch is the alias, the marker and python-gpu:1.0.
    const first = await takeTagBatch(pagesOf(NESTED_KEYS), 1);
    expect(first).toEqual({ min: 'images/_aliases/python', max: `${PY}-gpu/1.0/size_bytes` });
    // The next one starts at 3.9, whose span holds 3.9-ubuntu20.04(-gpu) and 3.9.1, up to 3.9/size_bytes.
    const second = await takeTagBatch(pagesOf(NESTED_KEYS.slice(NESTED_KEYS.indexOf(first!.max) + 1)), 1);
    expect(second).toEqual({ min: `${PY}/3.9`, max: `${PY}/3.9/size_bytes` });
  });

  it('builds the images row of a well-formed tag, keeping a hand-set max and every label', () => {
    const r = imageRowFromEtcd(
      entry(`${PY}/3.9-ubuntu20.04`, {
        '': DIGEST,
        size_bytes: '1234567890123',
        'labels/ai.backend.kernelspec': '1',
        'labels/ai.backend.accelerators': 'cuda',
        'labels/org.example/with-slash': 'x',
        accels: 'cuda',
        'resource/cpu/min': '1',
        'resource/cpu/max': '8',
        'resource/mem/min': '256m',
      }),
      REGISTRIES,
      true,
    );
    expect(r).toEqual({
      row: {
        name: 'cr.backend.ai/stable/python:3.9-ubuntu20.04',
        image: 'stable/python',
        tag: '3.9-ubuntu20.04',
        registry: 'cr.backend.ai',
        architecture: 'x86_64',
        config_digest: DIGEST,
        size_bytes: '1234567890123',
        accelerators: 'cuda',
        labels: { 'ai.backend.kernelspec': '1', 'ai.backend.accelerators': 'cuda', 'org.example/with-slash': 'x' },
        resources: { cpu: { min: '1', max: '8' }, mem: { min: '256m', max: null } },
      },
    });
  });

  it('unquotes a registry with a port', () => {
    const r = imageRowFromEtcd(entry('images/localhost%3A5000/lab%2Fenv/1.0', { '': DIGEST, size_bytes: '1' }), REGISTRIES, true);
    expect('row' in r && r.row.name).toBe('localhost:5000/lab/env:1.0');
  });

  const cases: [string, TagEntry, QuarantineCase?][] = [
    ['digest missing', entry(`${PY}/1`, { size_bytes: '1' }), { code: QUARANTINE_REASON.digestMissing }],
    ['digest invalid', entry(`${PY}/1`, { '': 'sha256:xyz', size_bytes: '1' }), { code: QUARANTINE_REASON.digestInvalid }],
    ['unknown registry', entry('images/gone.example/a%2Fb/1', { '': DIGEST, size_bytes: '1' }), { code: QUARANTINE_REASON.registryUnknown }],
    ['repository marker missing', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1' }), { code: QUARANTINE_REASON.repositoryMarkerMissing, marker: false }],
    ['size not a number', entry(`${PY}/1`, { '': DIGEST, size_bytes: '12 MB' }), { code: QUARANTINE_REASON.sizeInvalid }],
    ['size missing', entry(`${PY}/1`, { '': DIGEST }), { code: QUARANTINE_REASON.sizeInvalid }],
    ['size beyond BIGINT', entry(`${PY}/1`, { '': DIGEST, size_bytes: '99999999999999999999' }), { code: QUARANTINE_REASON.sizeInvalid }],
    ['resource max unparsable', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1', 'resource/mem/max': 'lots' }), { code: QUARANTINE_REASON.resourceInvalid }],
    ['resource key shape', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1', 'resource/cpu': '1' }), { code: QUARANTINE_REASON.resourceInvalid }],
    ['label key empty', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1', 'labels/': 'x' }), { code: QUARANTINE_REASON.labelInvalid }],
    ['label key with empty segment', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1', 'labels/a//b': 'x' }), { code: QUARANTINE_REASON.labelInvalid }],
    ['labels JSON broken', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1', labels: '{"a": ' }), { code: QUARANTINE_REASON.jsonInvalid }],
    ['labels JSON not an object of strings', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1', labels: '{"a": 1}' }), { code: QUARANTINE_REASON.jsonInvalid }],
    ['registry not quoted canonically', entry('images/localhost:5000/a%2Fb/1', { '': DIGEST, size_bytes: '1' }), { code: QUARANTINE_REASON.keyMalformed }],
    ['image quoted with lowercase hex', entry('images/cr.backend.ai/stable%2fpython/1', { '': DIGEST, size_bytes: '1' }), { code: QUARANTINE_REASON.keyMalformed }],
    ['invalid tag', entry(`${PY}/-bad`, { '': DIGEST, size_bytes: '1' }), { code: QUARANTINE_REASON.keyMalformed }],
    ['unexpected key under the tag', entry(`${PY}/1`, { '': DIGEST, size_bytes: '1', 'resources/cpu/max': '4' }), { code: QUARANTINE_REASON.keyMalformed }],
  ];
  interface QuarantineCase {
    code: string;
    marker?: boolean;
  }
  for (const [what, e, expected] of cases) {
    it(`quarantines a tag: ${what}`, () => {
      const r = imageRowFromEtcd(e, REGISTRIES, expected?.marker ?? true);
      expect('problems' in r).toBe(true);
      if ('problems' in r) {
        expect(r.problems[0]!.code).toBe(expected!.code);
        expect(r.problems[0]!.message.length).toBeGreaterThan(10);
      }
    });
  }

  it('parses alias targets as ImageRef does', () => {
    expect(canonicalReference('cr.backend.ai/stable/python:3.9-ubuntu20.04', REGISTRIES)).toEqual({ name: 'cr.backend.ai/stable/python:3.9-ubuntu20.04' });
    expect(canonicalReference('localhost:5000/lab/env:1.0', REGISTRIES)).toEqual({ name: 'localhost:5000/lab/env:1.0' });
    expect(canonicalReference('python', REGISTRIES)).toEqual({ name: 'index.docker.io/library/python:latest' });
    expect(canonicalReference('lablup/python-ff:1', REGISTRIES)).toEqual({ name: 'index.docker.io/lablup/python-ff:1' });
    expect(canonicalReference('unknown.example/a/b:1', REGISTRIES)).toEqual({ name: 'index.docker.io/unknown.example/a/b:1' });
    for (const bad of ['', 'https://cr.backend.ai/a:1', 'cr.backend.ai/a@sha256:00', 'cr.backend.ai//a:1', 'a:-x']) {
      const r = canonicalReference(bad, REGISTRIES);
      expect('problem' in r && r.problem.code, bad).toBe(QUARANTINE_REASON.aliasTargetInvalid);
    }
  });
});
