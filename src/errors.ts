/**
 * Every failure mgr reports on purpose is an MgrError with a machine-readable code. The CLI maps
 * codes to exit codes (one meaning each, documented in README.md); the library never exits.
 */
export const EXIT = {
  ok: 0,
  internal: 1,
  usage: 2,
  config: 3,
  storeUnreachable: 4,
  refused: 5,
  lockBusy: 6,
  stepFailed: 7,
  partial: 8,
  integrity: 9,
  pending: 10,
  interrupted: 130,
} as const;

export type ErrorCode = keyof typeof EXIT;

export class MgrError extends Error {
  readonly code: ErrorCode;
  /** What the operator can do about it; printed under the message. */
  readonly hint: string | undefined;
  /** Extra structured facts for --json output (never secrets). */
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { hint?: string; cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'MgrError';
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
  }

  get exitCode(): number {
    return EXIT[this.code];
  }
}

/** One problem in one place of an outside input (a file, an etcd key, a flag). */
export interface InputProblem {
  /** Where: file path, etcd key or flag name. */
  source: string;
  /** Dotted key inside the source, if any. */
  key?: string;
  message: string;
}

export class ConfigError extends MgrError {
  readonly problems: InputProblem[];
  constructor(problems: InputProblem[], hint?: string) {
    super('config', formatProblems(problems), {
      hint,
      details: { problems },
    });
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export function formatProblems(problems: InputProblem[]): string {
  const lines = problems.map((p) => `  ${p.source}${p.key ? ` [${p.key}]` : ''}: ${p.message}`);
  return `invalid configuration (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${lines.join('\n')}`;
}

/** Another process holds a lock mgr needs. */
export class LockBusyError extends MgrError {
  constructor(what: string, holder: LockHolderInfo | undefined, hint?: string) {
    const who = holder ? ` held by ${describeHolder(holder)}` : '';
    super('lockBusy', `${what} is busy${who}`, { hint, details: holder ? { holder } : undefined });
    this.name = 'LockBusyError';
  }
}

export interface LockHolderInfo {
  host: string;
  pid: number;
  since: string;
  purpose?: string;
}

export function describeHolder(h: LockHolderInfo): string {
  return `${h.host} pid ${h.pid} since ${h.since}${h.purpose ? ` (${h.purpose})` : ''}`;
}

export function isMgrError(e: unknown): e is MgrError {
  return e instanceof MgrError;
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
