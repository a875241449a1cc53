import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command, Option } from 'commander';
import { MgrError } from '../errors.js';
import { lastUpgradeBackup, runUpgrade, selectModules, type UpgradeEvent, type UpgradeReport } from '../engine/runner.js';
import { enterMaintenance, leaveMaintenance } from '../maintenance/index.js';
import { upgradeStatus } from '../engine/status.js';
import type { UpgradeOptions } from '../engine/types.js';
import { LOCK_BACKENDS } from '../config/manager-toml.js';
import { action, cronFlag, dryRunOption, interrupt, jsonOption, loadConfig, logger, nonNegativeNumber, out, printJson, progressReporter, retentionFlag, withStores } from './common.js';

interface UpgradeFlags {
  to?: string;
  dryRun?: boolean;
  yes?: boolean;
  json?: boolean;
  force?: boolean;
  backup: boolean;
  backupDir?: string;
  lockBackend: UpgradeOptions['lockBackend'];
  reinitializeImages?: boolean;
  background?: boolean;
  skipRedisAof?: boolean;
  schedule: boolean;
  scheduleRetention: string;
  scheduleAt: string;
  cronFile?: string;
  waitLock: number;
}

/** How cron and printed hints should call this mgr again. */
function mgrCommand(): string {
  return `${process.execPath} ${path.resolve(process.argv[1] ?? 'bin/mgr.js')}`;
}

export function upgradeOptionsFrom(flags: UpgradeFlags, configPath: string): UpgradeOptions {
  return {
    lockBackend: flags.lockBackend,
    reinitializeImages: Boolean(flags.reinitializeImages),
    background: Boolean(flags.background),
    skipRedisAof: Boolean(flags.skipRedisAof),
    noSchedule: !flags.schedule,
    scheduleRetention: flags.scheduleRetention,
    scheduleAt: flags.scheduleAt,
    cronFile: flags.cronFile,
    managerTomlPath: configPath,
    mgrCommand: mgrCommand(),
  };
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

function printReport(r: UpgradeReport): void {
  if (r.dryRun) {
    out(`dry run: ${r.from.release} (alembic_version ${r.from.rows.join(',')}) → ${r.to}; nothing was written`);
    for (const s of r.steps) {
      out(`\n[${s.module}] ${s.id} — ${s.title}`);
      for (const c of s.changes ?? []) {
        out(`  ${c.store}: ${c.action}`);
        if (c.detail) out(c.detail.replace(/^/gm, '    '));
      }
    }
    return;
  }
  out(`\nupgrade ${r.from.release} → ${r.to}: ${r.steps.length} steps in ${(r.durationMs / 1000).toFixed(1)} s`);
  if (r.backupPath) out(`pre-upgrade backup: ${r.backupPath}`);
  for (const s of r.steps) out(`  ${s.status.padEnd(12)} ${s.id}  ${s.summary}${s.durationMs ? ` (${s.durationMs} ms)` : ''}`);
  const warnings = r.steps.flatMap((s) => capped(s.warnings).map((w) => `${s.id}: ${w}`));
  if (warnings.length) {
    out('\nwarnings:');
    for (const w of warnings) out(`  ${w}`);
  }
  if (r.before && r.after) {
    out('\ncounts before → after:');
    for (const store of ['postgres', 'etcd', 'redis'] as const) {
      const keys = [...new Set([...Object.keys(r.before[store]), ...Object.keys(r.after[store])])].sort();
      for (const k of keys) {
        const b = r.before[store][k];
        const a = r.after[store][k];
        out(`  ${store.padEnd(8)} ${k.padEnd(34)} ${String(b ?? '—').padStart(10)} → ${String(a ?? '—').padStart(10)}${a !== b ? '  *' : ''}`);
      }
    }
  }
}

/** A step may warn about thousands of entries; the terminal gets the first few and a count. */
const MAX_WARNINGS_SHOWN = 5;
function capped(warnings: string[]): string[] {
  if (warnings.length <= MAX_WARNINGS_SHOWN) return warnings;
  return [...warnings.slice(0, MAX_WARNINGS_SHOWN), `… and ${warnings.length - MAX_WARNINGS_SHOWN} more (all of them: --json, or \`mgr upgrade status --json\`)`];
}

function eventPrinter(json: boolean) {
  let bar: ReturnType<typeof progressReporter> | undefined;
  return (e: UpgradeEvent) => {
    if (json) return;
    switch (e.type) {
      case 'info':
        process.stderr.write(`mgr: ${e.message}\n`);
        break;
      case 'warn':
        process.stderr.write(`mgr: WARNING: ${e.message}\n`);
        break;
      case 'step-start':
        process.stderr.write(`[${e.module} ${e.index + 1}/${e.total}] ${e.step.id} — ${e.step.title}${e.attempt > 1 ? ` (attempt ${e.attempt}, resuming)` : ''}\n`);
        bar = undefined;
        break;
      case 'progress':
        bar ??= progressReporter(`  ${e.step.id}`);
        bar.update(e.progress);
        break;
      case 'step-end':
        bar?.stop();
        bar = undefined;
        process.stderr.write(`  → ${e.report.status}${e.report.summary ? `: ${e.report.summary}` : ''}${e.report.error ? `: ${e.report.error}` : ''}\n`);
        for (const w of capped(e.report.warnings)) process.stderr.write(`  WARNING: ${w}\n`);
        break;
    }
  };
}

export function registerUpgrade(program: Command): void {
  const upgrade = program
    .command('upgrade')
    .description('upgrade the installation to the newest release (21.03 → 21.09 → 22.03): checkpointed, resumable, with a backup first')
    .addOption(new Option('--to <release>', 'stop at this release (e.g. 21.09); default: the newest'))
    .addOption(dryRunOption())
    .option('-y, --yes', 'do not ask for confirmation (required when stdin is not a terminal)')
    .addOption(jsonOption())
    .option('--force', 'run even though managers or agents look alive (not recommended)')
    .option('--no-backup', 'skip the pre-upgrade backup (not recommended: it is the only rollback)')
    .option('--backup-dir <dir>', 'where the pre-upgrade backup goes (default: current directory)')
    .addOption(new Option('--lock-backend <name>', 'distributed-lock backend written to manager.toml when it has none').choices([...LOCK_BACKENDS]).default('etcd'))
    .option('--reinitialize-images', 'start the 22.03 images table EMPTY instead of copying etcd image metadata (then run `mgr image rescan`)')
    .option('--background', 'leave the image migration to `mgr background-migrate run` workers instead of running it inline')
    .option('--skip-redis-aof', 'do not enable Redis AOF persistence (recorded as skipped; do it by hand)')
    .option('--no-schedule', 'do not install the daily clear-history cron entry')
    .option('--schedule-retention <duration>', 'retention for the scheduled clear-history', retentionFlag, '30d')
    .option('--schedule-at <cron>', 'cron expression for the scheduled clear-history', cronFlag({ seconds: false }), '0 4 * * *')
    .option('--cron-file <path>', 'cron file to write (default /etc/cron.d/mgr-clear-history)')
    .option('--wait-lock <seconds>', 'wait this long for another running upgrade (default 0: exit with code 6 at once)', nonNegativeNumber('--wait-lock'), 0)
    .action(
      action(async (flags: UpgradeFlags, cmd: Command) => {
        return withStores(cmd, async (stores, log) => {
          const options = upgradeOptionsFrom(flags, stores.config.path);
          if (!flags.dryRun && !flags.yes) {
            if (!process.stdin.isTTY) throw new MgrError('usage', 'refusing to upgrade without confirmation: pass --yes when stdin is not a terminal');
            const sel = await selectModules(stores, flags.to);
            if (!(await confirm(`upgrade ${sel.detected.reached} → ${sel.target} (modules ${sel.modules.map((m) => m.release).join(', ') || 'none'})?`))) {
              throw new MgrError('usage', 'upgrade cancelled');
            }
          }
          const { createBackup } = await import('../backup/index.js');
          const report = await runUpgrade(stores, {
            to: flags.to,
            dryRun: flags.dryRun,
            force: flags.force,
            backup: flags.backup,
            backupDir: flags.backupDir,
            takeBackup: async (s, o) => (await createBackup(s, { outDir: o.outDir, log: o.log, signal: o.signal, alreadyInMaintenance: true })).path,
            options,
            signal: interrupt.signal,
            log,
            onEvent: eventPrinter(Boolean(flags.json)),
            waitLockSec: flags.waitLock,
          });
          if (flags.json) printJson({ ok: true, ...report });
          else printReport(report);
        });
      }),
    );

  upgrade
    .command('plan')
    .description('list the modules and steps an upgrade would run, with the exact SQL; writes nothing')
    .addOption(new Option('--to <release>', 'stop at this release'))
    .addOption(jsonOption())
    .action(
      action(async (given: { to?: string; json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores, log) => {
          const flags = subcommandFlags(given, cmd);
          const report = await runUpgrade(stores, {
            to: flags.to,
            dryRun: true,
            options: upgradeOptionsFrom({ ...defaults(), to: flags.to }, stores.config.path),
            log,
          });
          if (flags.json) printJson({ ok: true, ...report });
          else printReport(report);
        }),
      ),
    );

  upgrade
    .command('status')
    .description('the installed release, and every upgrade step recorded so far with its outcome')
    .addOption(jsonOption())
    .action(
      action(async (given: { json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores) => {
          const flags = subcommandFlags(given, cmd);
          const st = await upgradeStatus(stores);
          if (flags.json) {
            printJson({ ok: true, ...st });
            return;
          }
          out(`release: ${st.release}${st.pending.length ? `; pending modules: ${st.pending.join(', ')}` : '; up to date'}`);
          for (const s of st.steps) {
            out(`  ${s.status.padEnd(8)} ${s.stepId.padEnd(40)} attempts ${s.attempts}${s.durationMs !== null ? `, ${s.durationMs} ms` : ''}${s.error ? `  error: ${s.error}` : ''}`);
          }
          if (st.lastBackup) out(`pre-upgrade backup: ${st.lastBackup}`);
        }),
      ),
    );

  registerUpgradeRecovery(upgrade);
}

export function registerUpgradeRecovery(upgrade: Command): void {
  upgrade
    .command('rollback')
    .description('restore the backup taken before the last upgrade into all three stores (the one dependable rollback)')
    .option('--bundle <dir>', 'restore this bundle instead of the recorded pre-upgrade backup')
    .option('-y, --yes', 'do not ask for confirmation (required when stdin is not a terminal)')
    .addOption(jsonOption())
    .action(
      action(async (given: { bundle?: string; yes?: boolean; json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores, log) => {
          const flags = subcommandFlags(given, cmd);
          const bundle = flags.bundle ?? (await lastUpgradeBackup(stores));
          if (!bundle) throw new MgrError('refused', 'no pre-upgrade backup is recorded in mgr.upgrade_runs', { hint: 'pass the bundle with --bundle DIR (see `mgr backup list`)' });
          if (!flags.yes) {
            if (!process.stdin.isTTY) throw new MgrError('usage', 'refusing to roll back without confirmation: pass --yes when stdin is not a terminal');
            if (!(await confirm(`replace PostgreSQL, etcd and Redis with the backup ${bundle}?`))) throw new MgrError('usage', 'rollback cancelled');
          }
          const { restoreBackup } = await import('../backup/index.js');
          const m = await enterMaintenance(stores.etcd, { reason: `rollback to ${bundle}`, by: 'mgr upgrade rollback' });
          try {
            const report = await restoreBackup(stores, bundle, { force: true, yes: true, log, signal: interrupt.signal });
            if (flags.json) printJson({ ok: true, ...report });
            else out(`rolled back to ${bundle} (release ${report.release}, taken ${report.createdAt})`);
          } finally {
            if (m.created) await leaveMaintenance(stores.etcd);
          }
        }),
      ),
    );

  upgrade
    .command('rehearse')
    .description('run the whole upgrade on a throwaway sandbox copy (from a backup, or a fresh read-only one) and report per-step durations; production is never written')
    .option('--from-backup <bundle>', 'rehearse on this backup bundle instead of taking a fresh one')
    .addOption(new Option('--to <release>', 'stop at this release'))
    .option('--work-dir <dir>', 'where the throwaway sandbox goes (default: the OS temp dir)')
    .addOption(jsonOption())
    .action(
      action(async (given: { fromBackup?: string; to?: string; workDir?: string; json?: boolean }, cmd: Command) => {
        const flags = subcommandFlags(given, cmd);
        const config = loadConfig(cmd);
        const { rehearseUpgrade } = await import('../backup/index.js');
        const print = eventPrinter(Boolean(flags.json));
        const report = await rehearseUpgrade(config, {
          fromBackup: flags.fromBackup,
          to: flags.to,
          workDir: flags.workDir,
          options: upgradeOptionsFrom({ ...defaults(), to: flags.to }, config.path),
          log: logger(cmd),
          signal: interrupt.signal,
          onEvent: (e) => {
            if (e.type === 'upgrade') print(e.event);
            else if (e.type === 'phase' && !flags.json) process.stderr.write(`rehearsal: ${e.message}\n`);
          },
        });
        if (flags.json) printJson(report);
        else {
          out(`rehearsal ${report.ok ? 'succeeded' : 'FAILED'} on ${report.source.bundle} (release ${report.source.release}) in ${(report.totalMs / 1000).toFixed(1)} s`);
          for (const [phase, ms] of Object.entries(report.phases)) out(`  ${phase.padEnd(8)} ${(ms! / 1000).toFixed(1)} s`);
          for (const s of report.steps) out(`  ${s.status.padEnd(12)} ${s.id.padEnd(40)} ${(s.durationMs / 1000).toFixed(2)} s${s.error ? `  ${s.error}` : ''}`);
          for (const w of report.warnings) out(`  warning: ${w}`);
          if (report.failure) out(`  failure: ${report.failure}`);
        }
        if (!report.ok) throw new MgrError('stepFailed', `the rehearsal failed: ${report.failure}`);
      }),
    );
}

/**
 * The flags of an `upgrade` subcommand. commander hands an option that `upgrade` itself also
 * defines (--json, --to, --yes) to `upgrade` wherever it is written, so `upgrade status --json`
 * would lose it: take those from the parent when they were given there.
 */
function subcommandFlags<T extends object>(flags: T, cmd: Command): T {
  const parent = (cmd.parent?.opts() ?? {}) as Pick<UpgradeFlags, 'json' | 'to' | 'yes'>;
  const given = Object.entries({ json: parent.json, to: parent.to, yes: parent.yes }).filter(([, v]) => v !== undefined);
  return { ...flags, ...Object.fromEntries(given) };
}

function defaults(): UpgradeFlags {
  return { backup: true, lockBackend: 'etcd', schedule: true, scheduleRetention: '30d', scheduleAt: '0 4 * * *', waitLock: 0 };
}
