import { z } from 'zod';
import { ConfigError, type InputProblem } from '../errors.js';

/**
 * The one place zod issues become operator-facing problems: which source, which key, what was
 * wrong. Every outside input (TOML, etcd values, registry JSON, CLI flags) goes through here.
 */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  source: string,
  opts: { keyPrefix?: string; hint?: string } = {},
): z.output<S> {
  const r = schema.safeParse(value, { reportInput: true });
  if (r.success) return r.data;
  throw new ConfigError(issuesToProblems(r.error, source, opts.keyPrefix), opts.hint);
}

/** Keys whose values never appear in a message (a mistyped password must not end up in a log). */
const SECRET_KEY = /pass(word)?|secret|token/i;

/** Zod issues (parsed with `reportInput: true`) as problems: which key, what was wrong, what is allowed. */
export function issuesToProblems(err: z.ZodError, source: string, keyPrefix?: string): InputProblem[] {
  return err.issues.map((issue) => {
    const keyPath = [...(keyPrefix ? [keyPrefix] : []), ...issue.path.map(String)].join('.');
    const secret = issue.path.some((p) => SECRET_KEY.test(String(p)));
    return { source, key: keyPath || undefined, message: describeIssue(issue, secret) } as InputProblem;
  });
}

function describeIssue(issue: z.core.$ZodIssue, secret: boolean): string {
  const got = (v: unknown) => (secret ? `a ${typeName(v).split(' ')[0]} (value hidden)` : typeName(v));
  switch (issue.code) {
    case 'invalid_type':
      return issue.input === undefined ? `required, expected ${issue.expected}` : `expected ${issue.expected}, got ${got(issue.input)}`;
    case 'invalid_value':
      return `got ${secret ? 'a value (hidden)' : JSON.stringify(issue.input)}; allowed: ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''}: ${issue.keys.join(', ')}`;
    default:
      // range, format and custom checks: zod says what is allowed; add what was found
      return issue.input === undefined || typeof issue.input === 'object' || /\bgot\b/.test(issue.message)
        ? issue.message
        : `${issue.message}, got ${got(issue.input)}`;
  }
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v === 'object' ? 'table' : `${typeof v} ${JSON.stringify(v)}`;
}

/** host:port as Backend.AI writes it ("127.0.0.1:6379"); IPv6 in brackets. */
export const hostPortString = z.string().transform((s, ctx) => {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `expected "host:port" with a port 1-65535, got ${JSON.stringify(s)}` });
    return z.NEVER;
  }
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
});

export const port = z.number().int().min(1).max(65535);

/** Backend.AI's ToBool: true/false, yes/no, 1/0, on/off as strings or booleans. */
export const toBool = z.union([z.boolean(), z.string(), z.number()]).transform((v, ctx) => {
  if (typeof v === 'boolean') return v;
  const s = String(v).trim().toLowerCase();
  if (['true', 'yes', '1', 'on', 't', 'y'].includes(s)) return true;
  if (['false', 'no', '0', 'off', 'f', 'n', ''].includes(s)) return false;
  ctx.addIssue({ code: 'custom', message: `expected a boolean (true/false, yes/no, 1/0, on/off), got ${JSON.stringify(v)}` });
  return z.NEVER;
});
