import { CronJob } from 'cron';
import { errorMessage, isMgrError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Stores } from '../stores/index.js';
import { clearHistory, type ClearHistoryOptions, type ClearHistoryReport } from './purge.js';
import { parseRetention } from './retention.js';
import { validateCronExpression } from './schedule.js';

export interface SchedulerOptions {
  /** Cron expression (five fields, six with seconds, or a preset), in the host's local time like cron. */
  at: string;
  retention: string;
  /** Opened for each run and closed after it, so a long-lived process never holds stale connections. */
  openStores: () => Promise<Stores>;
  /** Aborting stops the scheduler: the current run stops after its batch and releases its lock. */
  signal: AbortSignal;
  log: Logger;
  /** Passed through to every run (batch size, pause, vacuum, lock wait). */
  run?: Pick<ClearHistoryOptions, 'batchSize' | 'targetStatementMs' | 'pauseMs' | 'vacuum' | 'waitLockMs' | 'replicaRole'>;
  /** Called after each run with its report or its error. */
  onRun?: (r: { report?: ClearHistoryReport; error?: unknown }) => void;
}

export interface SchedulerSummary {
  ticks: number;
  runs: number;
  /** Ticks that came while the previous run was still going (skipped, never overlapped). */
  skipped: number;
  failures: number;
  kernelsDeleted: number;
}

/**
 * The clear-history job on a cron expression inside one long-running process, for hosts without
 * cron (containers). Never runs two at once: a tick during a run is logged and skipped. Resolves
 * when the signal aborts and the current run (if any) has stopped.
 */
export async function runScheduler(opts: SchedulerOptions): Promise<SchedulerSummary> {
  const at = validateCronExpression(opts.at, { seconds: true });
  const retention = parseRetention(opts.retention);
  const { log, signal } = opts;
  const summary: SchedulerSummary = { ticks: 0, runs: 0, skipped: 0, failures: 0, kernelsDeleted: 0 };
  let current: Promise<void> | undefined;

  const runOnce = async (): Promise<void> => {
    const run = ++summary.runs;
    const started = Date.now();
    log.info({ event: 'clear-history.run.start', run, retention: retention.text }, 'scheduled clear-history run started');
    try {
      const stores = await opts.openStores();
      try {
        const report = await clearHistory(stores, { ...opts.run, retention, signal, log });
        summary.kernelsDeleted += report.kernelsDeleted;
        log.info({ event: 'clear-history.run.done', run, ...report }, `scheduled clear-history run ${report.interrupted ? 'stopped early' : 'finished'}`);
        opts.onRun?.({ report });
      } finally {
        await stores.close();
      }
    } catch (e) {
      if (signal.aborted) {
        // Stopped while waiting for the lock or opening the stores: nothing was deleted, nothing failed.
        log.info({ event: 'clear-history.run.stopped', run, err: errorMessage(e) }, 'scheduled clear-history run stopped before it began');
        return;
      }
      summary.failures++;
      const code = isMgrError(e) ? e.code : 'internal';
      // Another run holding the lock, or maintenance, is an expected outcome, not a failure to shout about.
      const level = code === 'lockBusy' || code === 'refused' ? 'warn' : 'error';
      log[level]({ event: 'clear-history.run.failed', run, code, durationMs: Date.now() - started, err: errorMessage(e) }, 'scheduled clear-history run failed');
      opts.onRun?.({ error: e });
    }
  };

  const job = CronJob.from({
    cronTime: at,
    start: false,
    onTick: () => {
      summary.ticks++;
      if (signal.aborted) return;
      if (current) {
        summary.skipped++;
        log.warn({ event: 'clear-history.tick.skipped', run: summary.runs }, 'tick skipped: the previous clear-history run is still in progress');
        return;
      }
      current = runOnce().finally(() => {
        current = undefined;
      });
    },
  });

  await new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    signal.addEventListener('abort', () => resolve(), { once: true });
    job.start();
    log.info({ event: 'scheduler.start', at, retention: retention.text, next: job.nextDate().toUTC().toISO() }, 'clear-history scheduler started');
  });
  await job.stop();
  if (current) {
    log.info({ event: 'scheduler.stopping' }, 'waiting for the current run to stop after its batch');
    await current;
  }
  log.info({ event: 'scheduler.stop', ...summary }, 'clear-history scheduler stopped');
  return summary;
}
