import { z } from 'zod';
import { ConfigError, type InputProblem } from '../errors.js';
import { quote, type EtcdStore, type EtcdTree } from '../stores/etcd.js';
import { hostPortString, issuesToProblems, toBool } from './validate.js';

/**
 * The shared config every manager and agent reads from etcd (`/sorna/{ns}/config/...`): the
 * Redis address and the container registries. Validated here, once, with the etcd key named.
 */

export interface RedisTarget {
  host: string;
  port: number;
  password: string | undefined;
  /** Sentinel nodes, when `config/redis/sentinel` is set. */
  sentinels: { host: string; port: number }[] | undefined;
  serviceName: string | undefined;
}

export type RegistryType = 'docker' | 'harbor' | 'harbor2';

export interface RegistryConfig {
  /** The registry name as used in etcd and in image names, e.g. "cr.backend.ai". */
  name: string;
  url: string;
  type: RegistryType;
  username: string | undefined;
  password: string | undefined;
  projects: string[];
  sslVerify: boolean;
}

export interface SharedConfig {
  redis: RedisTarget;
  registries: RegistryConfig[];
}

const redisSchema = z
  .object({
    addr: hostPortString.optional(),
    password: z.string().optional(),
    sentinel: z.string().optional(),
    service_name: z.string().optional(),
  })
  .passthrough()
  .superRefine((v, ctx) => {
    if (!v.addr && !v.sentinel) ctx.addIssue({ code: 'custom', message: 'either addr or sentinel is required' });
    if (v.sentinel && !v.service_name) ctx.addIssue({ code: 'custom', path: ['service_name'], message: 'required with sentinel' });
  });

const registrySchema = z
  .object({
    '': z.string().refine((u) => {
      try {
        const url = new URL(u);
        return url.protocol === 'http:' || url.protocol === 'https:';
      } catch {
        return false;
      }
    }, 'expected an http(s) URL'),
    type: z.enum(['docker', 'harbor', 'harbor2']).default('docker'),
    username: z.string().optional(),
    password: z.string().optional(),
    project: z.union([z.string(), z.record(z.string(), z.string())]).optional(),
    'ssl-verify': toBool.default(true),
  })
  .passthrough();

function parseSentinels(s: string, problems: InputProblem[], source: string) {
  return s.split(',').flatMap((part) => {
    const r = hostPortString.safeParse(part.trim());
    if (r.success) return [r.data];
    problems.push({ source, key: 'sentinel', message: `bad sentinel address ${JSON.stringify(part)}; expected host:port[,host:port…]` });
    return [];
  });
}

/** Validates the etcd `config` tree (as getPrefix('config') returns it). */
export function parseSharedConfig(tree: EtcdTree, namespace: string): SharedConfig {
  const problems: InputProblem[] = [];
  const root = `etcd /sorna/${namespace}/config`;
  const redisNode = tree.redis;
  let redis: RedisTarget = { host: '127.0.0.1', port: 6379, password: undefined, sentinels: undefined, serviceName: undefined };
  if (redisNode === undefined || typeof redisNode === 'string') {
    problems.push({ source: `${root}/redis`, message: 'missing: the Redis address (config/redis/addr) must be set in etcd' });
  } else {
    const r = redisSchema.safeParse(redisNode, { reportInput: true });
    if (!r.success) problems.push(...issuesToProblems(r.error, `${root}/redis`));
    else {
      redis = {
        host: r.data.addr?.host ?? '',
        port: r.data.addr?.port ?? 0,
        password: r.data.password || undefined,
        sentinels: r.data.sentinel ? parseSentinels(r.data.sentinel, problems, `${root}/redis`) : undefined,
        serviceName: r.data.service_name,
      };
    }
  }
  const registries: RegistryConfig[] = [];
  const docker = tree.docker;
  const regTree = docker && typeof docker === 'object' ? docker.registry : undefined;
  if (regTree && typeof regTree === 'object') {
    for (const [name, node] of Object.entries(regTree)) {
      if (name === '') continue;
      const source = `${root}/docker/registry/${quote(name)}`; // the key as stored, e.g. localhost%3A5000
      const value = typeof node === 'string' ? { '': node } : node;
      const r = registrySchema.safeParse(value, { reportInput: true });
      if (!r.success) {
        problems.push(...issuesToProblems(r.error, source));
        continue;
      }
      const p = r.data.project;
      const projects = typeof p === 'string' ? p.split(',').map((s) => s.trim()).filter(Boolean) : p ? Object.values(p) : [];
      registries.push({
        name,
        url: r.data[''].replace(/\/+$/, ''),
        type: r.data.type,
        username: r.data.username || undefined,
        password: r.data.password || undefined,
        projects,
        sslVerify: r.data['ssl-verify'],
      });
    }
  }
  if (problems.length) throw new ConfigError(problems, 'fix the keys with `etcdctl put` (or backend.ai mgr etcd put) and run again');
  return { redis, registries };
}

export async function loadSharedConfig(etcd: EtcdStore): Promise<SharedConfig> {
  return parseSharedConfig(await etcd.getPrefix('config'), etcd.namespace);
}
