import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { createServer, createConnection } from 'node:net';
import { mkdir, writeFile, chmod, chown, readFile, rm } from 'node:fs/promises';
import { existsSync, openSync } from 'node:fs';
import path from 'node:path';
import { MgrError } from '../errors.js';

/**
 * Real throwaway stores from Debian's packages on loopback ports, each under its own folder.
 * Shared by the test harness, the README demo and `mgr upgrade rehearse`. Nothing here mocks a
 * store: these are the same server binaries production runs.
 */

export const PG_BIN = '/usr/lib/postgresql/15/bin';

export interface PgEndpoint {
  host: string;
  port: number;
  user: string;
  password: string;
  database: string;
}

export interface ServiceHandle {
  name: string;
  port: number;
  pid: number;
  dir: string;
  /** Stops the server and waits for it to exit. */
  stop(): Promise<void>;
}

export interface PgHandle extends ServiceHandle {
  endpoint: PgEndpoint;
  /** Starts the same data dir again (after stop). */
  start(): Promise<void>;
}

export interface RedisHandle extends ServiceHandle {
  host: string;
  configFile: string;
  password: string | undefined;
  start(): Promise<void>;
}

export interface EtcdHandle extends ServiceHandle {
  endpoint: string;
  start(): Promise<void>;
}

export interface RegistryHandle extends ServiceHandle {
  url: string;
  configFile: string;
}

export interface StartOptions {
  /** Detach so the servers outlive this process (the demo sandbox). Default false. */
  detached?: boolean;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitReady(
  name: string,
  child: { exited: () => boolean; log: string },
  ready: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exited()) {
      const log = existsSync(child.log) ? (await readFile(child.log, 'utf8')).slice(-2000) : '';
      throw new MgrError('storeUnreachable', `${name} exited during start-up`, { details: { log } });
    }
    if (await ready()) return;
    await sleep(50);
  }
  throw new MgrError('storeUnreachable', `${name} was not ready within ${timeoutMs} ms`);
}

interface Spawned {
  proc: ChildProcess;
  exited: () => boolean;
  log: string;
}

function spawnServer(
  cmd: string,
  args: string[],
  opts: { cwd: string; log: string; uid?: number; gid?: number; detached?: boolean },
): Spawned {
  const fd = openSync(opts.log, 'a');
  const proc = spawn(cmd, args, {
    cwd: opts.cwd,
    stdio: ['ignore', fd, fd],
    detached: opts.detached ?? false,
    uid: opts.uid,
    gid: opts.gid,
  });
  let exited = false;
  proc.on('exit', () => {
    exited = true;
  });
  proc.on('error', () => {
    exited = true;
  });
  if (opts.detached) proc.unref();
  return { proc, exited: () => exited, log: opts.log };
}

async function stopProcess(pid: number, signal: NodeJS.Signals, timeoutMs = 15_000): Promise<void> {
  try {
    process.kill(pid, signal);
  } catch {
    return; // already gone
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await sleep(25);
  }
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

/** Starts a server, picking a new free port when the chosen one was taken meanwhile. */
async function withPortRetry<T>(start: (port: number) => Promise<T>, attempts = 3): Promise<T> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    const port = await freePort();
    try {
      return await start(port);
    } catch (e) {
      last = e;
    }
  }
  throw last;
}

function postgresIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid };
}

/** PostgreSQL refuses to run as root: every parent of its data dir must be traversable. */
async function makeTraversable(dir: string): Promise<void> {
  let d = path.resolve(dir);
  while (d !== path.dirname(d)) {
    try {
      await chmod(d, 0o755);
    } catch {
      break;
    }
    d = path.dirname(d);
    if (d === '/tmp' || d === '/') break;
  }
}

export async function startPostgres(dir: string, opts: StartOptions & { password?: string } = {}): Promise<PgHandle> {
  const ids = postgresIds();
  const data = path.join(dir, 'data');
  const sock = path.join(dir, 'sock');
  const password = opts.password ?? 'sandbox-pg-secret';
  if (!existsSync(path.join(data, 'PG_VERSION'))) {
    await mkdir(sock, { recursive: true });
    await makeTraversable(dir);
    const pwfile = path.join(dir, 'pwfile');
    await writeFile(pwfile, password + '\n', { mode: 0o600 });
    if (ids) {
      await chown(dir, ids.uid, ids.gid);
      await chown(sock, ids.uid, ids.gid);
      await chown(pwfile, ids.uid, ids.gid);
    }
    execFileSync(
      path.join(PG_BIN, 'initdb'),
      ['-D', data, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C.UTF-8'],
      { stdio: 'ignore', uid: ids?.uid, gid: ids?.gid },
    );
    await rm(pwfile);
  }
  const endpoint: PgEndpoint = { host: '127.0.0.1', port: 0, user: 'postgres', password, database: 'backend' };
  let current: Spawned | undefined;
  let port = 0;
  const boot = async (p: number) => {
    const sp = spawnServer(
      path.join(PG_BIN, 'postgres'),
      ['-D', data, '-p', String(p), '-k', sock, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off',
        '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=200'],
      { cwd: dir, log: path.join(dir, 'postgres.log'), uid: ids?.uid, gid: ids?.gid, detached: opts.detached },
    );
    try {
      await waitReady('postgres', sp, () => portOpen(p));
      // accepting TCP is not accepting queries: wait until pg_isready says so
      await waitReady('postgres', sp, async () => {
        try {
          execFileSync('/usr/bin/pg_isready', ['-h', '127.0.0.1', '-p', String(p), '-q']);
          return true;
        } catch {
          return false;
        }
      });
    } catch (e) {
      if (sp.proc.pid) await stopProcess(sp.proc.pid, 'SIGKILL');
      throw e;
    }
    current = sp;
    port = p;
    endpoint.port = p;
  };
  await withPortRetry(boot);
  await ensureDatabase(endpoint);
  const handle: PgHandle = {
    name: 'postgres',
    dir,
    endpoint,
    get port() {
      return port;
    },
    get pid() {
      return current?.proc.pid ?? 0;
    },
    stop: async () => {
      if (current?.proc.pid) await stopProcess(current.proc.pid, 'SIGINT');
    },
    start: async () => boot(port),
  };
  return handle;
}

async function ensureDatabase(ep: PgEndpoint): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ ...ep, database: 'postgres' });
  await client.connect();
  try {
    const r = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [ep.database]);
    if (r.rowCount === 0) await client.query(`CREATE DATABASE "${ep.database}"`);
  } finally {
    await client.end();
  }
}

export async function startRedis(
  dir: string,
  opts: StartOptions & { password?: string; withConfigFile?: boolean } = {},
): Promise<RedisHandle> {
  await mkdir(dir, { recursive: true });
  const configFile = path.join(dir, 'redis.conf');
  const withConfigFile = opts.withConfigFile ?? true;
  let current: Spawned | undefined;
  let port = 0;
  const boot = async (p: number) => {
    const settings = [`port ${p}`, 'bind 127.0.0.1', `dir ${dir}`, 'save ""', 'appendonly no', 'daemonize no'];
    if (opts.password) settings.push(`requirepass ${opts.password}`);
    let args: string[];
    if (withConfigFile) {
      // Redis rewrites this file on CONFIG REWRITE: create it the first time, later only move
      // its port (a sandbox started again gets a new free port) and keep every other setting.
      if (!existsSync(configFile)) await writeFile(configFile, settings.join('\n') + '\n');
      else await writeFile(configFile, (await readFile(configFile, 'utf8')).replace(/^port \d+$/m, `port ${p}`));
      args = [configFile];
    } else {
      args = settings.flatMap((s) => {
        const [k, ...v] = s.split(' ');
        return [`--${k}`, v.join(' ').replace(/^"(.*)"$/, '$1')];
      });
    }
    const sp = spawnServer('/usr/bin/redis-server', args, {
      cwd: dir,
      log: path.join(dir, 'redis.log'),
      detached: opts.detached,
    });
    try {
      await waitReady('redis', sp, () => portOpen(p));
    } catch (e) {
      if (sp.proc.pid) await stopProcess(sp.proc.pid, 'SIGKILL');
      throw e;
    }
    current = sp;
    port = p;
  };
  await withPortRetry(boot);
  return {
    name: 'redis',
    dir,
    host: '127.0.0.1',
    configFile,
    password: opts.password,
    get port() {
      return port;
    },
    get pid() {
      return current?.proc.pid ?? 0;
    },
    stop: async () => {
      if (current?.proc.pid) await stopProcess(current.proc.pid, 'SIGTERM');
    },
    start: async () => {
      // the config file now carries the port; reuse it
      if (withConfigFile) {
        const text = await readFile(configFile, 'utf8');
        const m = /^port (\d+)/m.exec(text);
        await boot(m ? Number(m[1]) : port);
      } else await boot(port);
    },
  };
}

export async function startEtcd(dir: string, opts: StartOptions = {}): Promise<EtcdHandle> {
  await mkdir(dir, { recursive: true });
  let current: Spawned | undefined;
  let port = 0;
  let peer = 0;
  const boot = async (p: number) => {
    peer = peer || (await freePort());
    const sp = spawnServer(
      '/usr/bin/etcd',
      ['--name', 'sandbox', '--data-dir', path.join(dir, 'data'),
        '--listen-client-urls', `http://127.0.0.1:${p}`, '--advertise-client-urls', `http://127.0.0.1:${p}`,
        '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
        '--initial-cluster', `sandbox=http://127.0.0.1:${peer}`, '--quota-backend-bytes', String(8 * 1024 ** 3),
        '--max-txn-ops', '1024', '--logger', 'zap', '--log-outputs', 'stderr'],
      { cwd: dir, log: path.join(dir, 'etcd.log'), detached: opts.detached },
    );
    try {
      await waitReady('etcd', sp, async () => {
        try {
          const r = await fetch(`http://127.0.0.1:${p}/health`);
          return r.ok;
        } catch {
          return false;
        }
      });
    } catch (e) {
      if (sp.proc.pid) await stopProcess(sp.proc.pid, 'SIGKILL');
      peer = 0;
      throw e;
    }
    current = sp;
    port = p;
  };
  await withPortRetry(boot);
  return {
    name: 'etcd',
    dir,
    get endpoint() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return current?.proc.pid ?? 0;
    },
    stop: async () => {
      if (current?.proc.pid) await stopProcess(current.proc.pid, 'SIGTERM');
    },
    start: async () => boot(port),
  };
}

/**
 * The distribution registry 2.8. `extraConfig` is merged into its config (JSON is valid YAML),
 * e.g. `{ auth: { htpasswd: {...} } }` or `{ auth: { token: {...} } }`.
 */
export async function startRegistry(
  dir: string,
  opts: StartOptions & { extraConfig?: Record<string, unknown> } = {},
): Promise<RegistryHandle> {
  await mkdir(dir, { recursive: true });
  const configFile = path.join(dir, 'config.yml');
  let current: Spawned | undefined;
  let port = 0;
  const boot = async (p: number) => {
    const config = {
      version: 0.1,
      log: { level: 'warn' },
      storage: { filesystem: { rootdirectory: path.join(dir, 'data') }, delete: { enabled: true } },
      http: { addr: `127.0.0.1:${p}` },
      ...opts.extraConfig,
    };
    await writeFile(configFile, JSON.stringify(config, null, 2));
    const sp = spawnServer('/usr/bin/docker-registry', ['serve', configFile], {
      cwd: dir,
      log: path.join(dir, 'registry.log'),
      detached: opts.detached,
    });
    try {
      await waitReady('docker-registry', sp, () => portOpen(p));
    } catch (e) {
      if (sp.proc.pid) await stopProcess(sp.proc.pid, 'SIGKILL');
      throw e;
    }
    current = sp;
    port = p;
  };
  await withPortRetry(boot);
  return {
    name: 'registry',
    dir,
    configFile,
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return current?.proc.pid ?? 0;
    },
    stop: async () => {
      if (current?.proc.pid) await stopProcess(current.proc.pid, 'SIGTERM');
    },
  };
}

export { stopProcess };
