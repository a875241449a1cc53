import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startSandbox, type Sandbox, type SandboxOptions } from '../../src/sandbox/index.js';
import { openStores, type Stores } from '../../src/stores/index.js';

/** Prefix of every test sandbox dir; the global setup sweeps servers left under it. */
export const TEST_SANDBOX_PREFIX = path.join(os.tmpdir(), 'mgr-test-');
export const OWNER_FILE = 'owner.pid';

/** Starts real PostgreSQL, Redis, etcd (and a registry unless withRegistry: false) for one test file. */
export async function startTestSandbox(opts: Omit<SandboxOptions, 'dir'> = {}): Promise<TestSandbox> {
  const dir = await mkdtemp(TEST_SANDBOX_PREFIX);
  // The sweeper of a later (or parallel) run leaves a sandbox alone while its owner lives.
  await writeFile(path.join(dir, OWNER_FILE), String(process.pid));
  const sb = await startSandbox({ dir, withRegistry: false, ...opts });
  return {
    ...sb,
    openStores: () => openStores(sb.config),
    stop: async () => {
      await sb.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface TestSandbox extends Sandbox {
  openStores(): Promise<Stores>;
}

export async function writeTemp(dir: string, name: string, text: string): Promise<string> {
  const p = path.join(dir, name);
  await writeFile(p, text);
  return p;
}
