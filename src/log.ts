import { pino, destination, type Logger } from 'pino';

/**
 * Structured logs go to stderr (stdout is for results and --json). Anything that looks like a
 * secret is redacted by key name, so a password can never reach a log line.
 */
export function createLogger(opts: { level?: string; destination?: number | string } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.MGR_LOG_LEVEL ?? 'warn',
      base: undefined,
      redact: {
        paths: ['password', '*.password', '*.*.password', 'secret', '*.secret', 'secret_key', '*.secret_key'],
        censor: '[redacted]',
      },
    },
    destination({ dest: opts.destination ?? 2, sync: true }),
  );
}

export type { Logger };

/** A logger that drops everything: for library callers (tests) that did not ask for logs. */
export const silentLogger: Logger = pino({ level: 'silent' });
