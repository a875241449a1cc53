import { Command, Option } from 'commander';
import { EXIT } from '../errors.js';
import { openStores } from '../stores/index.js';
import {
  clearHistory,
  crontabLine,
  cronFileText,
  currentMgrCommand,
  describeRetention,
  installSchedule,
  parseRetention,
  removeSchedule,
  runScheduler,
  scheduleStatus,
  DEFAULT_BATCH_SIZE,
  DEFAULT_CRON_FILE,
  DEFAULT_PAUSE_MS,
  DEFAULT_RETENTION,
  DEFAULT_SCHEDULE_AT,
  DEFAULT_SCHEDULE_LOG,
  DEFAULT_SCHEDULE_RETENTION,
  DEFAULT_TARGET_STATEMENT_MS,
  SCHEDULE_WAIT_LOCK_SECONDS,
  type ClearHistoryReport,
  type ScheduleSpec,
} from '../history/index.js';
import {
  action,
  cronFlag,
  dryRunOption,
  interrupt,
  jsonOption,
  loadConfig,
  logger,
  nonNegativeNumber,
  out,
  positiveInt,
  printJson,
  progressReporter,
  retentionFlag,
  withStores,
} from './common.js';

interface RunFlags {
  retention: string;
  dryRun?: boolean;
  batchSize: number;
  targetStatementMs: number;
  pauseMs: number;
  waitLock: number;
  vacuum: boolean;
  replicaRole: boolean;
  json?: boolean;
}

interface InstallFlags {
  retention: string;
  at: string;
  cronFile: string;
  print?: boolean;
  logFile: string;
  mgrCommand: string;
  dryRun?: boolean;
  json?: boolean;
}

const RETENTION_HELP = 'keep this much history: seconds (3600), or N with s, m, h, d, w (decimals allowed) or mo, yr (whole numbers)';

export function registerClearHistory(program: Command): void {
  const group = program
    .command('clear-history')
    .description(
      "delete the history of kernels terminated before now − retention: their kernels rows (with session_dependencies and vfolder_attachment rows) and their Redis stat keys, in small batches under the 'mgr.clear-history' lock",
    );

  // `run` is the default subcommand, so `mgr clear-history -r 30d` works as in Backend.AI while
  // `schedule install -r …` keeps its own -r (a parent with options would swallow it).
  const run = group
    .command('run', { isDefault: true })
    .description('delete history now (the default: `mgr clear-history [options]` is `mgr clear-history run [options]`)')
    .option('-r, --retention <duration>', RETENTION_HELP, DEFAULT_RETENTION)
    .addOption(dryRunOption())
    .option('--batch-size <n>', 'the most kernels deleted per transaction', positiveInt('--batch-size'), DEFAULT_BATCH_SIZE)
    .option('--target-statement-ms <ms>', 'shrink batches so each DELETE statement takes about this long at most', positiveInt('--target-statement-ms'), DEFAULT_TARGET_STATEMENT_MS)
    .option('--pause-ms <ms>', 'pause between batches, for replicas and autovacuum', nonNegativeNumber('--pause-ms'), DEFAULT_PAUSE_MS)
    .option('--wait-lock <seconds>', 'wait this long for another run to release the lock (exit 6 after)', nonNegativeNumber('--wait-lock'), 0)
    .option('--no-vacuum', 'skip Redis compaction (BGREWRITEAOF/BGSAVE) and VACUUM (ANALYZE) after deleting')
    .option(
      '--no-replica-role',
      "always fire Backend.AI's ON DELETE CASCADE triggers instead of deleting the dependent rows directly under session_replication_role = replica (slower: each kernel then scans vfolder_attachment)",
    )
    .addOption(jsonOption())
    .addHelpText(
      'after',
      '\nExit codes: 0 done, 2 bad flag or retention, 5 refused (maintenance mode), 6 another run holds the lock, 130 interrupted (what was deleted stays deleted; rerun to finish).',
    )
    .action(
      action(async (flags: RunFlags, cmd: Command) => {
        const retention = parseRetention(flags.retention);
        return withStores(cmd, async (stores, log) => {
          const bar = progressReporter(flags.dryRun ? 'clear-history (dry run)' : 'clear-history', { json: flags.json });
          let report: ClearHistoryReport;
          try {
            report = await clearHistory(stores, {
              retention,
              dryRun: flags.dryRun,
              batchSize: flags.batchSize,
              targetStatementMs: flags.targetStatementMs,
              pauseMs: flags.pauseMs,
              waitLockMs: Math.round(flags.waitLock * 1000),
              vacuum: flags.vacuum,
              replicaRole: flags.replicaRole,
              signal: interrupt.signal,
              onProgress: (p) => bar.update(p),
              log,
            });
          } finally {
            bar.stop();
          }
          if (flags.json) printJson(report);
          else printReport(report);
          return report.interrupted ? EXIT.interrupted : EXIT.ok;
        });
      }),
    );
  group.addHelpText('after', () => `\nOptions of the default command:\n${run.helpInformation().split('\nOptions:\n')[1] ?? ''}`);

  const schedule = group.command('schedule').description('install, remove or show the cron entry that runs clear-history daily');
  schedule
    .command('install')
    .description(`write the cron file (default ${DEFAULT_CRON_FILE}, runs as root) or print a crontab line with --print`)
    .option('-r, --retention <duration>', RETENTION_HELP, retentionFlag, DEFAULT_SCHEDULE_RETENTION)
    .option('--at <cron>', 'when: a five-field cron expression', cronFlag({ seconds: false }), DEFAULT_SCHEDULE_AT)
    .addOption(new Option('--cron-file <path>', 'the /etc/cron.d-style file to write').default(DEFAULT_CRON_FILE).conflicts('print'))
    .option('--print', 'print the line for a user crontab (crontab -e) instead of writing a file')
    .option('--log-file <path>', "where the job's output is appended", DEFAULT_SCHEDULE_LOG)
    .option('--mgr-command <command>', 'how cron runs mgr (default: this node and this mgr, by absolute path)', currentMgrCommand())
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .action(
      action(async (flags: InstallFlags, cmd: Command) => {
        const spec: ScheduleSpec = {
          at: flags.at,
          retention: flags.retention,
          mgrCommand: flags.mgrCommand,
          configPath: loadConfig(cmd).path,
          logFile: flags.logFile,
        };
        if (flags.print) {
          const line = crontabLine(spec);
          if (flags.json) printJson({ crontabLine: line });
          else out(line);
          return;
        }
        if (flags.dryRun) {
          const text = cronFileText(spec);
          if (flags.json) printJson({ dryRun: true, path: flags.cronFile, text });
          else out(`dry run: would write ${flags.cronFile} (mode 0644):\n${text}`);
          return;
        }
        const r = await installSchedule(spec, flags.cronFile);
        if (flags.json) printJson(r);
        else out(r.changed ? `installed ${r.path}:\n${r.text}` : `${r.path} is already installed with this content; nothing written`);
      }),
    );
  schedule
    .command('remove')
    .description('delete the cron file (only one that mgr wrote)')
    .option('--cron-file <path>', 'the cron file', DEFAULT_CRON_FILE)
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .action(
      action(async (flags: { cronFile: string; dryRun?: boolean; json?: boolean }) => {
        if (flags.dryRun) {
          const st = await scheduleStatus(flags.cronFile);
          const what = !st.installed ? `nothing to remove: ${st.path} does not exist` : st.writtenByMgr ? `would remove ${st.path}` : `would refuse: ${st.path} was not written by mgr`;
          if (flags.json) printJson({ dryRun: true, ...st });
          else out(`dry run: ${what}`);
          return;
        }
        const r = await removeSchedule(flags.cronFile);
        if (flags.json) printJson(r);
        else out(r.removed ? `removed ${r.path}` : `nothing to remove: ${r.path} does not exist`);
      }),
    );
  schedule
    .command('status')
    .description('show the installed cron entry, or "not installed"')
    .option('--cron-file <path>', 'the cron file', DEFAULT_CRON_FILE)
    .addOption(jsonOption())
    .action(
      action(async (flags: { cronFile: string; json?: boolean }) => {
        const st = await scheduleStatus(flags.cronFile);
        if (flags.json) return printJson(st);
        if (!st.installed) return out(`not installed (${st.path} does not exist)`);
        out(`installed: ${st.path}${st.writtenByMgr ? '' : ' (not written by mgr)'}`);
        if (st.entry) {
          out(`  at:        ${st.entry.at}${st.entry.user ? ` (as ${st.entry.user})` : ''}`);
          out(`  retention: ${st.entry.retention ?? '(not a clear-history command)'}`);
          if (st.entry.configPath) out(`  config:    ${st.entry.configPath}`);
          out(`  command:   ${st.entry.command}`);
        }
      }),
    );

  program
    .command('scheduler')
    .description('run clear-history on a cron expression in this process, for hosts without cron (containers); stops cleanly on SIGTERM/SIGINT')
    .option('-r, --retention <duration>', RETENTION_HELP, retentionFlag, DEFAULT_SCHEDULE_RETENTION)
    .option('--at <cron>', 'when, in local time like cron: five fields, or six with seconds first', cronFlag({ seconds: true }), DEFAULT_SCHEDULE_AT)
    .option('--batch-size <n>', 'the most kernels deleted per transaction', positiveInt('--batch-size'), DEFAULT_BATCH_SIZE)
    .option('--target-statement-ms <ms>', 'shrink batches so each DELETE statement takes about this long at most', positiveInt('--target-statement-ms'), DEFAULT_TARGET_STATEMENT_MS)
    .option('--pause-ms <ms>', 'pause between batches', nonNegativeNumber('--pause-ms'), DEFAULT_PAUSE_MS)
    .option('--wait-lock <seconds>', 'how long each run waits for a manual run to release the lock', nonNegativeNumber('--wait-lock'), SCHEDULE_WAIT_LOCK_SECONDS)
    .option('--no-vacuum', 'skip Redis compaction and VACUUM (ANALYZE) after each run')
    .option('--no-replica-role', "always fire Backend.AI's ON DELETE CASCADE triggers (see clear-history --help)")
    .action(
      action(async (flags: Omit<RunFlags, 'dryRun' | 'json'> & { at: string }, cmd: Command) => {
        const config = loadConfig(cmd);
        await runScheduler({
          at: flags.at,
          retention: flags.retention,
          openStores: () => openStores(config),
          signal: interrupt.signal,
          log: logger(cmd),
          run: { batchSize: flags.batchSize, targetStatementMs: flags.targetStatementMs, pauseMs: flags.pauseMs, waitLockMs: Math.round(flags.waitLock * 1000), vacuum: flags.vacuum, replicaRole: flags.replicaRole },
        });
        return EXIT.ok;
      }),
    );
}

function printReport(r: ClearHistoryReport): void {
  const verb = r.dryRun ? 'would delete' : 'deleted';
  const span = r.oldestTerminatedAt ? ` terminated ${r.oldestTerminatedAt} … ${r.newestTerminatedAt}` : '';
  if (r.dryRun) out('dry run: nothing was written');
  out(`clear-history: cutoff ${r.cutoff} (retention ${r.retention} = ${describeRetention(parseRetention(r.retention))})`);
  out(
    `postgres: ${verb} ${r.kernelsDeleted} kernels${span}, ${r.dependentRows.session_dependencies} session_dependencies rows, ${r.dependentRows.vfolder_attachment} vfolder_attachment rows` +
      (r.dryRun
        ? ` (at least ${r.batches} batches of ≤ ${r.batchSize})`
        : ` in ${r.batches} batches of ≤ ${r.batchSize} (longest statement ${r.longestStatementMs} ms: ${r.longestStatement}, longest batch ${r.longestBatchMs} ms)`),
  );
  out(`postgres: ON DELETE CASCADE triggers ${r.cascadeMode === 'explicit' ? 'skipped' : 'fired'}: ${r.cascadeModeReason}`);
  out(
    r.dryRun
      ? `redis: would unlink ${r.redisKeysDeleted} stat keys (the ones that exist, DB 0)`
      : `redis: unlinked ${r.redisKeysDeleted} stat keys (DB 0)${r.compaction ? `; asked ${r.compaction}: ${r.compactionReply ?? '(no reply)'}` : ''}`,
  );
  if (r.vacuumed.length) out(`postgres: VACUUM (ANALYZE) ${r.vacuumed.join(', ')} (${Math.round(r.vacuumMs)} ms)`);
  for (const w of r.warnings) out(`warning: ${w}`);
  if (r.interrupted) out(`interrupted after ${r.batches} batches: what was deleted stays deleted; rerun to finish`);
  else if (!r.dryRun) out(`done in ${(r.durationMs / 1000).toFixed(1)} s`);
}
