import { chmod, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { CronTime } from 'cron';
import { MgrError, errorMessage } from '../errors.js';
import type { Change, Step, StepContext } from '../engine/types.js';
import { parseRetention } from './retention.js';

/**
 * The clear-history schedule as cron runs it: an /etc/cron.d file (or a user-crontab line)
 * that calls `mgr … clear-history` daily, as Backend.AI's MIGRATION.md asks operators to set up
 * by hand ("configure an explicit cron job … once a day").
 */

export const DEFAULT_CRON_FILE = '/etc/cron.d/mgr-clear-history';
export const DEFAULT_SCHEDULE_AT = '0 4 * * *';
export const DEFAULT_SCHEDULE_RETENTION = '30d';
export const DEFAULT_SCHEDULE_LOG = '/var/log/mgr-clear-history.log';
/** A scheduled run waits this long for a manual run to finish instead of failing at once. */
export const SCHEDULE_WAIT_LOCK_SECONDS = 600;
/** First line of every file mgr writes; `schedule remove` deletes only files that start with it. */
export const CRON_FILE_HEADER = '# mgr-clear-history: written by mgr';
const CRON_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Presets both system cron and the cron package understand. */
const CRON_PRESETS = ['@yearly', '@monthly', '@weekly', '@daily', '@hourly'];

export interface ScheduleSpec {
  /** Cron expression: five fields for cron files; the scheduler also takes six (seconds first). */
  at: string;
  retention: string;
  /** Command line that runs mgr, e.g. "/usr/bin/node /opt/mgr/bin/mgr.js" (absolute: cron's PATH is short). */
  mgrCommand: string;
  /** manager.toml the job uses (made absolute). */
  configPath: string;
  /** Where the job's output is appended. */
  logFile: string;
}

export interface ScheduleEntry {
  at: string;
  user: string | undefined;
  command: string;
  retention: string | undefined;
  configPath: string | undefined;
  line: string;
}

export interface ScheduleStatus {
  path: string;
  installed: boolean;
  /** The file starts with mgr's header (only such files are replaced or removed). */
  writtenByMgr: boolean;
  entry: ScheduleEntry | undefined;
}

/** This mgr as cron should call it: node and the script by absolute path. */
export function currentMgrCommand(): string {
  return `${shQuote(process.execPath)} ${shQuote(path.resolve(process.argv[1] ?? 'bin/mgr.js'))}`;
}

/**
 * Checks a cron expression with the cron package's parser (the one `mgr scheduler` runs) and
 * that it ever fires. `seconds: false` (cron files) also demands the five fields system cron
 * reads. Returns it with whitespace normalised; a bad one is a usage error (exit 2).
 */
export function validateCronExpression(expr: string, opts: { seconds: boolean }): string {
  const at = expr.trim().replace(/\s+/g, ' ');
  const fields = at.split(' ').length;
  const allowed = opts.seconds
    ? `five fields (minute hour day-of-month month day-of-week, e.g. "0 4 * * *"), six with seconds first (e.g. "*/30 * * * * *") or a preset (${CRON_PRESETS.join(', ')})`
    : `five fields (minute hour day-of-month month day-of-week, e.g. "0 4 * * *") or a preset (${CRON_PRESETS.join(', ')})`;
  const bad = (why: string): never => {
    throw new MgrError('usage', `invalid cron expression ${JSON.stringify(expr)}: ${why}; expected ${allowed}`);
  };
  if (at.startsWith('@')) {
    if (!CRON_PRESETS.includes(at)) bad('unknown preset');
  } else if (fields !== 5 && !(opts.seconds && fields === 6)) {
    bad(`${fields} field${fields === 1 ? '' : 's'}`);
  }
  try {
    new CronTime(at).sendAt();
  } catch (e) {
    bad(errorMessage(e).split('\n')[0]!.replace(/\.$/, ''));
  }
  return at;
}

/** Quotes a word for /bin/sh unless it is plainly safe. */
export function shQuote(s: string): string {
  return /^[A-Za-z0-9_\/.:=@+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The job's command line; cron turns an unescaped % into a newline, so every % is escaped. */
export function jobCommand(spec: ScheduleSpec): string {
  const cmd = `${spec.mgrCommand} -f ${shQuote(path.resolve(spec.configPath))} clear-history -r ${shQuote(spec.retention)} --wait-lock ${SCHEDULE_WAIT_LOCK_SECONDS} >> ${shQuote(spec.logFile)} 2>&1`;
  return cmd.replace(/%/g, '\\%');
}

function checkSpec(spec: ScheduleSpec): ScheduleSpec {
  parseRetention(spec.retention);
  return { ...spec, at: validateCronExpression(spec.at, { seconds: false }), retention: spec.retention.trim() };
}

/** The line for `crontab -e` (no user field). */
export function crontabLine(spec: ScheduleSpec): string {
  const s = checkSpec(spec);
  return `${s.at} ${jobCommand(s)}`;
}

/** The whole /etc/cron.d file (runs as root). */
export function cronFileText(spec: ScheduleSpec): string {
  const s = checkSpec(spec);
  return [
    CRON_FILE_HEADER,
    '# Deletes kernel history (PostgreSQL kernels rows and their Redis stat keys) older than the retention.',
    '# Change it with `mgr clear-history schedule install`, remove it with `mgr clear-history schedule remove`;',
    '# edits by hand are replaced by the next install.',
    'SHELL=/bin/sh',
    `PATH=${CRON_PATH}`,
    `${s.at} root ${jobCommand(s)}`,
    '',
  ].join('\n');
}

/** The job line of a cron file or crontab: five fields (or a preset), an optional user, the command. */
export function parseCronEntry(text: string, withUser: boolean): ScheduleEntry | undefined {
  const line = text.split('\n').find((l) => l.trim() !== '' && !l.trimStart().startsWith('#') && !/^\s*[A-Za-z_][A-Za-z0-9_]*\s*=/.test(l));
  if (!line) return undefined;
  const words = line.trim().split(/\s+/);
  const at = words[0]!.startsWith('@') ? words.splice(0, 1) : words.splice(0, 5);
  const user = withUser ? words.shift() : undefined;
  const command = words.join(' ');
  const retention = /clear-history\s+-r\s+'?([^'\s]+)'?/.exec(command)?.[1];
  const configPath = /\s-f\s+('[^']*'|\S+)/.exec(command)?.[1]?.replace(/^'|'$/g, '');
  return { at: at.join(' '), user, command, retention, configPath, line };
}

export async function scheduleStatus(cronFile: string = DEFAULT_CRON_FILE): Promise<ScheduleStatus> {
  const text = await readIfExists(cronFile);
  if (text === undefined) return { path: cronFile, installed: false, writtenByMgr: false, entry: undefined };
  return { path: cronFile, installed: true, writtenByMgr: text.startsWith(CRON_FILE_HEADER), entry: parseCronEntry(text, true) };
}

/**
 * Writes the cron file atomically (temp file + rename, mode 0644). The temp name contains dots,
 * which cron ignores in /etc/cron.d, so cron never reads half a file. Same content → no write.
 * A file mgr did not write is never replaced.
 */
export async function installSchedule(spec: ScheduleSpec, cronFile: string = DEFAULT_CRON_FILE): Promise<{ path: string; changed: boolean; text: string }> {
  const text = cronFileText(spec);
  const existing = await readIfExists(cronFile);
  if (existing === text) return { path: cronFile, changed: false, text };
  if (existing !== undefined && !existing.startsWith(CRON_FILE_HEADER)) {
    throw new MgrError('refused', `${cronFile} exists and was not written by mgr; refusing to replace it`, {
      hint: 'remove or rename it yourself, or install to another file with --cron-file',
    });
  }
  const dir = path.dirname(cronFile);
  if (!(await stat(dir).catch(() => undefined))?.isDirectory()) {
    throw new MgrError('refused', `cannot install the schedule: directory ${dir} does not exist (is cron installed?)`, {
      hint: 'add the line from `mgr clear-history schedule install --print` to a crontab, or run `mgr scheduler` as a service',
    });
  }
  const tmp = path.join(dir, `.${path.basename(cronFile)}.mgr-tmp.${process.pid}`);
  try {
    await writeFile(tmp, text, { mode: 0o644 });
    await chmod(tmp, 0o644); // the umask may have narrowed it
    await rename(tmp, cronFile);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new MgrError('refused', `cannot write ${cronFile}: ${errorMessage(e)}`, {
      cause: e,
      hint: 'run as root, pick another file with --cron-file, or use --print for a crontab line',
    });
  }
  return { path: cronFile, changed: true, text };
}

/** Removes the cron file if mgr wrote it; a missing file is fine (nothing to do). */
export async function removeSchedule(cronFile: string = DEFAULT_CRON_FILE): Promise<{ path: string; removed: boolean }> {
  const text = await readIfExists(cronFile);
  if (text === undefined) return { path: cronFile, removed: false };
  if (!text.startsWith(CRON_FILE_HEADER)) {
    throw new MgrError('refused', `${cronFile} was not written by mgr (no "${CRON_FILE_HEADER}" header); leaving it alone`, {
      hint: 'remove it yourself if it is yours to remove',
    });
  }
  await rm(cronFile);
  return { path: cronFile, removed: true };
}

async function readIfExists(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new MgrError('refused', `cannot read ${file}: ${errorMessage(e)}`, { cause: e });
  }
}

/** How to add the schedule later, for skipped steps and hints. */
export function installHint(spec: Pick<ScheduleSpec, 'retention' | 'at'>): string {
  return `mgr clear-history schedule install -r ${shQuote(spec.retention)} --at ${shQuote(spec.at)}`;
}

function stepTarget(ctx: StepContext): { spec: ScheduleSpec; cronFile: string } {
  const o = ctx.options;
  return {
    spec: {
      at: o.scheduleAt || DEFAULT_SCHEDULE_AT,
      retention: o.scheduleRetention || DEFAULT_SCHEDULE_RETENTION,
      mgrCommand: o.mgrCommand,
      configPath: path.resolve(o.managerTomlPath),
      logFile: DEFAULT_SCHEDULE_LOG,
    },
    cronFile: o.cronFile ?? DEFAULT_CRON_FILE,
  };
}

/**
 * The 22.03 module's last config step: installs the daily clear-history cron file, so the
 * history Backend.AI 22.03 stops expiring (stat keys without TTL) does not grow forever.
 * `--no-schedule` skips it with the command to add it later.
 */
export function clearHistoryScheduleStep(): Step {
  return {
    id: '22.03/clear-history-schedule',
    title: 'Install the daily clear-history schedule (cron)',
    kind: 'config',
    plan: async (ctx): Promise<Change[]> => {
      const { spec, cronFile } = stepTarget(ctx);
      if (ctx.options.noSchedule) return [{ store: 'cron', action: `skip (--no-schedule); add it later with: ${installHint(spec)}` }];
      const text = cronFileText(spec);
      const current = await readIfExists(cronFile);
      if (current === text) return [{ store: 'cron', action: `${cronFile} already installed with this content` }];
      return [{ store: 'cron', action: `${current === undefined ? 'create' : 'replace'} ${cronFile} (mode 0644)`, detail: text }];
    },
    apply: async (ctx) => {
      const { spec, cronFile } = stepTarget(ctx);
      if (ctx.options.noSchedule) {
        return { summary: `clear-history schedule not installed (--no-schedule); add it later with: ${installHint(spec)}`, skipped: true };
      }
      const r = await installSchedule(spec, cronFile);
      return {
        summary: `${r.changed ? 'installed' : 'already installed'} ${cronFile}: clear-history -r ${spec.retention} at "${validateCronExpression(spec.at, { seconds: false })}"`,
        counts: { filesWritten: r.changed ? 1 : 0 },
      };
    },
    verify: async (ctx) => {
      if (ctx.options.noSchedule) return;
      const { spec, cronFile } = stepTarget(ctx);
      if ((await readIfExists(cronFile)) !== cronFileText(spec)) {
        throw new MgrError('integrity', `${cronFile} does not hold the clear-history schedule mgr installed`, {
          hint: `reinstall it with: ${installHint(spec)}`,
        });
      }
    },
  };
}
