import { mkdir, writeFile, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
  startPostgres,
  startRedis,
  startEtcd,
  startRegistry,
  stopProcess,
  type PgHandle,
  type RedisHandle,
  type EtcdHandle,
  type RegistryHandle,
} from './services.js';
import { MgrError } from '../errors.js';
import { localConfigFromText, type LocalConfig } from '../config/manager-toml.js';
import { EtcdStore } from '../stores/etcd.js';

export * from './services.js';

export type ServiceName = 'postgres' | 'redis' | 'etcd' | 'registry';
export const ALL_SERVICES: ServiceName[] = ['postgres', 'redis', 'etcd', 'registry'];

export interface Sandbox {
  dir: string;
  namespace: string;
  pg: PgHandle;
  redis: RedisHandle;
  etcd: EtcdHandle;
  registry: RegistryHandle | undefined;
  /** Path of a manager.toml that points at these stores. */
  managerToml: string;
  /** That manager.toml, parsed. */
  config: LocalConfig;
  stop(): Promise<void>;
}

export interface SandboxOptions {
  dir: string;
  namespace?: string;
  withRegistry?: boolean;
  detached?: boolean;
  redisPassword?: string;
  pgPassword?: string;
  /** Registry config merged into the registry's YAML (auth, maintenance …). */
  registryConfig?: Record<string, unknown>;
}

/** The state file `mgr sandbox stop` reads to find the servers of a detached sandbox. */
export interface SandboxState {
  dir: string;
  namespace: string;
  managerToml: string;
  pids: Record<string, number>;
  ports: Record<string, number>;
  registryUrl?: string;
  createdAt: string;
}

export const STATE_FILE = 'sandbox.json';

export async function startSandbox(opts: SandboxOptions): Promise<Sandbox> {
  const dir = path.resolve(opts.dir);
  await mkdir(dir, { recursive: true });
  const namespace = opts.namespace ?? 'local';
  const started: { stop(): Promise<void> }[] = [];
  try {
    const [pg, redis, etcd, registry] = await Promise.all([
      startPostgres(path.join(dir, 'postgres'), { detached: opts.detached, password: opts.pgPassword }).then((h) => {
        started.push(h);
        return h;
      }),
      startRedis(path.join(dir, 'redis'), { detached: opts.detached, password: opts.redisPassword }).then((h) => {
        started.push(h);
        return h;
      }),
      startEtcd(path.join(dir, 'etcd'), { detached: opts.detached }).then((h) => {
        started.push(h);
        return h;
      }),
      opts.withRegistry === false
        ? Promise.resolve(undefined)
        : startRegistry(path.join(dir, 'registry'), {
            detached: opts.detached,
            extraConfig: opts.registryConfig,
          }).then((h) => {
            started.push(h);
            return h;
          }),
    ]);
    const managerToml = path.join(dir, 'manager.toml');
    const tomlText = sandboxManagerToml({ namespace, pg, etcd, dir });
    await writeFile(managerToml, tomlText, { mode: 0o600 });
    await writeRedisAddress(etcd.endpoint, namespace, redis);
    const sandbox: Sandbox = {
      dir,
      namespace,
      pg,
      redis,
      etcd,
      registry,
      managerToml,
      config: localConfigFromText(tomlText, managerToml),
      stop: async () => {
        await Promise.all([pg.stop(), redis.stop(), etcd.stop(), registry?.stop()]);
        await rm(path.join(dir, STATE_FILE), { force: true });
      },
    };
    const state: SandboxState = {
      dir,
      namespace,
      managerToml,
      pids: { postgres: pg.pid, redis: redis.pid, etcd: etcd.pid, ...(registry ? { registry: registry.pid } : {}) },
      ports: { postgres: pg.port, redis: redis.port, etcd: etcd.port, ...(registry ? { registry: registry.port } : {}) },
      registryUrl: registry?.url,
      createdAt: new Date().toISOString(),
    };
    await writeFile(path.join(dir, STATE_FILE), JSON.stringify(state, null, 2) + '\n');
    return sandbox;
  } catch (e) {
    await Promise.all(started.map((h) => h.stop()));
    throw e;
  }
}

/** A manager finds Redis through etcd (config/redis): without it the sandbox cannot be opened. */
async function writeRedisAddress(endpoint: string, namespace: string, redis: RedisHandle): Promise<void> {
  const etcd = new EtcdStore(endpoint, namespace);
  try {
    await etcd.put('config/redis/addr', `${redis.host}:${redis.port}`);
    if (redis.password) await etcd.put('config/redis/password', redis.password);
  } finally {
    etcd.close();
  }
}

/** A manager.toml as an operator would have it, pointing at the sandbox's stores. */
export function sandboxManagerToml(o: { namespace: string; pg: PgHandle; etcd: EtcdHandle; dir: string }): string {
  return `# manager.toml of the mgr sandbox (generated; real stores on loopback ports)
[etcd]
namespace = "${o.namespace}"
addr = { host = "127.0.0.1", port = ${o.etcd.port} }
user = ""
password = ""

[db]
type = "postgresql"
addr = { host = "127.0.0.1", port = ${o.pg.port} }
name = "${o.pg.endpoint.database}"
user = "${o.pg.endpoint.user}"
password = "${o.pg.endpoint.password}"

[manager]
num-proc = 2
service-addr = { host = "127.0.0.1", port = 8081 }
heartbeat-timeout = 30.0
id = "i-sandbox"
ipc-base-path = "${path.join(o.dir, 'ipc')}"

[logging]
level = "INFO"
drivers = ["console"]

[debug]
enabled = false
`;
}

export async function readSandboxState(dir: string): Promise<SandboxState> {
  const file = path.join(path.resolve(dir), STATE_FILE);
  if (!existsSync(file)) {
    throw new MgrError('usage', `no running sandbox in ${dir} (no ${STATE_FILE})`, {
      hint: 'start one with: mgr sandbox start --dir ' + dir,
    });
  }
  return JSON.parse(await readFile(file, 'utf8')) as SandboxState;
}

/** Stops a detached sandbox by the pids in its state file. */
export async function stopSandboxFromState(dir: string): Promise<SandboxState> {
  const state = await readSandboxState(dir);
  await Promise.all(
    Object.entries(state.pids).map(([name, pid]) => stopProcess(pid, name === 'postgres' ? 'SIGINT' : 'SIGTERM')),
  );
  await rm(path.join(state.dir, STATE_FILE), { force: true });
  return state;
}
