import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError, MgrError, type InputProblem } from '../../src/errors.js';
import { loadLocalConfig, localConfigFromText } from '../../src/config/manager-toml.js';
import { parseSharedConfig } from '../../src/config/shared.js';
import type { EtcdTree } from '../../src/stores/etcd.js';

const FILE = '/etc/backend.ai/manager.toml';

/** A valid manager.toml with `manager` lines appended and `edit` applied to the whole text. */
function toml(manager = '', edit: (t: string) => string = (t) => t): string {
  return edit(`[etcd]
namespace = "local"
addr = { host = "127.0.0.1", port = 2379 }

[db]
type = "postgresql"
addr = { host = "localhost", port = 5432 }
name = "backend"
user = "postgres"
password = "DB_PASSWORD"

[manager]
${manager}
`);
}

/** The problems a bad manager.toml gives; fails the test if it parses. */
function problemsOf(text: string, env: NodeJS.ProcessEnv = {}): InputProblem[] {
  try {
    localConfigFromText(text, FILE, env);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    expect((e as ConfigError).code).toBe('config');
    expect((e as ConfigError).exitCode).toBe(3);
    return (e as ConfigError).problems;
  }
  throw new Error('expected a ConfigError');
}

describe('manager.toml validation: every problem names the file, the key, what was wrong and what is allowed', () => {
  it('TOML syntax error, with its line', () => {
    const [p, ...rest] = problemsOf('[etcd]\nnamespace = "local"\naddr = { host = "127.0.0.1", port = }\n');
    expect(rest).toEqual([]);
    expect(p).toMatchObject({ source: FILE, key: expect.stringMatching(/^line 3, column \d+$/) });
    expect(p!.message).toMatch(/^TOML syntax error/);
  });

  it('missing [etcd] namespace', () => {
    expect(problemsOf(toml('', (t) => t.replace('namespace = "local"\n', '')))).toEqual([
      { source: FILE, key: 'etcd.namespace', message: 'required, expected string' },
    ]);
  });

  it('port out of range', () => {
    expect(problemsOf(toml('', (t) => t.replace('port = 5432', 'port = 70000')))).toEqual([
      { source: FILE, key: 'db.addr.port', message: 'Too big: expected number to be <=65535, got number 70000' },
    ]);
  });

  it('port given as a string', () => {
    expect(problemsOf(toml('', (t) => t.replace('port = 5432', 'port = "5432"')))).toEqual([
      { source: FILE, key: 'db.addr.port', message: 'expected number, got string "5432"' },
    ]);
  });

  it('db.type other than postgresql', () => {
    expect(problemsOf(toml('', (t) => t.replace('type = "postgresql"', 'type = "mysql"')))).toEqual([
      { source: FILE, key: 'db.type', message: 'got "mysql"; allowed: "postgresql"' },
    ]);
  });

  it('bad database name', () => {
    const [p] = problemsOf(toml('', (t) => t.replace('name = "backend"', 'name = "back end!"')));
    expect(p).toMatchObject({ source: FILE, key: 'db.name' });
    expect(p!.message).toBe('expected a database name of 2-64 letters, digits, "_" or "-", got string "back end!"');
  });

  it('unknown distributed-lock backend', () => {
    expect(problemsOf(toml('distributed-lock = "zookeeper"'))).toEqual([
      { source: FILE, key: 'manager.distributed-lock', message: 'got "zookeeper"; allowed: "filelock", "pg_advisory", "etcd"' },
    ]);
  });

  it('redlock gets its own explanation', () => {
    const [p] = problemsOf(toml('distributed-lock = "redlock"'));
    expect(p).toMatchObject({ source: FILE, key: 'manager.distributed-lock' });
    expect(p!.message).toMatch(/"redlock" is not supported in 22\.03.*use "etcd", "pg_advisory" or "filelock"/);
  });

  it('negative heartbeat-timeout', () => {
    expect(problemsOf(toml('heartbeat-timeout = -1.0'))).toEqual([
      { source: FILE, key: 'manager.heartbeat-timeout', message: 'Too small: expected number to be >0, got number -1' },
    ]);
  });

  it('addr without host', () => {
    expect(problemsOf(toml('', (t) => t.replace('host = "127.0.0.1", ', '')))).toEqual([
      { source: FILE, key: 'etcd.addr.host', message: 'required, expected string' },
    ]);
  });

  it('malformed BACKEND_DB_ADDR override', () => {
    expect(problemsOf(toml(), { BACKEND_DB_ADDR: 'localhost' })).toEqual([
      { source: 'environment BACKEND_DB_ADDR', message: 'expected "host:port", got "localhost"' },
    ]);
  });

  it('reports every problem at once, and never echoes a password', () => {
    const problems = problemsOf(toml('heartbeat-timeout = -1.0', (t) => t.replace('port = 5432', 'port = 0').replace('password = "DB_PASSWORD"', 'password = 12345678')));
    expect(problems.map((p) => p.key).sort()).toEqual(['db.addr.port', 'db.password', 'manager.heartbeat-timeout']);
    const pw = problems.find((p) => p.key === 'db.password')!;
    expect(pw.message).toBe('expected string, got a number (value hidden)');
  });

  it('a missing file says which path and how to pass one', () => {
    const err = (() => {
      try {
        loadLocalConfig('/nonexistent/manager.toml');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(MgrError);
    expect((err as MgrError).code).toBe('config');
    expect((err as MgrError).message).toBe('config file not found: /nonexistent/manager.toml');
    expect((err as MgrError).hint).toMatch(/-f\/--config/);
  });

  it('BACKEND_* overrides apply over the file', () => {
    const c = localConfigFromText(toml(), FILE, { BACKEND_DB_ADDR: 'db.internal:6432', BACKEND_NAMESPACE: 'prod' });
    expect(c.db).toMatchObject({ host: 'db.internal', port: 6432 });
    expect(c.etcd.namespace).toBe('prod');
  });

  it('reads Backend.AI’s 21.x sample.toml as it is', () => {
    // test/fixtures/manager-21.x.sample.toml: Backend.AI's config/sample.toml (shared/reference/samples)
    const path = 'test/fixtures/manager-21.x.sample.toml';
    const c = localConfigFromText(readFileSync(path, 'utf8'), path);
    expect(c.path).toBe(path);
    expect(c.etcd).toEqual({ namespace: 'local', host: '127.0.0.1', port: 2379, user: 'manager', password: 'ETCD_PASSWORD' });
    expect(c.db).toEqual({ host: 'localhost', port: 5432, name: 'backend', user: 'postgres', password: 'DB_PASSWORD' });
    expect(c.manager.heartbeatTimeoutSec).toBe(30);
    expect(c.manager.distributedLock).toBeUndefined(); // 21.x has no such key
    expect(c.manager.id).toMatch(/^i-/);
  });
});

describe('etcd shared config validation (parseSharedConfig)', () => {
  const redis = { addr: '127.0.0.1:6379' };
  const registry = (node: EtcdTree): EtcdTree => ({ redis, docker: { registry: { 'cr.backend.ai': node } } });
  const problemsOf = (tree: EtcdTree): InputProblem[] => {
    try {
      parseSharedConfig(tree, 'local');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as ConfigError).problems;
    }
    throw new Error('expected a ConfigError');
  };
  const REG = 'etcd /sorna/local/config/docker/registry/cr.backend.ai';

  it('reads the sample etcd config with registries and Redis', () => {
    // config/etcd.config.sample.json: Backend.AI's sample.etcd.config.json (shared/reference/samples)
    const tree = JSON.parse(readFileSync('config/etcd.config.sample.json', 'utf8')) as EtcdTree;
    const c = parseSharedConfig(tree, 'local');
    expect(c.redis).toMatchObject({ host: '127.0.0.1', port: 6379, password: 'REDIS_PASSWORD' });
    expect(c.registries).toEqual([
      { name: 'index.docker.io', url: 'https://cr.backend.ai', type: 'harbor2', username: undefined, password: undefined, projects: ['stable', 'ngc'], sslVerify: true },
    ]);
  });

  it('bad registry URL', () => {
    expect(problemsOf(registry({ '': 'ftp://cr.backend.ai', type: 'harbor2' }))).toEqual([{ source: REG, message: 'expected an http(s) URL, got string "ftp://cr.backend.ai"' }]);
  });

  it('bad ssl-verify boolean', () => {
    expect(problemsOf(registry({ '': 'https://cr.backend.ai', 'ssl-verify': 'maybe' }))).toEqual([
      { source: REG, key: 'ssl-verify', message: 'expected a boolean (true/false, yes/no, 1/0, on/off), got "maybe"' },
    ]);
  });

  it('unknown registry type', () => {
    expect(problemsOf(registry({ '': 'https://cr.backend.ai', type: 'quay' }))).toEqual([{ source: REG, key: 'type', message: 'got "quay"; allowed: "docker", "harbor", "harbor2"' }]);
  });

  it('missing Redis address', () => {
    expect(problemsOf({})).toEqual([{ source: 'etcd /sorna/local/config/redis', message: 'missing: the Redis address (config/redis/addr) must be set in etcd' }]);
    expect(problemsOf({ redis: { password: 'x' } })).toEqual([{ source: 'etcd /sorna/local/config/redis', message: 'either addr or sentinel is required' }]);
  });

  it('bad Redis address and bad sentinel list', () => {
    expect(problemsOf({ redis: { addr: '127.0.0.1' } })).toEqual([
      { source: 'etcd /sorna/local/config/redis', key: 'addr', message: 'expected "host:port" with a port 1-65535, got "127.0.0.1"' },
    ]);
    expect(problemsOf({ redis: { sentinel: '127.0.0.1:8217,nohost', service_name: 'manager' } })).toEqual([
      { source: 'etcd /sorna/local/config/redis', key: 'sentinel', message: 'bad sentinel address "nohost"; expected host:port[,host:port…]' },
    ]);
    expect(problemsOf({ redis: { sentinel: '127.0.0.1:8217' } })).toEqual([{ source: 'etcd /sorna/local/config/redis', key: 'service_name', message: 'required with sentinel' }]);
  });

  it('reads sentinels and a registry given as a bare URL', () => {
    const c = parseSharedConfig({ redis: { sentinel: '10.0.0.1:26379, 10.0.0.2:26379', service_name: 'manager' }, docker: { registry: { 'localhost:5000': 'http://localhost:5000/' } } }, 'local');
    expect(c.redis.sentinels).toEqual([{ host: '10.0.0.1', port: 26379 }, { host: '10.0.0.2', port: 26379 }]);
    expect(c.registries).toMatchObject([{ name: 'localhost:5000', url: 'http://localhost:5000', type: 'docker', sslVerify: true }]);
  });
});
