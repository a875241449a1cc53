import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { EXIT, MgrError, ConfigError, errorMessage } from '../errors.js';
import { loadLocalConfig, type LocalConfig } from '../config/manager-toml.js';
import { openStores, type Stores } from '../stores/index.js';
import { createLogger, type Logger } from '../log.js';
import type { Progress } from '../engine/types.js';
import { cutoffFor, parseRetention } from '../history/retention.js';
import { validateCronExpression } from '../history/schedule.js';

/** Options every command inherits from the root program. */
export interface GlobalOptions {
  config?: string;
  logLevel?: string;
}

export function globalOptions(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

// `mgr … | head` closes stdout early: that is the reader's choice, not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.ok);
  throw e;
});

/** Aborted on the first Ctrl-C/SIGTERM; work stops at the next safe point. A second Ctrl-C exits at once. */
export const interrupt = new AbortController();
let interrupts = 0;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    interrupts++;
    if (interrupts > 1) process.exit(EXIT.interrupted);
    process.stderr.write(`\n${sig}: stopping after the current statement (press Ctrl-C again to exit at once)\n`);
    interrupt.abort(new MgrError('interrupted', `interrupted by ${sig}`));
  });
}

export function logger(cmd: Command): Logger {
  return createLogger({ level: globalOptions(cmd).logLevel });
}

export function loadConfig(cmd: Command): LocalConfig {
  return loadLocalConfig(globalOptions(cmd).config);
}

/** Loads config, opens the stores, runs fn, closes the stores whatever happens. */
export async function withStores<T>(cmd: Command, fn: (stores: Stores, log: Logger) => Promise<T>): Promise<T> {
  const config = loadConfig(cmd);
  const stores = await openStores(config);
  try {
    return await fn(stores, logger(cmd));
  } finally {
    await stores.close();
  }
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function out(line = ''): void {
  process.stdout.write(line + '\n');
}

/**
 * Wraps a command action: MgrErrors become a message, a hint and their exit code; anything else
 * is an internal error (exit 1) with its stack under --log-level debug.
 */
export function action<A extends unknown[]>(
  fn: (...args: A) => Promise<number | void>,
): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as Command;
    // optsWithGlobals: a parent command may have taken --json (see `upgrade status --json`)
    const json = Boolean((cmd.optsWithGlobals?.() as { json?: boolean } | undefined)?.json);
    try {
      checkLogLevel(cmd);
      const code = await fn(...args);
      process.exitCode = code ?? EXIT.ok;
    } catch (e) {
      process.exitCode = reportError(e, json);
    }
  };
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** A bad --log-level (or $MGR_LOG_LEVEL) is a usage error before any work, not pino's exception later. */
function checkLogLevel(cmd: Command): void {
  const flag = globalOptions(cmd).logLevel;
  const [where, level] = flag !== undefined ? ['--log-level', flag] : ['$MGR_LOG_LEVEL', process.env.MGR_LOG_LEVEL];
  if (level !== undefined && !LOG_LEVELS.includes(level)) {
    throw new MgrError('usage', `${where} must be one of ${LOG_LEVELS.join(', ')}; got ${JSON.stringify(level)}`);
  }
}

export function reportError(e: unknown, json: boolean): number {
  const err =
    e instanceof MgrError
      ? e
      : interrupt.signal.aborted
        ? new MgrError('interrupted', 'interrupted; the work done so far is saved and a rerun resumes it', { cause: e })
        : new MgrError('internal', `internal error: ${errorMessage(e)}`, { cause: e });
  if (json) {
    printJson({ ok: false, error: { code: err.code, exitCode: err.exitCode, message: err.message, hint: err.hint, ...err.details } });
  } else {
    process.stderr.write(`mgr: ${err.message}\n`);
    if (err.hint) process.stderr.write(`  hint: ${err.hint}\n`);
    if (err.code === 'internal' && process.env.MGR_LOG_LEVEL === 'debug' && e instanceof Error) process.stderr.write(`${e.stack}\n`);
  }
  return err.exitCode;
}

/** A progress display: a bar on a TTY, a plain line at most every 2 s otherwise, nothing with --json. */
export function progressReporter(label: string, opts: { json?: boolean } = {}): { update(p: Progress): void; stop(): void } {
  if (opts.json) return { update: () => undefined, stop: () => undefined };
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {percentage}% {value}/{total} {unit} {message}`, stream: process.stderr, hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update: (p) => {
        if (!started) {
          bar.start(p.total ?? p.done, p.done, { unit: p.unit ?? '', message: p.message ?? '' });
          started = true;
        }
        if (p.total !== undefined) bar.setTotal(p.total);
        bar.update(p.done, { unit: p.unit ?? '', message: p.message ?? '' });
      },
      stop: () => started && bar.stop(),
    };
  }
  let last = 0;
  return {
    update: (p) => {
      const now = Date.now();
      if (now - last < 2000 && !(p.total !== undefined && p.done >= p.total)) return;
      last = now;
      const pct = p.total ? ` (${Math.floor((100 * p.done) / p.total)}%)` : '';
      process.stderr.write(`${label}: ${p.done}${p.total !== undefined ? `/${p.total}` : ''} ${p.unit ?? ''}${pct}${p.message ? ` ${p.message}` : ''}\n`);
    },
    stop: () => undefined,
  };
}

/** commander argument parsers that reject bad flags with exit code 2 and a clear message. */
export function positiveInt(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < 1 || !Number.isSafeInteger(Number(v))) {
      throw new InvalidArgumentError(`${name} must be a whole number ≥ 1, got ${JSON.stringify(v)}`);
    }
    return Number(v);
  };
}

export function nonNegativeNumber(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a number ≥ 0, got ${JSON.stringify(v)}`);
    return n;
  };
}

/**
 * A flag checked by a library validator at parse time: its usage error becomes commander's, which
 * names the flag, and the run stops with exit 2 before any work (not at the step that uses it).
 */
export function checkedFlag(check: (v: string) => unknown) {
  return (v: string): string => {
    try {
      check(v);
    } catch (e) {
      if (e instanceof MgrError && e.code === 'usage') throw new InvalidArgumentError(e.message);
      throw e;
    }
    return v;
  };
}

/** -r/--retention style flags: Backend.AI's grammar, and a cutoff that exists (not before the year 1). */
export const retentionFlag = checkedFlag((v) => cutoffFor(parseRetention(v), new Date()));
/** Cron-expression flags; `seconds: true` for the in-process scheduler's six-field form. */
export const cronFlag = (opts: { seconds: boolean }) => checkedFlag((v) => validateCronExpression(v, opts));

export const jsonOption = () => new Option('--json', 'print the result as JSON on stdout (for scripts)');
export const dryRunOption = () => new Option('--dry-run', 'show what would change and write nothing');

export { ConfigError };
