import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { loadLocalConfig } from '../../src/config/manager-toml.js';
import { loadSharedConfig } from '../../src/config/shared.js';
import { EtcdStore, openStores, type EtcdTree } from '../../src/stores/index.js';
import { startTestSandbox, writeTemp, type TestSandbox } from '../helpers/sandbox.js';

describe('shared config read back from a real etcd', () => {
  let sb: TestSandbox;
  let etcd: EtcdStore;

  beforeAll(async () => {
    sb = await startTestSandbox();
    etcd = new EtcdStore(sb.etcd.endpoint, 'cfgtest');
  });
  afterAll(async () => {
    etcd?.close();
    await sb?.stop();
  });

  it('loads what `mgr etcd put-json config` would write from the sample, with registry names quoted in the keys', async () => {
    // config/etcd.config.sample.json: Backend.AI's sample.etcd.config.json (shared/reference/samples)
    const sample = JSON.parse(readFileSync('config/etcd.config.sample.json', 'utf8')) as EtcdTree;
    const tree: EtcdTree = {
      ...sample,
      redis: { addr: `127.0.0.1:${sb.redis.port}` },
      docker: { registry: { 'localhost:5000': { '': 'http://localhost:5000', type: 'docker', 'ssl-verify': 'false' }, 'cr.backend.ai': { '': 'https://cr.backend.ai', type: 'harbor2', project: 'stable,ngc' } } },
    };
    await etcd.putPrefix('config', tree);
    expect(await etcd.get('config/docker/registry/localhost%3A5000')).toBe('http://localhost:5000');
    const shared = await loadSharedConfig(etcd);
    expect(shared.redis).toMatchObject({ host: '127.0.0.1', port: sb.redis.port, password: undefined });
    expect(shared.registries.map((r) => [r.name, r.type, r.sslVerify, r.projects])).toEqual([
      ['cr.backend.ai', 'harbor2', true, ['stable', 'ngc']],
      ['localhost:5000', 'docker', false, []],
    ]);
  });

  it('a bad value in etcd is reported with its full key, and openStores stops with exit code 3', async () => {
    await etcd.put('config/docker/registry/localhost%3A5000/type', 'quay');
    await etcd.put('config/redis/addr', 'redis-without-port');
    const err = await loadSharedConfig(etcd).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      { source: 'etcd /sorna/cfgtest/config/redis', key: 'addr', message: 'expected "host:port" with a port 1-65535, got "redis-without-port"' },
      { source: 'etcd /sorna/cfgtest/config/docker/registry/localhost%3A5000', key: 'type', message: 'got "quay"; allowed: "docker", "harbor", "harbor2"' },
    ]);
    const config = { ...sb.config, etcd: { ...sb.config.etcd, namespace: 'cfgtest' } };
    const opened = await openStores(config).catch((e: unknown) => e);
    expect(opened).toBeInstanceOf(ConfigError);
    expect((opened as ConfigError).exitCode).toBe(3);
  });

  it('reads the sandbox manager.toml from disk, with BACKEND_* overrides from the environment', async () => {
    const file = await writeTemp(sb.dir, 'copy.toml', readFileSync(sb.managerToml, 'utf8'));
    const c = loadLocalConfig(file, { BACKEND_DB_NAME: 'other_db', BACKEND_ETCD_ADDR: `127.0.0.1:${sb.etcd.port}` });
    expect(c.path).toBe(file);
    expect(c.db).toMatchObject({ port: sb.pg.port, name: 'other_db', user: 'postgres' });
    expect(c.etcd).toMatchObject({ namespace: 'local', port: sb.etcd.port });
    expect(c.manager.heartbeatTimeoutSec).toBe(30);
  });
});
