import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/sandbox/index.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { installationStatus, installationStatusFromConfig, type StatusReport } from '../../src/status/index.js';
import { REDIS_DB, type Stores } from '../../src/stores/index.js';
import { startTestSandbox, writeTemp, type TestSandbox } from '../helpers/sandbox.js';

const run = promisify(execFile);

/** Runs the built CLI (dist/, built by `npm test` first); resolves with its exit code instead of throwing. */
async function mgr(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [path.resolve('bin/mgr.js'), ...args], { timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('mgr status on a seeded 21.03 installation', () => {
  let sb: TestSandbox;
  let stores: Stores;

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await seedInstallation(stores, { seed: 5, kernels: 300, images: 30, keypairs: 6, agents: 4 });
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });

  const setAlembic = (rev: string) => stores.pg.withClient((c) => c.query('UPDATE alembic_version SET version_num = $1', [rev]));

  it('reports release 21.03, pending 21.09 then 22.03, every store reachable with its version, nothing live', async () => {
    const r = await installationStatus(stores);
    expect(r.release).toEqual({ kind: 'known', release: '21.03', versions: '21.03.3-21.03.32 (also 21.09.0-21.09.2)', revision: '8679d0a7e22b', rows: ['8679d0a7e22b'] });
    expect(r.pending).toEqual(['21.09', '22.03']);
    expect(r.allReachable).toBe(true);
    expect(Object.fromEntries(r.stores.map((s) => [s.store, s.version?.split('.')[0]]))).toEqual({ postgresql: '15', etcd: '3', redis: '7' });
    expect(r.liveness.anyLive).toBe(false);
    expect(r.liveness.live).toEqual([]);
    expect(r.liveness.agents.alive.length).toBeGreaterThan(0);
    for (const a of r.liveness.agents.alive) {
      expect(a.live).toBe(false);
      expect(a.ageSec!).toBeGreaterThan(86_400);
    }
    expect(r.liveness.agents.heartbeatTimeoutSec).toBe(30);
    expect(r.liveness.decidedBy.join('\n')).toMatch(/heartbeat/);
    expect(r.maintenance).toBeNull();
    expect(r.unfinishedSteps).toEqual([]);
  });

  it('reports an ALIVE agent with a recent agent.last_seen as live, and says so from the heartbeat', async () => {
    const live = await stores.redis.db(REDIS_DB.live);
    const before = await live.hget('agent.last_seen', 'i-node001');
    await live.hset('agent.last_seen', 'i-node001', String(Date.now() / 1000 - 3));
    try {
      const r = await installationStatus(stores);
      expect(r.liveness.anyLive).toBe(true);
      expect(r.liveness.agents.alive.find((a) => a.id === 'i-node001')).toMatchObject({ live: true });
      const node = r.liveness.live.find((n) => n.id === 'i-node001');
      expect(node?.kind).toBe('agent');
      expect(node?.evidence).toMatch(/agent\.last_seen/);
    } finally {
      await live.hset('agent.last_seen', 'i-node001', before!);
    }
  });

  it('reports a manager that announced itself in etcd nodes/manager', async () => {
    await stores.etcd.put('nodes/manager/i-x', 'up');
    try {
      const r = await installationStatus(stores);
      expect(r.liveness.managers.nodes).toEqual([{ id: 'i-x', value: 'up' }]);
      expect(r.liveness.live).toEqual([expect.objectContaining({ kind: 'manager', id: 'i-x' })]);
      expect(r.liveness.anyLive).toBe(true);
    } finally {
      await stores.etcd.delete('nodes/manager/i-x');
    }
  });

  it('reports an unknown revision as unknown and a 518ecf41f567 database as 21.03 (21.03.0-21.03.2)', async () => {
    try {
      await setAlembic('deadbeef0001');
      let r = await installationStatus(stores);
      expect(r.release).toEqual({ kind: 'unknown', rows: ['deadbeef0001'] });
      expect(r.pending).toEqual([]);
      await setAlembic('518ecf41f567');
      r = await installationStatus(stores);
      expect(r.release).toMatchObject({ kind: 'known', release: '21.03', versions: '21.03.0-21.03.2' });
      expect(r.pending).toEqual(['21.09', '22.03']);
    } finally {
      await setAlembic('8679d0a7e22b');
    }
  });

  it('lists unfinished steps from mgr.upgrade_steps and keeps their module pending', async () => {
    await stores.pg.withClient((c) =>
      c.query(`CREATE SCHEMA mgr; CREATE TABLE mgr.upgrade_steps (step_id text PRIMARY KEY, module text NOT NULL, status text NOT NULL);
        INSERT INTO mgr.upgrade_steps VALUES ('21.09/60a1effa77d2', '21.09', 'done'), ('21.09/verify', '21.09', 'failed'), ('21.09/skip', '21.09', 'skipped');`),
    );
    try {
      await setAlembic('60a1effa77d2');
      const r = await installationStatus(stores);
      expect(r.release).toMatchObject({ kind: 'known', release: '21.09' });
      expect(r.unfinishedSteps).toEqual([{ module: '21.09', stepId: '21.09/verify', status: 'failed' }]);
      expect(r.pending).toEqual(['21.09', '22.03']);
    } finally {
      await setAlembic('8679d0a7e22b');
      await stores.pg.withClient((c) => c.query('DROP SCHEMA mgr CASCADE'));
    }
  });

  it('reports a store that does not answer instead of failing, with the reason', async () => {
    const config = { ...sb.config, db: { ...sb.config.db, port: await freePort() } };
    const r = await installationStatusFromConfig(config);
    expect(r.allReachable).toBe(false);
    const pgStatus = r.stores.find((s) => s.store === 'postgresql')!;
    expect(pgStatus.reachable).toBe(false);
    expect(pgStatus.error).toMatch(/not reachable/);
    expect(r.stores.filter((s) => s.reachable).map((s) => s.store)).toEqual(['etcd', 'redis']);
    expect(r.release).toMatchObject({ kind: 'unavailable' });
    expect(r.liveness.anyLive).toBeUndefined();

    // etcd down: its own error (not the client's circuit breaker), and Redis cannot be located
    const noEtcd = await installationStatusFromConfig({ ...sb.config, etcd: { ...sb.config.etcd, port: await freePort() } });
    const byStore = Object.fromEntries(noEtcd.stores.map((s) => [s.store, s]));
    expect(byStore.etcd).toMatchObject({ reachable: false, error: expect.stringMatching(/ECONNREFUSED/) });
    expect(byStore.redis).toMatchObject({ reachable: false, error: expect.stringMatching(/etcd, which holds config\/redis, is not reachable/) });
    expect(byStore.postgresql!.reachable).toBe(true);
    expect(noEtcd.release).toMatchObject({ kind: 'known', release: '21.03' });
  });

  it('names an invalid etcd shared config as a configuration problem, not an unreachable store', async () => {
    await stores.etcd.put('config/docker/registry/bad', 'not a url');
    try {
      const r = await installationStatusFromConfig(sb.config);
      expect(r.configError).toMatch(/config\/docker\/registry\/bad/);
      expect(r.configError).toMatch(/http\(s\) URL/);
    } finally {
      await stores.etcd.delete('config/docker/registry/bad');
    }
    expect((await installationStatusFromConfig(sb.config)).configError).toBeUndefined();
  });

  it('the built CLI prints the same report as JSON (exit 0), and exits 4 when PostgreSQL is down', async () => {
    const ok = await mgr(['-f', sb.managerToml, 'status', '--json']);
    expect(ok.code, ok.stderr + ok.stdout).toBe(0);
    const report = JSON.parse(ok.stdout) as StatusReport & { ok: boolean };
    expect(report.ok).toBe(true);
    expect(report.release).toMatchObject({ kind: 'known', release: '21.03', revision: '8679d0a7e22b' });
    expect(report.pending).toEqual(['21.09', '22.03']);
    expect(report.configFile).toBe(sb.managerToml);

    const text = await mgr(['-f', sb.managerToml, 'status']);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/release: +21\.03 \(Backend\.AI 21\.03\.3/);
    expect(text.stdout).toMatch(/pending: +21\.09 → 22\.03/);

    const badPort = await freePort();
    const broken = readFileSync(sb.managerToml, 'utf8').replace(/(\[db\][^[]*?port = )\d+/, `$1${badPort}`);
    const toml = await writeTemp(sb.dir, 'broken-manager.toml', broken);
    const down = await mgr(['-f', toml, 'status', '--json']);
    expect(down.code).toBe(4);
    const downReport = JSON.parse(down.stdout) as StatusReport & { ok: boolean };
    expect(downReport.ok).toBe(false);
    expect(downReport.stores.find((s) => s.store === 'postgresql')).toMatchObject({ reachable: false });
  });
});
