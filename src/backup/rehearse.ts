import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MgrError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { type LocalConfig } from '../config/manager-toml.js';
import { runUpgrade, type StepReport, type UpgradeEvent } from '../engine/runner.js';
import { defaultUpgradeOptions, type Progress, type UpgradeOptions } from '../engine/types.js';
import { startSandbox, type Sandbox } from '../sandbox/index.js';
import { EtcdStore, openStores, type Stores } from '../stores/index.js';
import { createBackup } from './create.js';
import { restoreBackup } from './restore.js';
import { readManifest, type BackupPart } from './bundle.js';

export interface RehearsalOptions {
  /** Rehearse on this bundle; without it a fresh backup of production is taken (reading only). */
  fromBackup?: string;
  /** Target release (default: the newest). */
  to?: string;
  /** Upgrade flags to rehearse; noSchedule and managerTomlPath are always the sandbox's. */
  options?: Partial<UpgradeOptions>;
  /** Where the throwaway sandbox and fresh backup go (default: the OS temp dir); needs about twice the database's size free. */
  workDir?: string;
  log?: Logger;
  onEvent?: (e: RehearsalEvent) => void;
  signal?: AbortSignal;
}

export type RehearsalPhase = 'backup' | 'sandbox' | 'restore' | 'upgrade' | 'cleanup';

export type RehearsalEvent =
  | { type: 'phase'; phase: RehearsalPhase; message: string }
  | { type: 'progress'; phase: 'backup' | 'restore'; part: BackupPart; progress: Progress }
  | { type: 'upgrade'; event: UpgradeEvent };

export interface RehearsalStep {
  module: string;
  id: string;
  title: string;
  status: StepReport['status'];
  durationMs: number;
  warnings: string[];
  error?: string;
}

export interface RehearsalReport {
  /** The upgrade ran to the end on the copy. */
  ok: boolean;
  source: { kind: 'backup' | 'fresh-backup'; bundle: string; release: string; takenAt: string };
  to: string | undefined;
  steps: RehearsalStep[];
  /** Milliseconds per phase. */
  phases: Partial<Record<RehearsalPhase, number>>;
  /** Every warning of the upgrade and of the copy (e.g. nodes that looked alive in it). */
  warnings: string[];
  /** Why the upgrade stopped, when it did. */
  failure: string | undefined;
  totalMs: number;
}

/**
 * Runs the whole upgrade on a throwaway copy: a sandbox of real servers under a temp dir, the
 * bundle restored into it (or a fresh read-only backup of production first), `runUpgrade` with
 * no backup and no cron schedule, the lock-backend edit applied to a copy of manager.toml; then
 * reports per-step durations, warnings and failures, and removes the sandbox. Production is
 * only read, and only when no bundle is given.
 */
export async function rehearseUpgrade(config: LocalConfig, opts: RehearsalOptions = {}): Promise<RehearsalReport> {
  const started = Date.now();
  const log = opts.log ?? silentLogger;
  const signal = opts.signal ?? new AbortController().signal;
  const emit = (e: RehearsalEvent) => opts.onEvent?.(e);
  const phases: RehearsalReport['phases'] = {};
  const timed = async <T>(phase: RehearsalPhase, message: string, fn: () => Promise<T>): Promise<T> => {
    emit({ type: 'phase', phase, message });
    const t0 = Date.now();
    try {
      return await fn();
    } finally {
      phases[phase] = Date.now() - t0;
    }
  };

  const work = await mkdtemp(path.join(opts.workDir ?? os.tmpdir(), 'mgr-rehearse-'));
  let sandbox: Sandbox | undefined;
  let stores: Stores | undefined;
  try {
    let bundle: string;
    let kind: RehearsalReport['source']['kind'];
    if (opts.fromBackup) {
      bundle = path.resolve(opts.fromBackup);
      kind = 'backup';
    } else {
      kind = 'fresh-backup';
      bundle = await timed('backup', 'taking a fresh backup of production (read only: no maintenance, no locks)', async () => {
        const prod = await openStores(config);
        try {
          const b = await createBackup(prod, {
            outDir: path.join(work, 'backup'),
            live: true,
            log,
            signal,
            onProgress: (p) => emit({ type: 'progress', phase: 'backup', part: p.part, progress: p }),
          });
          return b.path;
        } finally {
          await prod.close();
        }
      });
    }
    // restoreBackup verifies every file before it writes; the name and release are enough here
    const manifest = await readManifest(bundle);

    sandbox = await timed('sandbox', 'starting a throwaway PostgreSQL, etcd and Redis', () =>
      startSandbox({ dir: path.join(work, 'sandbox'), namespace: config.etcd.namespace, withRegistry: false }),
    );
    const sb = sandbox;
    const sandboxConfig = sb.config;

    await timed('restore', `restoring ${manifest.name} into the sandbox`, async () => {
      const s = await openStores(sandboxConfig);
      try {
        await restoreBackup(s, bundle, {
          force: true,
          yes: true,
          noOwner: true,
          // the progress record stays in the sandbox, not in the operator's bundle
          statePath: path.join(work, 'restore-state.json'),
          log,
          signal,
          onProgress: (p) => emit({ type: 'progress', phase: 'restore', part: p.part, progress: p }),
        });
      } finally {
        await s.close();
      }
      // The copy's config/redis names production's Redis: the upgrade must only see the sandbox's.
      await pointRedisAtSandbox(sb);
    });
    stores = await openStores(sandboxConfig);
    const managerToml = path.join(work, 'manager.toml');
    await copyFile(existsSync(config.path) ? config.path : sb.managerToml, managerToml);

    const steps: RehearsalStep[] = [];
    const warnings: string[] = [];
    let failure: string | undefined;
    await timed('upgrade', 'running the upgrade on the copy', async () => {
      try {
        await runUpgrade(stores!, {
          to: opts.to,
          backup: false,
          // the copy carries production's manager/status and heartbeats: whatever looked alive
          // there is reported as a warning, not a reason to stop the rehearsal
          force: true,
          options: { ...defaultUpgradeOptions(), ...opts.options, noSchedule: true, cronFile: undefined, managerTomlPath: managerToml },
          log,
          signal,
          onEvent: (e) => {
            if (e.type === 'step-end') {
              const r = e.report;
              steps.push({ module: r.module, id: r.id, title: r.title, status: r.status, durationMs: r.durationMs, warnings: r.warnings, ...(r.error ? { error: r.error } : {}) });
              warnings.push(...r.warnings.map((w) => `${r.id}: ${w}`));
            } else if (e.type === 'warn') warnings.push(e.message);
            emit({ type: 'upgrade', event: e });
          },
        });
      } catch (e) {
        if (e instanceof MgrError && e.code === 'interrupted') throw e;
        failure = errorMessage(e);
        log.warn({ err: failure }, 'the rehearsed upgrade failed');
      }
    });
    return {
      ok: failure === undefined,
      source: { kind, bundle, release: manifest.release.name, takenAt: manifest.createdAt },
      to: opts.to,
      steps,
      phases,
      warnings,
      failure,
      totalMs: Date.now() - started,
    };
  } finally {
    const t0 = Date.now();
    emit({ type: 'phase', phase: 'cleanup', message: 'stopping and removing the sandbox' });
    await stores?.close().catch(() => undefined);
    await sandbox?.stop().catch((e) => log.warn({ err: errorMessage(e) }, 'could not stop the rehearsal sandbox'));
    await rm(work, { recursive: true, force: true });
    phases.cleanup = Date.now() - t0;
  }
}

/** Replaces config/redis in the sandbox's etcd with the sandbox's own Redis. */
async function pointRedisAtSandbox(sb: Sandbox): Promise<void> {
  const etcd = new EtcdStore(sb.etcd.endpoint, sb.namespace);
  try {
    await etcd.delete('config/redis');
    await etcd.deletePrefix('config/redis/');
    await etcd.put('config/redis/addr', `${sb.redis.host}:${sb.redis.port}`);
  } finally {
    etcd.close();
  }
}

