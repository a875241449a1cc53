import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { MgrError, errorMessage } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { storeFault, type Stores } from '../stores/index.js';
import { backgroundMigrationStatus, DEFAULT_STALE_AFTER_MS, getMigration, listMigrations, type MigrationStatus } from './admin.js';
import { claimNextJob, failJob, finishJob, heartbeat, reactivateFailedMigration, type ClaimedJob } from './claim.js';
import { backgroundMigrationDefinition } from './registry.js';
import { ensureBbmTables } from './schema.js';
import { BackgroundMigrationFailure, MIGRATION_STATUS, type BackgroundMigrationDefinition, type MigrationReport, type MigrationRow } from './types.js';

export interface RunOptions {
  /** Migrations to run, in this order; default: every one not finished, oldest first. */
  names?: string[];
  /** Concurrent workers in this process (each takes its own batches). @default 1 */
  workers?: number;
  signal?: AbortSignal;
  onProgress?: (e: BatchEvent) => void;
  log?: Logger;
  /** A batch whose worker has not heart-beaten for this long is taken over. @default 60000 */
  staleAfterMs?: number;
}

export interface BatchEvent {
  migration: string;
  worker: string;
  jobId: number;
  kind: 'batch' | 'final';
  range: [string | null, string | null];
  outcome: 'finished' | 'failed';
  rows: number;
  error?: string;
  /** The migration's progress after this batch (all workers, all processes). */
  rowsDone: number;
  total: number | null;
}

export type RunOutcome = 'finished' | 'paused' | 'failed' | 'interrupted';

export interface RunSummary {
  /** failed > interrupted > paused > finished: the worst of the migrations run. */
  outcome: RunOutcome;
  migrations: (MigrationStatus & { batchesRunHere: number; report?: MigrationReport })[];
}

/**
 * Runs migrations to the end in the foreground, cooperating with any other workers (other
 * processes, other machines) on the same database. Stops a migration when it is paused (from
 * the CLI or SQL) or failed, and everything after the current batches when `signal` aborts,
 * leaving a state any later run resumes. A failed migration is taken up again (fresh attempt
 * budget); a paused one is left paused.
 */
export async function runBackgroundMigrations(stores: Stores, opts: RunOptions = {}): Promise<RunSummary> {
  const log = opts.log ?? silentLogger;
  const staleAfterMs = opts.staleAfterMs ?? DEFAULT_STALE_AFTER_MS;
  const workers = Math.max(1, opts.workers ?? 1);
  await stores.pg.withClient(ensureBbmTables);
  const targets = await stores.pg.withClient(async (c) =>
    opts.names?.length
      ? Promise.all(opts.names.map((n) => getMigration(c, n)))
      : (await listMigrations(c)).filter((m) => m.status !== MIGRATION_STATUS.finished),
  );
  const ran = new Map<string, number>();
  let interrupted = false;
  for (const target of targets) {
    if (opts.signal?.aborted) {
      interrupted = true;
      break;
    }
    if (target.status === MIGRATION_STATUS.failed) {
      await stores.pg.withClient((c) => reactivateFailedMigration(c, target.id));
      log.info({ migration: target.name }, 'taking a failed background migration up again');
    }
    await fillTotal(stores, target, log);
    const host = `${os.hostname()}:${process.pid}`;
    // One worker's error (a store gone) stops the others after their current batch, then is thrown.
    const failed = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, failed.signal]) : failed.signal;
    const loops = await Promise.allSettled(
      Array.from({ length: workers }, (_, i) =>
        workerLoop(stores, target, workers === 1 ? host : `${host}/${i + 1}`, { ...opts, signal, log, staleAfterMs }).catch((e: unknown) => {
          failed.abort(e);
          throw e;
        }),
      ),
    );
    const error = loops.find((l): l is PromiseRejectedResult => l.status === 'rejected');
    if (error) throw error.reason;
    ran.set(target.name, loops.reduce((a, l) => a + (l.status === 'fulfilled' ? l.value : 0), 0));
    if (opts.signal?.aborted) interrupted = true;
  }
  return summarize(stores, targets, ran, interrupted, log, staleAfterMs);
}

/** One worker: claim, work, record, until the migration stops or the signal aborts. Returns batches run. */
async function workerLoop(
  stores: Stores,
  target: MigrationRow,
  worker: string,
  opts: RunOptions & { log: Logger; staleAfterMs: number },
): Promise<number> {
  const pollMs = Math.min(1000, Math.max(50, opts.staleAfterMs / 4));
  let batches = 0;
  while (!opts.signal?.aborted) {
    const claim = await claimNextJob(stores, target.id, worker, opts);
    if (claim.kind === 'stop') break;
    if (claim.kind === 'wait') {
      await sleep(pollMs, undefined, { signal: opts.signal }).catch(() => undefined);
      continue;
    }
    await runJob(stores, claim.job, claim.migration, claim.def, opts);
    batches++;
  }
  return batches;
}

async function runJob(
  stores: Stores,
  job: ClaimedJob,
  m: MigrationRow,
  def: BackgroundMigrationDefinition,
  opts: RunOptions & { log: Logger; staleAfterMs: number },
): Promise<void> {
  const ctx = { stores, migration: m, log: opts.log };
  const beat = setInterval(() => {
    heartbeat(stores.pg.pool, job).then(
      (mine) => mine || opts.log.warn({ migration: m.name, job: job.id }, 'this batch was taken over by another worker; finishing it anyway (work is idempotent)'),
      (e) => opts.log.warn({ migration: m.name, job: job.id, err: errorMessage(e) }, 'heartbeat failed'),
    );
  }, Math.max(100, Math.floor(opts.staleAfterMs / 3)));
  const event = { migration: m.name, worker: job.worker, jobId: job.id, kind: job.kind, range: [job.min, job.max] as [string | null, string | null] };
  const started = Date.now();
  try {
    const result = job.kind === 'final' ? await def.finalize!(ctx) : await def.work(ctx, { min: job.min!, max: job.max! });
    clearInterval(beat);
    const done = await finishJob(stores, job, m.id, result);
    opts.log.debug({ ...event, rows: result.rows, ms: Date.now() - started }, 'batch finished');
    opts.onProgress?.({ ...event, outcome: 'finished', rows: result.rows, rowsDone: done.rowsDone, total: done.total });
  } catch (e) {
    clearInterval(beat);
    const { migrationFailed } = await failJob(stores, job, m, e);
    // A store gone is no fault of the batch: stop here (the batch is retried later) instead of
    // spending the migration's attempts against a server that is down.
    const fault = storeFault(stores, e);
    if (fault) throw fault;
    opts.log.error({ ...event, attempt: job.attempts, err: errorMessage(e), migrationFailed }, 'batch failed');
    const now = await stores.pg.withClient((c) => getMigration(c, m.name));
    opts.onProgress?.({ ...event, outcome: 'failed', rows: 0, error: errorMessage(e), rowsDone: now.rowsDone, total: now.totalTupleCount });
  } finally {
    clearInterval(beat);
  }
}

/** A migration enqueued without a total gets one from its definition before the first batch. */
async function fillTotal(stores: Stores, m: MigrationRow, log: Logger): Promise<void> {
  if (m.totalTupleCount !== null) return;
  const def = backgroundMigrationDefinition(m.jobSignatureName);
  if (!def) return; // the claim fails the migration with code 3
  let total: number;
  try {
    total = await def.estimateTotal({ stores, migration: m, log });
  } catch (e) {
    if (e instanceof BackgroundMigrationFailure) return; // the claim fails the migration with its code
    throw e;
  }
  await stores.pg.withClient((c) =>
    c.query('UPDATE mgr.batched_background_migrations SET total_tuple_count = $2 WHERE id = $1 AND total_tuple_count IS NULL', [m.id, total]),
  );
}

async function summarize(
  stores: Stores,
  targets: MigrationRow[],
  ran: Map<string, number>,
  interrupted: boolean,
  log: Logger,
  staleAfterMs: number,
): Promise<RunSummary> {
  const migrations: RunSummary['migrations'] = [];
  for (const t of targets) {
    const [st] = await stores.pg.withClient((c) => backgroundMigrationStatus(c, t.name, { staleAfterMs }));
    const def = backgroundMigrationDefinition(t.jobSignatureName);
    let report: MigrationReport | undefined;
    if (st!.status === 'finished' && def?.report) {
      const m = await stores.pg.withClient((c) => getMigration(c, t.name));
      report = await def.report({ stores, migration: m, log });
    }
    migrations.push({ ...st!, batchesRunHere: ran.get(t.name) ?? 0, ...(report ? { report } : {}) });
  }
  const has = (s: string) => migrations.some((m) => m.status === s);
  const unfinished = migrations.some((m) => m.status !== 'finished');
  const outcome: RunOutcome = has('failed') ? 'failed' : interrupted && unfinished ? 'interrupted' : has('paused') || unfinished ? 'paused' : 'finished';
  return { outcome, migrations };
}

/** The summary's outcome as an error, for callers (upgrade steps) that need the migration finished. */
export function unfinishedError(summary: RunSummary, finishCommand: string): MgrError | undefined {
  const bad = summary.migrations.filter((m) => m.status !== 'finished');
  if (!bad.length) return undefined;
  const what = bad.map((m) => `${m.name} is ${m.status} at ${m.progressPct}%${m.failureError ? ` (${m.failureError})` : ''}`).join('; ');
  const hint = `finish it with: ${finishCommand}`;
  if (summary.outcome === 'failed') return new MgrError('stepFailed', `background migration failed: ${what}`, { hint });
  if (summary.outcome === 'interrupted') return new MgrError('interrupted', `background migration interrupted: ${what}`, { hint });
  return new MgrError('pending', `background migration not finished: ${what}`, { hint });
}
