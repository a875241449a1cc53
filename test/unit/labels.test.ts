import { describe, expect, it } from 'vitest';
import {
  buildImageRow,
  imageLabels,
  jsonEqual,
  kernelspecSkipReason,
  mergeResources,
  normalizeArchitecture,
  plannedUpdate,
  repositorySkipReason,
  resourceMinimums,
  type ExistingImageRow,
  type ImageRowCandidate,
} from '../../src/images/labels.js';
import { parseRegistryArgument, selectRegistries } from '../../src/images/rescan.js';
import type { RegistryConfig } from '../../src/config/shared.js';

const digest = `sha256:${'a'.repeat(64)}`;
const kernel = { 'ai.backend.kernelspec': '1', 'ai.backend.resource.min.cpu': '1', 'ai.backend.resource.min.mem': '256m' };

describe('which repositories count (backend-ai.md §3.2 step 4)', () => {
  it('skips names containing common-, commons-, base-, krunner, builder, backendai, geofront', () => {
    for (const name of ['stable/common-tools', 'x/commons-lib', 'stable/base-python', 'krunner-env', 'my/builder', 'backendai/x', 'infra/geofront']) {
      expect(repositorySkipReason(name), name).toMatch(/repository name contains/);
    }
    expect(repositorySkipReason('stable/python')).toBeUndefined();
    expect(repositorySkipReason('stable/database')).toBeUndefined(); // "base" without the dash is fine
  });
});

describe('architecture names (§3.2 step 6)', () => {
  it('maps amd64/x64 → x86_64, arm64 → aarch64, x32/i686 → x86 and keeps the rest', () => {
    expect(['amd64', 'x64', 'x86_64', 'arm64', 'aarch64', 'x32', 'i686', 'ppc64le', '386'].map(normalizeArchitecture)).toEqual([
      'x86_64',
      'x86_64',
      'x86_64',
      'aarch64',
      'aarch64',
      'x86',
      'x86',
      'ppc64le',
      '386',
    ]);
  });
});

describe('labels', () => {
  it('come from container_config.Labels when that key exists, else config.Labels', () => {
    expect(imageLabels({ config: { Labels: { a: '1' } }, container_config: { Labels: { b: '2' } } }).labels).toEqual({ b: '2' });
    expect(imageLabels({ config: { Labels: { a: '1' } } }).labels).toEqual({ a: '1' });
  });

  it('null or missing labels give {} and a warning', () => {
    expect(imageLabels({ config: { Labels: null } })).toEqual({ labels: {}, warning: expect.stringContaining('config.Labels') });
    expect(imageLabels({ container_config: { Labels: null }, config: { Labels: { a: '1' } } })).toEqual({
      labels: {},
      warning: expect.stringContaining('container_config.Labels'),
    });
    expect(imageLabels({}).labels).toEqual({});
  });

  it('kernelspec must exist and be an integer in 1..1', () => {
    expect(kernelspecSkipReason({})).toMatch(/no ai.backend.kernelspec label/);
    expect(kernelspecSkipReason({ 'ai.backend.kernelspec': '1' })).toBeUndefined();
    expect(kernelspecSkipReason({ 'ai.backend.kernelspec': ' 1 ' })).toBeUndefined();
    expect(kernelspecSkipReason({ 'ai.backend.kernelspec': '2' })).toMatch(/outside the supported range 1..1/);
    expect(kernelspecSkipReason({ 'ai.backend.kernelspec': '0' })).toMatch(/outside/);
    expect(kernelspecSkipReason({ 'ai.backend.kernelspec': 'one' })).toMatch(/not an integer/);
  });

  it('resource minimums come from ai.backend.resource.min.{slot}, slots may contain dots', () => {
    expect(resourceMinimums({ ...kernel, 'ai.backend.resource.min.cuda.device': '1', 'ai.backend.resource.max.cpu': '8' })).toEqual({
      cpu: { min: '1' },
      mem: { min: '256m' },
      'cuda.device': { min: '1' },
    });
  });
});

describe('row building', () => {
  const manifest = { configDigest: digest, configSize: 300, layerSizes: [1000, 2000] };

  it('fills the 22.03 row: canonical name, registry NAME, sizes, accelerators, COMPUTE', () => {
    const r = buildImageRow({
      registry: 'cr.backend.ai',
      image: 'stable/python',
      tag: '3.9',
      manifest,
      config: { architecture: 'arm64', config: { Labels: { ...kernel, 'ai.backend.accelerators': 'cuda' } } },
    });
    expect(r).toEqual({
      warning: undefined,
      row: {
        name: 'cr.backend.ai/stable/python:3.9',
        image: 'stable/python',
        tag: '3.9',
        registry: 'cr.backend.ai',
        architecture: 'aarch64',
        configDigest: digest,
        sizeBytes: 3300,
        type: 'COMPUTE',
        accelerators: 'cuda',
        labels: { ...kernel, 'ai.backend.accelerators': 'cuda' },
        resources: { cpu: { min: '1' }, mem: { min: '256m' } },
      },
    });
  });

  it('skips images without kernelspec, keeping the architecture for prune decisions', () => {
    const r = buildImageRow({ registry: 'r', image: 'i', tag: 't', manifest, config: { architecture: 'amd64', config: { Labels: { a: 'b' } } } });
    expect(r).toMatchObject({ skip: expect.stringMatching(/kernelspec/), architecture: 'x86_64' });
  });

  it('uses the index platform when the config has no architecture, and skips when neither has one', () => {
    const fromPlatform = buildImageRow({ registry: 'r', image: 'i', tag: 't', manifest, config: { config: { Labels: kernel } }, fallbackArchitecture: 'arm64' });
    expect('row' in fromPlatform && fromPlatform.row.architecture).toBe('aarch64');
    expect(buildImageRow({ registry: 'r', image: 'i', tag: 't', manifest, config: { config: { Labels: kernel } } })).toMatchObject({ skip: /no architecture/ });
  });
});

describe('merging with an existing row', () => {
  it('keeps hand-set max limits and takes minimums from labels', () => {
    expect(mergeResources({ cpu: { min: '2' }, mem: { min: '1g' } }, { cpu: { min: '1', max: '4' }, mem: { min: '256m', max: null } })).toEqual({
      cpu: { min: '2', max: '4' },
      mem: { min: '1g', max: null },
    });
  });

  it('keeps a slot that only has a hand-set max, drops stale minimum-only slots', () => {
    expect(mergeResources({ cpu: { min: '1' } }, { 'cuda.device': { min: '1', max: '2' }, tpu: { min: '1' } })).toEqual({
      cpu: { min: '1' },
      'cuda.device': { min: '1', max: '2' },
    });
    expect(mergeResources({ cpu: { min: '1' } }, undefined)).toEqual({ cpu: { min: '1' } });
  });

  const candidate: ImageRowCandidate = {
    name: 'r/i:t',
    image: 'i',
    tag: 't',
    registry: 'r',
    architecture: 'x86_64',
    configDigest: digest,
    sizeBytes: 3300,
    type: 'COMPUTE',
    accelerators: null,
    labels: kernel,
    resources: { cpu: { min: '1' }, mem: { min: '256m' } },
  };
  const existing: ExistingImageRow = {
    id: '00000000-0000-0000-0000-000000000001',
    name: 'r/i:t',
    architecture: 'x86_64',
    registry: 'r',
    image: 'i',
    configDigest: digest.padEnd(72, ' '), // CHAR(72) comes back blank-padded
    sizeBytes: '3300',
    accelerators: null,
    labels: { 'ai.backend.resource.min.mem': '256m', 'ai.backend.kernelspec': '1', 'ai.backend.resource.min.cpu': '1' },
    resources: { mem: { min: '256m' }, cpu: { max: '8', min: '1' } },
  };

  it('plans no update when nothing changed (padding, key order and a kept max do not count)', () => {
    expect(plannedUpdate(existing, candidate)).toBeUndefined();
  });

  it('plans an update with the max kept when the digest changed', () => {
    const newDigest = `sha256:${'b'.repeat(64)}`;
    expect(plannedUpdate(existing, { ...candidate, configDigest: newDigest, sizeBytes: 4000 })).toEqual({
      id: existing.id,
      configDigest: newDigest,
      sizeBytes: 4000,
      accelerators: null,
      labels: kernel,
      resources: { cpu: { min: '1', max: '8' }, mem: { min: '256m' } },
    });
  });

  it('compares JSON structurally', () => {
    expect(jsonEqual({ a: [1, { b: 2 }] }, { a: [1, { b: 2 }] })).toBe(true);
    expect(jsonEqual({ a: 1 }, { a: 1, b: undefined })).toBe(false);
    expect(jsonEqual([1], { 0: 1 })).toBe(false);
  });
});

describe('which registries a rescan covers', () => {
  const reg = (name: string, type: RegistryConfig['type'], projects: string[] = []): RegistryConfig => ({
    name,
    url: `https://${name}`,
    type,
    username: undefined,
    password: undefined,
    projects,
    sslVerify: true,
  });
  const all = [reg('cr.backend.ai', 'harbor2', ['stable', 'community']), reg('localhost:5000', 'docker')];

  it('parses REGISTRY[/PROJECT]', () => {
    expect(parseRegistryArgument(undefined)).toEqual({ registry: undefined, project: undefined });
    expect(parseRegistryArgument('localhost:5000')).toEqual({ registry: 'localhost:5000', project: undefined });
    expect(parseRegistryArgument('cr.backend.ai/stable/')).toEqual({ registry: 'cr.backend.ai', project: 'stable' });
  });

  it('selects every registry with its configured projects, or one registry/project', () => {
    expect(selectRegistries(all, undefined, undefined).map((s) => [s.registry.name, s.projects])).toEqual([
      ['cr.backend.ai', ['stable', 'community']],
      ['localhost:5000', []],
    ]);
    expect(selectRegistries(all, 'cr.backend.ai', 'community').map((s) => s.projects)).toEqual([['community']]);
    expect(selectRegistries(all, 'localhost:5000', 'any/prefix').map((s) => s.projects)).toEqual([['any/prefix']]);
    expect(() => selectRegistries(all, 'nope', undefined)).toThrow('unknown registry "nope"; known registries: cr.backend.ai, localhost:5000');
    expect(() => selectRegistries(all, 'cr.backend.ai', 'private')).toThrow('registry "cr.backend.ai" has no project "private"; configured projects: stable, community');
    expect(() => selectRegistries(all, undefined, 'stable')).toThrow(/needs its registry/);
  });
});
