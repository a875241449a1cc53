import os from 'node:os';
import { MgrError, errorMessage } from '../errors.js';
import type { Logger } from '../log.js';
import { enterMaintenance, getMaintenance, leaveMaintenance } from '../maintenance/index.js';
import { lockBackendFor } from '../locks/index.js';
import type { HeldLock } from '../locks/types.js';
import { storeFault, type Stores } from '../stores/index.js';
import { MODULES } from '../upgrades/index.js';
import { detectRelease } from './detect.js';
import { findLiveNodes, type LivenessReport } from './preflight.js';
import { MODULE_TARGETS, revisionIndex, type Detected } from './releases.js';
import { appliedMigrations, checkChecksums, ensureMgrTables, loadSqlMigrations } from './sql-migrations.js';
import { takeCounts, type StoreCounts } from './counts.js';
import type { Change, Checkpoint, Progress, Step, StepContext, StepResult, UpgradeModule, UpgradeOptions } from './types.js';

/**
 * detect → select modules → (dry run: plan and stop) → preflight → upgrade lock → maintenance on
 * → backup → for each step: checkpoint, apply, verify → maintenance off → summary.
 * A rerun after a crash finds the checkpoints and resumes at the first step not finished.
 */

export const UPGRADE_LOCK = 'mgr.upgrade';
export const MAINTENANCE_BY = 'mgr upgrade';

export type StepStatus = 'done' | 'skipped' | 'already-done' | 'failed' | 'planned' | 'not-run';

export interface StepReport {
  module: string;
  id: string;
  title: string;
  kind: Step['kind'];
  status: StepStatus;
  durationMs: number;
  summary: string;
  warnings: string[];
  counts: Record<string, number>;
  error?: string;
  changes?: Change[];
}

export interface UpgradeReport {
  dryRun: boolean;
  from: { release: string; rows: string[] };
  to: string;
  modules: string[];
  steps: StepReport[];
  before: StoreCounts | undefined;
  after: StoreCounts | undefined;
  backupPath: string | undefined;
  durationMs: number;
  forcedBeside: LivenessReport['live'];
}

export type UpgradeEvent =
  | { type: 'info'; message: string }
  | { type: 'warn'; message: string }
  | { type: 'step-start'; module: string; step: Step; index: number; total: number; attempt: number }
  | { type: 'step-end'; report: StepReport }
  | { type: 'progress'; step: Step; progress: Progress };

export interface RunUpgradeOptions {
  /** Target release (a module name such as "22.03"); default: the newest module. */
  to?: string;
  dryRun?: boolean;
  /** Run even though managers or agents look alive (warned, recorded in the report). */
  force?: boolean;
  /** Take a backup first (default true). */
  backup?: boolean;
  backupDir?: string;
  /** How the backup is taken (the backup capability); required unless backup is false. */
  takeBackup?: (stores: Stores, opts: { outDir: string; log: Logger; signal: AbortSignal }) => Promise<string>;
  options: UpgradeOptions;
  signal?: AbortSignal;
  log: Logger;
  onEvent?: (e: UpgradeEvent) => void;
  /** Seconds to wait for another upgrade to finish (default 0: exit at once). */
  waitLockSec?: number;
}

export interface Selection {
  detected: Extract<Detected, { kind: 'known' }>;
  target: string;
  modules: UpgradeModule[];
}

/** Which modules a run applies: those past the database's position, or with unfinished steps. */
export async function selectModules(stores: Stores, to: string | undefined): Promise<Selection> {
  const detected = await detectRelease(stores.pg);
  if (detected.kind === 'empty') {
    throw new MgrError('refused', `database "${stores.config.db.name}" has no alembic_version table: it is not a Backend.AI manager database`, {
      hint: 'check [db] name in manager.toml',
    });
  }
  if (detected.kind === 'unknown') {
    throw new MgrError('refused', `alembic_version holds ${JSON.stringify(detected.rows)}, a revision mgr does not know; refusing to guess the release`, {
      hint: 'mgr upgrades from 21.03 (518ecf41f567, 8679d0a7e22b) and 21.09 (60a1effa77d2); see `mgr status`',
    });
  }
  const known = MODULE_TARGETS.map((m) => m.release);
  const target = to ?? known[known.length - 1]!;
  if (!known.includes(target)) {
    throw new MgrError('usage', `unknown target release ${JSON.stringify(target)}; mgr has modules for: ${known.join(', ')}`);
  }
  const targetIdx = known.indexOf(target);
  const unfinished = await unfinishedModules(stores);
  const modules = MODULES.slice(0, targetIdx + 1).filter(
    (m) => revisionIndex(m.head) > detected.position || unfinished.has(m.release),
  );
  return { detected, target, modules };
}

async function unfinishedModules(stores: Stores): Promise<Set<string>> {
  return stores.pg.withClient(async (c) => {
    if ((await c.query(`SELECT to_regclass('mgr.upgrade_steps') AS t`)).rows[0]?.t === null) return new Set<string>();
    const r = await c.query<{ module: string; step_id: string; status: string }>('SELECT module, step_id, status FROM mgr.upgrade_steps');
    const out = new Set<string>();
    for (const m of MODULES) {
      const rows = r.rows.filter((x) => x.module === m.release);
      if (rows.length === 0) continue; // never started by mgr (or adopted from alembic)
      const finished = new Set(rows.filter((x) => x.status === 'done' || x.status === 'skipped').map((x) => x.step_id));
      if (m.steps.some((s) => !finished.has(s.id))) out.add(m.release);
    }
    return out;
  });
}

function checkpointFor(stores: Stores, stepId: string, dryRun: boolean): Checkpoint {
  return {
    get: async <T>() => {
      if (dryRun) return undefined;
      const r = await stores.pg.withClient((c) => c.query('SELECT detail FROM mgr.upgrade_steps WHERE step_id = $1', [stepId]));
      return (r.rows[0]?.detail ?? undefined) as T | undefined;
    },
    set: async <T>(detail: T) => {
      if (dryRun) throw new MgrError('internal', 'a step tried to write a checkpoint during --dry-run');
      await stores.pg.withClient((c) => c.query('UPDATE mgr.upgrade_steps SET detail = $2 WHERE step_id = $1', [stepId, JSON.stringify(detail)]));
    },
  };
}

export async function runUpgrade(stores: Stores, opts: RunUpgradeOptions): Promise<UpgradeReport> {
  const started = Date.now();
  const signal = opts.signal ?? new AbortController().signal;
  const emit = (e: UpgradeEvent) => opts.onEvent?.(e);
  const sel = await selectModules(stores, opts.to);
  // Every run compares the recorded checksums of applied files with the files shipped now.
  checkChecksums(loadSqlMigrations(), await stores.pg.withClient(appliedMigrations));
  const report: UpgradeReport = {
    dryRun: Boolean(opts.dryRun),
    from: { release: sel.detected.reached, rows: sel.detected.rows },
    to: sel.target,
    modules: sel.modules.map((m) => m.release),
    steps: [],
    before: undefined,
    after: undefined,
    backupPath: undefined,
    durationMs: 0,
    forcedBeside: [],
  };
  const ctxFor = (m: UpgradeModule, step: Step): StepContext => ({
    stores,
    log: opts.log.child({ step: step.id }),
    options: opts.options,
    signal,
    release: m.release,
    checkpoint: checkpointFor(stores, step.id, Boolean(opts.dryRun)),
    progress: (progress) => emit({ type: 'progress', step, progress }),
  });

  if (sel.modules.length === 0) {
    emit({ type: 'info', message: `already at ${sel.detected.reached}; nothing to do` });
    if (!opts.dryRun) await clearStaleMaintenance(stores, emit);
    report.durationMs = Date.now() - started;
    return report;
  }

  if (opts.dryRun) {
    for (const m of sel.modules) {
      for (const step of m.steps) {
        const changes = await step.plan(ctxFor(m, step));
        report.steps.push({ module: m.release, id: step.id, title: step.title, kind: step.kind, status: 'planned', durationMs: 0, summary: '', warnings: [], counts: {}, changes });
      }
    }
    report.durationMs = Date.now() - started;
    return report;
  }

  const liveness = await findLiveNodes(stores);
  if (liveness.live.length) {
    const list = liveness.live.map((n) => `${n.kind} ${n.id} (${n.evidence})`).join('; ');
    if (!opts.force) {
      throw new MgrError('refused', `managers or agents are running: ${list}`, {
        hint: 'shut every manager and agent down first (Backend.AI MIGRATION.md: "The migration should be done while the managers and agents are shut down"); --force overrides',
        details: { live: liveness.live, checked: liveness.checked },
      });
    }
    emit({ type: 'warn', message: `--force: upgrading beside live nodes: ${list}` });
    report.forcedBeside = liveness.live;
  }

  const locks = lockBackendFor(stores, 'pg_advisory');
  const held: HeldLock = await locks.acquire({ name: UPGRADE_LOCK, waitMs: (opts.waitLockSec ?? 0) * 1000, purpose: `mgr upgrade to ${sel.target}` });
  let maintenanceOwned = false;
  let runId: number | undefined;
  try {
    await stores.pg.withClient(ensureMgrTables);
    const maint = await enterMaintenance(stores.etcd, { reason: `upgrade to ${sel.target}`, by: MAINTENANCE_BY });
    maintenanceOwned = maint.created || maint.marker.by === MAINTENANCE_BY;
    if (!maintenanceOwned) emit({ type: 'info', message: `maintenance mode was already on (${maint.marker.reason}, by ${maint.marker.by}); it stays on afterwards` });
    else emit({ type: 'info', message: `maintenance mode on; etcd manager/status = frozen` });

    report.before = await takeCounts(stores);
    runId = await openRun(stores, sel);
    report.backupPath = await backupOnce(stores, opts, runId, signal, emit);

    for (const m of sel.modules) {
      for (const [index, step] of m.steps.entries()) {
        if (signal.aborted) throw signal.reason instanceof MgrError ? signal.reason : new MgrError('interrupted', 'interrupted');
        const r = await runStep(stores, m, step, index, ctxFor(m, step), emit);
        report.steps.push(r);
        if (r.status === 'failed') {
          throw new MgrError('stepFailed', `step ${step.id} failed: ${r.error}`, {
            hint: `the state is saved; fix the cause and run \`mgr upgrade\` again to resume at this step (see MIGRATION.md "When a step fails")`,
            details: { step: step.id },
          });
        }
      }
    }
    report.after = await takeCounts(stores);
    await closeRun(stores, runId, 'done');
    return report;
  } catch (e) {
    if (runId !== undefined) await closeRun(stores, runId, `failed: ${errorMessage(e)}`).catch(() => undefined);
    throw e;
  } finally {
    if (maintenanceOwned) {
      const marker = await getMaintenance(stores.etcd).catch(() => undefined);
      if (marker?.by === MAINTENANCE_BY) await leaveMaintenance(stores.etcd).catch((err) => opts.log.error({ err }, 'could not turn maintenance mode off'));
    }
    // A lock lost with its connection (PostgreSQL restarted) is already free.
    await held.release().catch((err) => held.lost.aborted || opts.log.warn({ err }, 'could not release the upgrade lock'));
    report.durationMs = Date.now() - started;
  }
}

/**
 * An upgrade killed after its last step, before it turned maintenance off, leaves the marker on
 * with nothing left to do: the next run clears it (only when no upgrade holds the lock).
 */
async function clearStaleMaintenance(stores: Stores, emit: (e: UpgradeEvent) => void): Promise<void> {
  const marker = await getMaintenance(stores.etcd);
  if (marker?.by !== MAINTENANCE_BY) return;
  const held = await lockBackendFor(stores, 'pg_advisory').acquire({ name: UPGRADE_LOCK, waitMs: 0, purpose: 'clear stale maintenance' });
  try {
    await leaveMaintenance(stores.etcd);
    emit({ type: 'info', message: `maintenance mode left on by an interrupted upgrade (pid ${marker.pid} on ${marker.host}) is now off` });
  } finally {
    await held.release();
  }
}

async function runStep(
  stores: Stores,
  m: UpgradeModule,
  step: Step,
  index: number,
  ctx: StepContext,
  emit: (e: UpgradeEvent) => void,
): Promise<StepReport> {
  const base = { module: m.release, id: step.id, title: step.title, kind: step.kind };
  const prev = await stores.pg.withClient((c) =>
    c.query<{ status: string; attempts: number; result: StepResult | null; duration_ms: number | null }>(
      'SELECT status, attempts, result, duration_ms FROM mgr.upgrade_steps WHERE step_id = $1',
      [step.id],
    ),
  );
  const row = prev.rows[0];
  if (row && (row.status === 'done' || row.status === 'skipped')) {
    const r: StepReport = { ...base, status: 'already-done', durationMs: 0, summary: row.result?.summary ?? row.status, warnings: [], counts: {} };
    emit({ type: 'step-end', report: r });
    return r;
  }
  const attempt = (row?.attempts ?? 0) + 1;
  await stores.pg.withClient((c) =>
    c.query(
      `INSERT INTO mgr.upgrade_steps (step_id, module, title, kind, status, attempts, started_at)
       VALUES ($1, $2, $3, $4, 'running', $5, now())
       ON CONFLICT (step_id) DO UPDATE SET status = 'running', attempts = $5, started_at = now(), finished_at = NULL, error = NULL`,
      [step.id, m.release, step.title, step.kind, attempt],
    ),
  );
  emit({ type: 'step-start', module: m.release, step, index, total: m.steps.length, attempt });
  const t0 = Date.now();
  try {
    const result = await step.apply(ctx);
    if (!result.skipped) await step.verify(ctx);
    const durationMs = Date.now() - t0;
    const status = result.skipped ? 'skipped' : 'done';
    await stores.pg.withClient((c) =>
      c.query(`UPDATE mgr.upgrade_steps SET status = $2, finished_at = now(), duration_ms = $3, result = $4 WHERE step_id = $1`, [
        step.id,
        status,
        durationMs,
        JSON.stringify(result),
      ]),
    );
    const r: StepReport = { ...base, status, durationMs, summary: result.summary, warnings: result.warnings ?? [], counts: result.counts ?? {} };
    emit({ type: 'step-end', report: r });
    return r;
  } catch (e) {
    const durationMs = Date.now() - t0;
    // A store that went away mid-step is named as such, not by its driver's message.
    const fault = storeFault(stores, e);
    const message = errorMessage(fault ?? e);
    await stores.pg
      .withClient((c) =>
        c.query(`UPDATE mgr.upgrade_steps SET status = 'failed', finished_at = now(), duration_ms = $2, error = $3 WHERE step_id = $1`, [step.id, durationMs, message]),
      )
      .catch(() => undefined);
    if (e instanceof MgrError && (e.code === 'interrupted' || e.code === 'pending' || e.code === 'refused')) throw e;
    const r: StepReport = { ...base, status: 'failed', durationMs, summary: '', warnings: [], counts: {}, error: message };
    emit({ type: 'step-end', report: r });
    if (fault) {
      // Exit 4, as when the store is down at start: nothing is wrong with the step or the data.
      throw new MgrError('storeUnreachable', `step ${step.id} stopped: ${fault.message}`, {
        cause: e,
        hint: `${fault.hint}; the work done so far is saved: once it is reachable, run \`mgr upgrade\` again to resume at this step`,
        details: { step: step.id },
      });
    }
    return r;
  }
}

async function openRun(stores: Stores, sel: Selection): Promise<number> {
  return stores.pg.withClient(async (c) => {
    const r = await c.query<{ id: string }>(
      `INSERT INTO mgr.upgrade_runs (target, host, pid, from_release) VALUES ($1, $2, $3, $4) RETURNING id`,
      [sel.target, os.hostname(), process.pid, sel.detected.reached],
    );
    return Number(r.rows[0]!.id);
  });
}

async function closeRun(stores: Stores, id: number, outcome: string): Promise<void> {
  await stores.pg.withClient((c) => c.query('UPDATE mgr.upgrade_runs SET finished_at = now(), outcome = $2 WHERE id = $1', [id, outcome]));
}

/**
 * The pre-upgrade backup is taken once per upgrade: a run resumed after a crash keeps the backup
 * of the untouched installation instead of backing up a half-upgraded one.
 */
async function backupOnce(
  stores: Stores,
  opts: RunUpgradeOptions,
  runId: number,
  signal: AbortSignal,
  emit: (e: UpgradeEvent) => void,
): Promise<string | undefined> {
  if (opts.backup === false) {
    emit({ type: 'warn', message: '--no-backup: no backup taken; the only rollback of an upgrade is restoring a backup taken before it' });
    return undefined;
  }
  const existing = await lastUpgradeBackup(stores);
  const started = await stores.pg.withClient((c) => c.query(`SELECT count(*)::int AS n FROM mgr.upgrade_steps`));
  if (existing && started.rows[0].n > 0) {
    emit({ type: 'info', message: `resuming: keeping the pre-upgrade backup ${existing}` });
    await stores.pg.withClient((c) => c.query('UPDATE mgr.upgrade_runs SET backup_path = $2 WHERE id = $1', [runId, existing]));
    return existing;
  }
  if (!opts.takeBackup) throw new MgrError('internal', 'runUpgrade needs takeBackup unless backup is false');
  emit({ type: 'info', message: 'taking the pre-upgrade backup' });
  const dir = await opts.takeBackup(stores, { outDir: opts.backupDir ?? process.cwd(), log: opts.log, signal });
  await stores.pg.withClient((c) => c.query('UPDATE mgr.upgrade_runs SET backup_path = $2 WHERE id = $1', [runId, dir]));
  emit({ type: 'info', message: `backup written to ${dir}` });
  return dir;
}

/** Where the newest pre-upgrade backup is (for `mgr upgrade rollback`). */
export async function lastUpgradeBackup(stores: Stores): Promise<string | undefined> {
  return stores.pg.withClient(async (c) => {
    if ((await c.query(`SELECT to_regclass('mgr.upgrade_runs') AS t`)).rows[0]?.t === null) return undefined;
    const r = await c.query<{ backup_path: string }>(
      'SELECT backup_path FROM mgr.upgrade_runs WHERE backup_path IS NOT NULL ORDER BY id DESC LIMIT 1',
    );
    return r.rows[0]?.backup_path;
  });
}
