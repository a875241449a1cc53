import { Command, Option } from 'commander';
import { EXIT } from '../errors.js';
import {
  backgroundMigrationStatus,
  DEFAULT_STALE_AFTER_MS,
  pauseBackgroundMigration,
  resumeBackgroundMigration,
  runBackgroundMigrations,
  setBatchSize,
  type MigrationStatus,
  type RunOutcome,
  type StatusChange,
} from '../bbm/index.js';
import { registerImageMigrations } from '../images/etcd-migration.js';
import { action, dryRunOption, interrupt, jsonOption, nonNegativeNumber, out, positiveInt, printJson, progressReporter, withStores } from './common.js';

const SQL_HELP = `
Pausing from SQL (GitLab's runbook statements work as written once mgr's schema is on the
session's search_path; mgr keeps its tables in schema "mgr" so "public" stays Backend.AI's):
  SET search_path = mgr, public;
  UPDATE batched_background_migrations SET status = 0 WHERE name = 'images_from_etcd';  -- pause
  UPDATE batched_background_migrations SET status = 1 WHERE name = 'images_from_etcd';  -- resume
Workers re-read the status before every batch: a pause stops them after the batch in flight.

Exit codes of run: 0 finished, 10 paused (resume, then run again), 7 failed (fix the cause, then
run again: failed batches get a fresh attempt budget), 130 interrupted (run again to resume).`;

const OUTCOME_EXIT: Record<RunOutcome, number> = { finished: EXIT.ok, paused: EXIT.pending, failed: EXIT.stepFailed, interrupted: EXIT.interrupted };

function formatDuration(sec: number | null): string {
  if (sec === null) return '-';
  if (sec < 60) return `${sec}s`;
  if (sec < 3600) return `${Math.floor(sec / 60)}m${String(sec % 60).padStart(2, '0')}s`;
  return `${Math.floor(sec / 3600)}h${String(Math.floor((sec % 3600) / 60)).padStart(2, '0')}m`;
}

function printStatus(rows: MigrationStatus[]): void {
  if (!rows.length) {
    out('no background migrations');
    return;
  }
  const table = [
    ['NAME', 'STATUS', 'PROGRESS', 'ROWS', 'RATE/s', 'ETA', 'BATCH', 'JOBS active/finished/failed', 'WORKERS'],
    ...rows.map((s) => [
      s.name,
      s.status,
      `${s.progressPct.toFixed(1)}%`,
      `${s.rowsDone}/${s.totalEstimate ?? '?'}`,
      s.ratePerSec === null ? '-' : String(s.ratePerSec),
      formatDuration(s.etaSec),
      String(s.batchSize),
      `${s.jobs.active}/${s.jobs.finished}/${s.jobs.failed}`,
      String(s.liveWorkers.length),
    ]),
  ];
  const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
  for (const r of table) out(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  for (const s of rows.filter((x) => x.failureError)) out(`${s.name} failed (code ${s.failureErrorCode}): ${s.failureError}`);
}

function printChanges(changes: StatusChange[], dryRun: boolean, verb: string): void {
  if (!changes.length) out(`nothing to ${verb}`);
  for (const c of changes) out(`${dryRun ? 'would change' : 'changed'} ${c.name}: ${c.from} → ${c.to}`);
}

export function registerBackgroundMigrate(program: Command): void {
  registerImageMigrations();
  const bm = program
    .command('background-migrate')
    .description('batched background migrations (e.g. images_from_etcd): status, pause, resume, run, set-batch-size')
    .addHelpText('after', SQL_HELP);

  bm.command('status')
    .description('progress %, rows done, rate and ETA of one migration or all')
    .argument('[name]', 'migration name (default: all)')
    .addOption(jsonOption())
    .action(
      action(async (name: string | undefined, flags: { json?: boolean }, cmd: Command) => {
        const rows = await withStores(cmd, (stores) => stores.pg.withClient((c) => backgroundMigrationStatus(c, name)));
        if (flags.json) printJson({ ok: true, migrations: rows });
        else printStatus(rows);
      }),
    );

  for (const [verb, fn, what] of [
    ['pause', pauseBackgroundMigration, 'workers stop before their next batch (a batch in flight finishes)'],
    ['resume', resumeBackgroundMigration, 'paused migrations become active again; `run` (or running workers) continue them'],
  ] as const) {
    bm.command(verb)
      .description(`${verb} one migration, or all when NAME is omitted: ${what}`)
      .argument('[name]', 'migration name (default: all)')
      .addOption(dryRunOption())
      .addOption(jsonOption())
      .action(
        action(async (name: string | undefined, flags: { dryRun?: boolean; json?: boolean }, cmd: Command) => {
          const changes = await withStores(cmd, (stores) => stores.pg.withClient((c) => fn(c, name, { dryRun: flags.dryRun })));
          if (flags.json) printJson({ ok: true, dryRun: Boolean(flags.dryRun), changes });
          else printChanges(changes, Boolean(flags.dryRun), verb);
        }),
      );
  }

  bm.command('run')
    .description(
      'run migrations to the end in the foreground, cooperating with other `run` processes on other hosts; ' +
        'Ctrl-C stops after the current batch and leaves a state the next run resumes. A failed migration is retried; a paused one is left paused',
    )
    .argument('[name]', 'migration name (default: every unfinished one)')
    .addOption(new Option('--workers <n>', 'concurrent workers in this process').argParser(positiveInt('--workers')).default(1))
    .addOption(
      new Option('--stale-after <seconds>', 'take over a batch whose worker has not heart-beaten for this long')
        .argParser(nonNegativeNumber('--stale-after'))
        .default(DEFAULT_STALE_AFTER_MS / 1000),
    )
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .action(
      action(async (name: string | undefined, flags: { workers: number; staleAfter: number; dryRun?: boolean; json?: boolean }, cmd: Command) => {
        return withStores(cmd, async (stores, log) => {
          if (flags.dryRun) {
            const rows = (await stores.pg.withClient((c) => backgroundMigrationStatus(c, name))).filter((s) => s.status !== 'finished');
            if (flags.json) printJson({ ok: true, dryRun: true, wouldRun: rows });
            else {
              out(rows.length ? 'would run (paused ones are left paused, failed ones are taken up again):' : 'nothing to run');
              printStatus(rows);
            }
            return EXIT.ok;
          }
          const bars = new Map<string, ReturnType<typeof progressReporter>>();
          try {
            const summary = await runBackgroundMigrations(stores, {
              names: name ? [name] : undefined,
              workers: flags.workers,
              staleAfterMs: Math.max(100, flags.staleAfter * 1000),
              signal: interrupt.signal,
              log,
              onProgress: (e) => {
                let bar = bars.get(e.migration);
                if (!bar) bars.set(e.migration, (bar = progressReporter(e.migration, { json: flags.json })));
                bar.update({ done: e.rowsDone, total: e.total ?? undefined, unit: 'rows', message: e.kind === 'final' ? 'final step' : '' });
              },
            });
            for (const b of bars.values()) b.stop();
            bars.clear();
            if (flags.json) printJson({ ok: summary.outcome === 'finished', outcome: summary.outcome, migrations: summary.migrations });
            else {
              printStatus(summary.migrations);
              for (const m of summary.migrations) for (const line of m.report?.lines ?? []) out(`${m.name}: ${line}`);
              if (summary.outcome === 'paused') out('paused: resume with `background-migrate resume [NAME]`, then run again');
              if (summary.outcome === 'interrupted') out('interrupted: the batches done are kept; run again to continue');
            }
            return OUTCOME_EXIT[summary.outcome];
          } finally {
            for (const b of bars.values()) b.stop();
          }
        });
      }),
    );

  bm.command('set-batch-size')
    .description('change the batch size of a migration; the next batch any worker claims uses it')
    .argument('<name>', 'migration name')
    .argument('<n>', 'items per batch', positiveInt('batch size'))
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .action(
      action(async (name: string, n: number, flags: { dryRun?: boolean; json?: boolean }, cmd: Command) => {
        const r = await withStores(cmd, (stores) => stores.pg.withClient((c) => setBatchSize(c, name, n, { dryRun: flags.dryRun })));
        if (flags.json) printJson({ ok: true, dryRun: Boolean(flags.dryRun), ...r });
        else out(`${flags.dryRun ? 'would set' : 'set'} batch size of ${r.name}: ${r.from} → ${r.to}`);
      }),
    );
}
