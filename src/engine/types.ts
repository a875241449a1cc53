import type { Logger } from '../log.js';
import type { Stores } from '../stores/index.js';

/** What a step would change, as data: printed by --dry-run and `mgr upgrade plan`. */
export interface Change {
  store: 'postgres' | 'etcd' | 'redis' | 'file' | 'cron';
  /** One line: what happens. */
  action: string;
  /** Exact SQL, a unified diff, a key list … when there is one. */
  detail?: string;
}

export interface StepResult {
  /** One line for the summary. */
  summary: string;
  /** Counts this step produced (rows copied, keys written …). */
  counts?: Record<string, number>;
  warnings?: string[];
  /** The step decided not to act (flag, already done elsewhere); recorded as skipped. */
  skipped?: boolean;
}

export interface Progress {
  done: number;
  total?: number;
  unit?: string;
  message?: string;
}

/** Flags of `mgr upgrade` that steps read; every field has a documented default. */
export interface UpgradeOptions {
  /** Lock backend written to manager.toml when the operator has none (default "etcd"). */
  lockBackend: 'etcd' | 'pg_advisory' | 'filelock';
  /** Start the images table empty instead of copying etcd's image metadata. */
  reinitializeImages: boolean;
  /** Leave the image migration to background workers instead of running it inline. */
  background: boolean;
  skipRedisAof: boolean;
  /** Do not install the clear-history schedule. */
  noSchedule: boolean;
  scheduleRetention: string;
  scheduleAt: string;
  /** Where the cron entry goes (default /etc/cron.d/mgr-clear-history). */
  cronFile: string | undefined;
  /** Override for the manager.toml to edit (default: the config file mgr was started with). */
  managerTomlPath: string;
  /** Command line that runs mgr, for cron entries and printed hints. */
  mgrCommand: string;
}

/** `mgr upgrade`'s defaults for every flag; callers override what they pass. */
export function defaultUpgradeOptions(overrides: Partial<UpgradeOptions> = {}): UpgradeOptions {
  return {
    lockBackend: 'etcd',
    reinitializeImages: false,
    background: false,
    skipRedisAof: false,
    noSchedule: false,
    scheduleRetention: '30d',
    scheduleAt: '0 4 * * *',
    cronFile: undefined,
    managerTomlPath: '',
    mgrCommand: 'mgr',
    ...overrides,
  };
}

/** Per-step resumable state, stored in the checkpoint table. */
export interface Checkpoint {
  get<T>(): Promise<T | undefined>;
  set<T>(detail: T): Promise<void>;
}

export interface StepContext {
  stores: Stores;
  log: Logger;
  options: UpgradeOptions;
  /** Aborted on Ctrl-C: finish the current statement or batch, then return. */
  signal: AbortSignal;
  progress(p: Progress): void;
  checkpoint: Checkpoint;
  /** The module's release, e.g. "22.03". */
  release: string;
}

/**
 * One step of an upgrade module. `apply` must be idempotent: after a crash the runner calls it
 * again on a store where it may have run in part or in full.
 */
export interface Step {
  /** Stable id recorded in the checkpoint table, e.g. "22.03/015d84d5a5ef". */
  id: string;
  title: string;
  kind: 'schema' | 'data' | 'config';
  plan(ctx: StepContext): Promise<Change[]>;
  apply(ctx: StepContext): Promise<StepResult>;
  /** Throws an MgrError when the stores do not show what apply promised. */
  verify(ctx: StepContext): Promise<void>;
}

export interface UpgradeModule {
  /** The release this module upgrades to. */
  release: string;
  /** Where it starts: the alembic head of the previous release(s). */
  fromHeads: string[];
  /** The alembic head it ends at. */
  head: string;
  steps: Step[];
}
