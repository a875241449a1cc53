import { readFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { z } from 'zod';
import { ConfigError, MgrError } from '../errors.js';
import { hostPortString, parseOrThrow, port, toBool } from './validate.js';

/** Where a manager looks for manager.toml when -f is not given (Backend.AI's read_from_file). */
export function managerTomlSearchPath(cwd = process.cwd()): string[] {
  return [
    path.join(cwd, 'manager.toml'),
    path.join(os.homedir(), '.config', 'backend.ai', 'manager.toml'),
    '/etc/backend.ai/manager.toml',
  ];
}

export const LOCK_BACKENDS = ['filelock', 'pg_advisory', 'etcd'] as const;
export type LockBackendName = (typeof LOCK_BACKENDS)[number];

const addr = z.object({ host: z.string().min(1), port }).strict();

const distributedLock = z.string().transform((v, ctx) => {
  if ((LOCK_BACKENDS as readonly string[]).includes(v)) return v as LockBackendName;
  ctx.addIssue({
    code: 'custom',
    message:
      v === 'redlock'
        ? '"redlock" is not supported in 22.03 (its aioredis v2 implementation raises NotImplementedError); use "etcd", "pg_advisory" or "filelock"'
        : `got ${JSON.stringify(v)}; allowed: ${LOCK_BACKENDS.map((b) => `"${b}"`).join(', ')}`,
  });
  return z.NEVER;
});

const managerTomlSchema = z
  .object({
    etcd: z
      .object({
        namespace: z.string().min(1),
        addr: addr.default({ host: '127.0.0.1', port: 2379 }),
        user: z.string().default(''),
        password: z.string().default(''),
      })
      .passthrough(),
    db: z
      .object({
        type: z.literal('postgresql').default('postgresql'),
        addr,
        name: z.string().regex(/^[\w-]{2,64}$/, 'expected a database name of 2-64 letters, digits, "_" or "-"'),
        user: z.string().min(1),
        password: z.string().default(''),
      })
      .passthrough(),
    manager: z
      .object({
        'num-proc': z.number().int().min(0).optional(),
        'service-addr': addr.optional(),
        'heartbeat-timeout': z.number().positive().default(5.0),
        id: z.string().optional(),
        'pid-file': z.string().optional(),
        'distributed-lock': distributedLock.optional(),
        'ipc-base-path': z.string().default('/tmp/backend.ai/manager/ipc'),
        'hide-agents': z.boolean().optional(),
        'ssl-enabled': toBool.optional(), // trafaret ToBool in Backend.AI's config.py, like debug.enabled
        'event-loop': z.enum(['asyncio', 'uvloop']).optional(),
      })
      .passthrough()
      .default({ 'heartbeat-timeout': 5.0, 'ipc-base-path': '/tmp/backend.ai/manager/ipc' }),
    debug: z
      .object({ enabled: toBool.default(false), 'periodic-sync-stats': toBool.optional() })
      .passthrough()
      .optional(),
  })
  .passthrough();

export interface LocalConfig {
  /** The file it came from. */
  path: string;
  etcd: { namespace: string; host: string; port: number; user: string; password: string };
  db: { host: string; port: number; name: string; user: string; password: string };
  manager: {
    id: string;
    heartbeatTimeoutSec: number;
    distributedLock: LockBackendName | undefined;
    ipcBasePath: string;
  };
}

/**
 * Backend.AI's environment overrides (the `# env:` comments of sample.toml). Returns which key
 * each variable set, so a bad value is reported against the variable, not the file.
 */
function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): Map<string, string> {
  const section = (k: string): Record<string, unknown> => {
    const s = raw[k];
    if (s && typeof s === 'object' && !Array.isArray(s)) return s as Record<string, unknown>;
    const fresh: Record<string, unknown> = {};
    raw[k] = fresh;
    return fresh;
  };
  const hostPort = (name: string, v: string) => {
    const r = hostPortString.safeParse(v);
    if (!r.success) throw new ConfigError([{ source: `environment ${name}`, message: `expected "host:port", got ${JSON.stringify(v)}` }]);
    return r.data;
  };
  const overridden = new Map<string, string>();
  const set = (name: string, sectionName: string, key: string, value: unknown) => {
    section(sectionName)[key] = value;
    overridden.set(`${sectionName}.${key}`, name);
  };
  if (env.BACKEND_NAMESPACE) set('BACKEND_NAMESPACE', 'etcd', 'namespace', env.BACKEND_NAMESPACE);
  if (env.BACKEND_ETCD_ADDR) set('BACKEND_ETCD_ADDR', 'etcd', 'addr', hostPort('BACKEND_ETCD_ADDR', env.BACKEND_ETCD_ADDR));
  if (env.BACKEND_ETCD_USER) set('BACKEND_ETCD_USER', 'etcd', 'user', env.BACKEND_ETCD_USER);
  if (env.BACKEND_ETCD_PASSWORD) set('BACKEND_ETCD_PASSWORD', 'etcd', 'password', env.BACKEND_ETCD_PASSWORD);
  if (env.BACKEND_DB_ADDR) set('BACKEND_DB_ADDR', 'db', 'addr', hostPort('BACKEND_DB_ADDR', env.BACKEND_DB_ADDR));
  if (env.BACKEND_DB_NAME) set('BACKEND_DB_NAME', 'db', 'name', env.BACKEND_DB_NAME);
  if (env.BACKEND_DB_USER) set('BACKEND_DB_USER', 'db', 'user', env.BACKEND_DB_USER);
  if (env.BACKEND_DB_PASSWORD) set('BACKEND_DB_PASSWORD', 'db', 'password', env.BACKEND_DB_PASSWORD);
  return overridden;
}

/** Finds manager.toml: the -f path if given, else the first of the search path that exists. */
export function resolveManagerTomlPath(explicit: string | undefined, cwd = process.cwd()): string {
  if (explicit) {
    if (!existsSync(explicit)) {
      throw new MgrError('config', `config file not found: ${explicit}`, { hint: 'pass the path of manager.toml with -f/--config' });
    }
    return path.resolve(explicit);
  }
  const found = managerTomlSearchPath(cwd).find((p) => existsSync(p));
  if (!found) {
    throw new MgrError('config', `no manager.toml found; looked in: ${managerTomlSearchPath(cwd).join(', ')}`, {
      hint: 'pass the path of manager.toml with -f/--config',
    });
  }
  return found;
}

export function parseManagerTomlText(text: string, file: string): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof TomlError) {
      throw new ConfigError([{ source: file, key: `line ${e.line}, column ${e.column}`, message: `TOML syntax error: ${e.message.split('\n')[0]}` }]);
    }
    throw e;
  }
}

export function loadLocalConfig(explicitPath?: string, env: NodeJS.ProcessEnv = process.env): LocalConfig {
  const file = resolveManagerTomlPath(explicitPath);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new MgrError('config', `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  return localConfigFromText(text, file, env);
}

export function localConfigFromText(text: string, file: string, env: NodeJS.ProcessEnv = {}): LocalConfig {
  const raw = parseManagerTomlText(text, file);
  const overridden = applyEnv(raw, env);
  let c: z.output<typeof managerTomlSchema>;
  try {
    c = parseOrThrow(managerTomlSchema, raw, file, {
      hint: 'fix the keys above in manager.toml (see config/manager.sample.toml and README "Configuration")',
    });
  } catch (e) {
    if (!(e instanceof ConfigError) || overridden.size === 0) throw e;
    const fromEnv = (key: string | undefined) => [...overridden].find(([k]) => key === k || key?.startsWith(`${k}.`))?.[1];
    throw new ConfigError(
      e.problems.map((p) => (fromEnv(p.key) ? { ...p, source: `environment ${fromEnv(p.key)}` } : p)),
      e.hint,
    );
  }
  return {
    path: file,
    etcd: { namespace: c.etcd.namespace, host: c.etcd.addr.host, port: c.etcd.addr.port, user: c.etcd.user, password: c.etcd.password },
    db: { host: c.db.addr.host, port: c.db.addr.port, name: c.db.name, user: c.db.user, password: c.db.password },
    manager: {
      id: c.manager.id || `i-${os.hostname()}`,
      heartbeatTimeoutSec: c.manager['heartbeat-timeout'],
      distributedLock: c.manager['distributed-lock'],
      ipcBasePath: c.manager['ipc-base-path'],
    },
  };
}
