import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pLimit from 'p-limit';
import { DEFAULT_REGISTRY_CONCURRENCY } from '../src/images/registry-client.js';
import { PACKAGE_ROOT } from '../src/paths.js';
import { startSandbox } from '../src/sandbox/index.js';
import { openStores, type Stores } from '../src/stores/index.js';
import { RegistryPusher, kernelLabels, load2203Schema, putRegistry, startProxy } from '../test/helpers/registry-push.js';
import { runCommand } from './measure.js';

/**
 * `mgr image rescan` against a real registry with 2,000 tags in 200 repositories: the registry
 * once behind a proxy that adds 20 ms to every request (a registry across a network) and once on
 * plain loopback, each with the default concurrency and with concurrency 1. Every run is the real
 * CLI in its own process on an empty images table, so wall time and peak RSS are mgr's alone.
 */

export interface RescanRun {
  registry: string;
  tags: number;
  concurrency: number;
  wallMs: number;
  peakRssMiB: number;
  added: number;
}

export interface RescanBenchResults {
  repositories: number;
  tags: number;
  proxyDelayMs: number;
  defaultConcurrency: number;
  runs: RescanRun[];
  /** concurrency-1 wall time / default-concurrency wall time. */
  speedupBehindProxy: number;
  speedupLoopback: number;
  /** The same CLI run over a project with no repositories: node, drivers and stores, no images. */
  peakRssMiBNoTags: number;
  peakRssMiB200Tags: number;
  peakRssMiB2000Tags: number;
}

export async function benchRescan(opts: { repositories?: number; tagsPerRepository?: number; delayMs?: number } = {}): Promise<RescanBenchResults> {
  const repositories = opts.repositories ?? 200;
  const tagsPer = opts.tagsPerRepository ?? 10;
  const delayMs = opts.delayMs ?? 20;
  const groups = 10; // repositories live under g0/ … g9/: one group is a tenth of the tags
  const dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-bench-rescan-'));
  const sb = await startSandbox({ dir, withRegistry: true });
  let stores: Stores | undefined;
  const proxy = await startProxy(sb.registry!.url, { delayMs });
  try {
    stores = await openStores(sb.config);
    await load2203Schema(stores);
    await putRegistry(stores, 'far', proxy.url);
    await putRegistry(stores, 'near', sb.registry!.url);
    await pushImages(sb.registry!.url, repositories, tagsPer, groups);

    const runs: RescanRun[] = [];
    const run = async (registry: string, tags: number, concurrency: number) => {
      await stores!.pg.pool.query('DELETE FROM image_aliases; DELETE FROM images');
      const r = await runCommand(process.execPath, [
        path.join(PACKAGE_ROOT, 'bin', 'mgr.js'), '-f', sb.managerToml, 'image', 'rescan', registry, '--concurrency', String(concurrency), '--json',
      ], { MGR_LOG_LEVEL: 'warn' });
      if (r.code !== 0) throw new Error(`mgr image rescan ${registry} exited ${r.code}: ${r.stderr.slice(-2000)}`);
      const added = (JSON.parse(r.stdout) as { totals: { added: number } }).totals.added;
      if (added !== tags) throw new Error(`rescan of ${registry} added ${added} rows, expected ${tags}`);
      const entry = { registry, tags, concurrency, wallMs: Math.round(r.ms), peakRssMiB: Math.round((r.peakRss / 2 ** 20) * 10) / 10, added };
      runs.push(entry);
      return entry;
    };
    const total = repositories * tagsPer;
    const none = await run('far/none', 0, DEFAULT_REGISTRY_CONCURRENCY);
    const small = await run('far/g0', total / groups, DEFAULT_REGISTRY_CONCURRENCY);
    const farDefault = await run('far', total, DEFAULT_REGISTRY_CONCURRENCY);
    const farSerial = await run('far', total, 1);
    const nearDefault = await run('near', total, DEFAULT_REGISTRY_CONCURRENCY);
    const nearSerial = await run('near', total, 1);
    return {
      repositories,
      tags: total,
      proxyDelayMs: delayMs,
      defaultConcurrency: DEFAULT_REGISTRY_CONCURRENCY,
      runs,
      speedupBehindProxy: round2(farSerial.wallMs / farDefault.wallMs),
      speedupLoopback: round2(nearSerial.wallMs / nearDefault.wallMs),
      peakRssMiBNoTags: none.peakRssMiB,
      peakRssMiB200Tags: small.peakRssMiB,
      peakRssMiB2000Tags: farDefault.peakRssMiB,
    };
  } finally {
    await stores?.close();
    await proxy.close();
    await sb.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Each tag its own config (distinct labels, so no config-blob cache hit); one layer per repository. */
async function pushImages(url: string, repositories: number, tagsPer: number, groups: number): Promise<void> {
  const push = new RegistryPusher(url);
  const limit = pLimit(8);
  const tasks: Promise<unknown>[] = [];
  for (let r = 0; r < repositories; r++) {
    const repo = `g${r % groups}/kernel-${String(r).padStart(3, '0')}`;
    const layer = Buffer.from(`layer of ${repo}`.padEnd(512, '.'));
    await push.blob(repo, layer);
    for (let t = 0; t < tagsPer; t++) {
      tasks.push(limit(() => push.image(repo, `v${t}`, { labels: kernelLabels({ 'bench.tag': `${repo}:v${t}` }), layers: [layer] })));
    }
  }
  await Promise.all(tasks);
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const results = await benchRescan();
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
}
