import type { Stores } from '../stores/index.js';
import { lockBackendFor } from '../locks/index.js';
import { lastUpgradeBackup, selectModules, UPGRADE_LOCK } from './runner.js';
import { detectRelease } from './detect.js';

export interface RecordedStep {
  stepId: string;
  module: string;
  status: string;
  attempts: number;
  durationMs: number | null;
  error: string | null;
  /** Every warning the step reported (the terminal shows only the first few). */
  warnings: string[];
}

export interface UpgradeStatus {
  release: string;
  rows: string[];
  pending: string[];
  steps: RecordedStep[];
  lastBackup: string | undefined;
}

export async function upgradeStatus(stores: Stores): Promise<UpgradeStatus> {
  const detected = await detectRelease(stores.pg);
  const release = detected.kind === 'known' ? detected.reached : detected.kind;
  const rows = detected.kind === 'empty' ? [] : detected.rows;
  const pending = detected.kind === 'known' ? (await selectModules(stores, undefined)).modules.map((m) => m.release) : [];
  const steps = await stores.pg.withClient(async (c) => {
    if ((await c.query(`SELECT to_regclass('mgr.upgrade_steps') AS t`)).rows[0]?.t === null) return [];
    const r = await c.query<{ step_id: string; module: string; status: string; attempts: number; duration_ms: number | null; error: string | null; warnings: string[] | null }>(
      `SELECT step_id, module, status, attempts, duration_ms, error, result->'warnings' AS warnings
         FROM mgr.upgrade_steps ORDER BY started_at NULLS LAST, step_id`,
    );
    return r.rows.map((x) => ({
      stepId: x.step_id,
      module: x.module,
      status: x.status,
      attempts: x.attempts,
      durationMs: x.duration_ms,
      error: x.error,
      warnings: x.warnings ?? [],
    }));
  });
  // A step left "running" by a process that is gone (killed, or PostgreSQL restarted under it)
  // is not running: no upgrade holds the lock.
  if (steps.some((s) => s.status === 'running') && !(await lockBackendFor(stores, 'pg_advisory').holder(UPGRADE_LOCK))) {
    for (const s of steps) if (s.status === 'running') s.status = 'interrupted';
  }
  return { release, rows, pending, steps, lastBackup: await lastUpgradeBackup(stores) };
}
