import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/errors.js';
import { ETCD_FILE, MANIFEST_FILE, POSTGRES_FILE } from '../../src/backup/bundle.js';
import { DEFAULT_SEED_REGISTRIES, seedInstallation } from '../../src/sandbox/seed.js';
import type { Stores } from '../../src/stores/index.js';
import { runMgr, type MgrResult } from '../helpers/cli.js';
import { startHttpServer, type TestServer } from '../helpers/registry-push.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';

/**
 * Real passwords for PostgreSQL (manager.toml), Redis (etcd config/redis/password) and a
 * registry (etcd config/docker/registry/{name}/password); every command, with --log-level debug,
 * and its error paths. None of the passwords may appear in stdout, stderr, --json output, a log,
 * a file mgr writes, mgr's own records in PostgreSQL and etcd, or a backup bundle — except the
 * bundle's etcd payload, which is a copy of etcd and so holds the Redis and registry passwords.
 */

const token = () => randomBytes(6).toString('hex');
const PG_PW = `pg-S3cret-${token()}`;
const REDIS_PW = `redis-S3cret-${token()}`;
const REG_PW = `reg-S3cret-${token()}`;
const REG_USER = 'robot$mgr';
// Wrong passwords the error paths use: they must not be echoed either.
const WRONG_PG = `pg-Wr0ng-${token()}`;
const WRONG_REDIS = `redis-Wr0ng-${token()}`;
const WRONG_REG = `reg-Wr0ng-${token()}`;
const REGISTRY = 'registry.secret.example';

const b64 = (s: string) => Buffer.from(s).toString('base64');
/** Every form a leak could take: the text, base64 of it, and the Basic credentials. */
const SECRET_FORMS: [string, string][] = [PG_PW, REDIS_PW, REG_PW, WRONG_PG, WRONG_REDIS, WRONG_REG].flatMap((s) => [
  [s, s],
  [`base64(${s})`, b64(s)],
]);
SECRET_FORMS.push([`Basic ${REG_USER}:${REG_PW}`, b64(`${REG_USER}:${REG_PW}`)], [`Basic ${REG_USER}:${WRONG_REG}`, b64(`${REG_USER}:${WRONG_REG}`)]);

function leaks(text: string | Buffer): string[] {
  const s = typeof text === 'string' ? text : text.toString('latin1');
  return SECRET_FORMS.filter(([, form]) => s.includes(form)).map(([name]) => name);
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? filesUnder(p) : e.isFile() ? [p] : [];
  });
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'mgr-secrets-'));
const BUNDLES = path.join(tmp, 'bundles');
const CRON_FILE = path.join(tmp, 'cron.d', 'mgr-clear-history');

describe('no password leaks, whatever mgr is asked', () => {
  let sb: TestSandbox;
  let stores: Stores;
  let registry: TestServer;
  const runs: { label: string; r: MgrResult }[] = [];

  /** Runs mgr with --log-level debug against the sandbox, checks the exit code, keeps the output. */
  async function mgr(label: string, args: string[], exit: number, opts: { config?: string; env?: NodeJS.ProcessEnv } = {}): Promise<MgrResult> {
    const r = await runMgr(['-f', opts.config ?? sb.managerToml, '--log-level', 'debug', ...args], opts.env);
    runs.push({ label, r });
    expect(r.code, `${label}\n--- stderr\n${r.stderr}\n--- stdout\n${r.stdout.slice(0, 2000)}`).toBe(exit);
    expect(leaks(r.stdout), `${label}: stdout`).toEqual([]);
    expect(leaks(r.stderr), `${label}: stderr`).toEqual([]);
    return r;
  }
  const json = (r: MgrResult) => JSON.parse(r.stdout) as Record<string, unknown>;

  beforeAll(async () => {
    sb = await startTestSandbox({ pgPassword: PG_PW, redisPassword: REDIS_PW });
    stores = await sb.openStores();
    // A registry that wants Basic credentials and lists nothing: mgr must send the password, never show it.
    registry = await startHttpServer((req, res) => {
      if (req.headers.authorization !== `Basic ${b64(`${REG_USER}:${REG_PW}`)}`) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="secret"', 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: `bad credentials: ${req.headers.authorization ?? 'none'}` }] }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(req.url?.startsWith('/v2/_catalog') ? '{"repositories": []}' : '{}');
    });
    await seedInstallation(stores, {
      kernels: 300,
      images: 50,
      registries: [...DEFAULT_SEED_REGISTRIES, { name: REGISTRY, url: registry.url, type: 'docker', username: REG_USER, password: REG_PW }],
    });
    await mkdir(path.dirname(CRON_FILE), { recursive: true });
  });
  afterAll(async () => {
    await registry?.close();
    await stores?.close();
    await sb?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  it('the passwords are really in use: manager.toml, etcd and the registry', async () => {
    expect(readFileSync(sb.managerToml, 'utf8')).toContain(`password = "${PG_PW}"`);
    expect(leaks(readFileSync(sb.managerToml))).toEqual([PG_PW]); // the detector finds what is there
    expect(await stores.etcd.get('config/redis/password')).toBe(REDIS_PW);
    expect(await stores.etcd.get(`config/docker/registry/${REGISTRY}/password`)).toBe(REG_PW);
    expect(stores.shared.redis.password).toBe(REDIS_PW);
  });

  it('status, status --json', async () => {
    await mgr('status', ['status'], EXIT.ok);
    expect(json(await mgr('status --json', ['status', '--json'], EXIT.ok))).toMatchObject({ ok: true });
  });

  it('upgrade --dry-run, upgrade plan --json', async () => {
    await mgr('upgrade --dry-run', ['upgrade', '--dry-run'], EXIT.ok);
    await mgr('upgrade plan --json', ['upgrade', 'plan', '--json'], EXIT.ok);
  });

  it('upgrade (real, with its backup and the cron schedule), upgrade status', async () => {
    const r = await mgr('upgrade', ['upgrade', '--yes', '--backup-dir', BUNDLES, '--cron-file', CRON_FILE], EXIT.ok);
    expect(r.stdout).toMatch(/pre-upgrade backup: /);
    await mgr('upgrade status', ['upgrade', 'status'], EXIT.ok);
    await mgr('upgrade status --json', ['upgrade', 'status', '--json'], EXIT.ok);
  });

  it('backup create, verify, list (text and --json)', async () => {
    const created = json(await mgr('backup create --json', ['backup', 'create', '--out', BUNDLES, '--json'], EXIT.ok));
    const bundle = created.path as string;
    expect(bundle).toBeTruthy();
    await mgr('backup verify', ['backup', 'verify', bundle], EXIT.ok);
    await mgr('backup verify --json', ['backup', 'verify', bundle, '--json'], EXIT.ok);
    await mgr('backup list', ['backup', 'list', BUNDLES], EXIT.ok);
    await mgr('backup list --json', ['backup', 'list', BUNDLES, '--json'], EXIT.ok);
  });

  it('clear-history --dry-run and real, schedule install --print', async () => {
    await mgr('clear-history --dry-run', ['clear-history', '-r', '30d', '--dry-run'], EXIT.ok);
    await mgr('clear-history --dry-run --json', ['clear-history', '-r', '30d', '--dry-run', '--json'], EXIT.ok);
    await mgr('clear-history', ['clear-history', '-r', '30d'], EXIT.ok);
    await mgr('clear-history schedule install --print', ['clear-history', 'schedule', 'install', '--print'], EXIT.ok);
  });

  it('image rescan --dry-run with the registry password (text and --json)', async () => {
    const r = await mgr('image rescan --dry-run', ['image', 'rescan', REGISTRY, '--dry-run'], EXIT.ok);
    expect(r.stdout).toContain(`${REGISTRY}: 0 added, 0 updated, 0 unchanged, 0 skipped, 0 failed (dry run: nothing written)`);
    await mgr('image rescan --dry-run --json', ['image', 'rescan', REGISTRY, '--dry-run', '--json'], EXIT.ok);
  });

  it('background-migrate status, maintenance status, lock status, sandbox status (text and --json)', async () => {
    for (const args of [['background-migrate', 'status'], ['maintenance', 'status'], ['lock', 'status', 'mgr.upgrade', 'mgr.clear-history']]) {
      await mgr(args.join(' '), args, EXIT.ok);
      await mgr(`${args.join(' ')} --json`, [...args, '--json'], EXIT.ok);
    }
    await mgr('sandbox status', ['sandbox', 'status', '--dir', sb.dir], EXIT.ok);
    await mgr('sandbox status --json', ['sandbox', 'status', '--dir', sb.dir, '--json'], EXIT.ok);
  });

  it('a manager.toml whose syntax error is on the password line', async () => {
    const text = readFileSync(sb.managerToml, 'utf8');
    const variants = [`password = "${PG_PW}`, `password = ${PG_PW}`, `password = "${PG_PW}" trailing`, `password = """${PG_PW}`];
    for (const [i, line] of variants.entries()) {
      const file = path.join(tmp, `syntax-${i}.toml`);
      await writeFile(file, text.replace(`password = "${PG_PW}"`, line));
      const r = await mgr(`syntax error on the password line: ${line}`, ['status'], EXIT.config, { config: file });
      expect(r.stderr).toMatch(/TOML syntax error/);
      await mgr(`… --json`, ['upgrade', '--dry-run', '--json'], EXIT.config, { config: file });
    }
    // A password of the wrong type: its value must not be echoed either.
    const typed = path.join(tmp, 'typed.toml');
    await writeFile(typed, text.replace(`password = "${PG_PW}"`, `password = [ "${PG_PW}" ]`));
    const r = await mgr('password as an array', ['status'], EXIT.config, { config: typed });
    expect(r.stderr).toMatch(/\[db\.password\]: expected string, got a array \(value hidden\)|\[db\.password\]: expected string/);
  });

  it('wrong passwords: PostgreSQL (file and BACKEND_DB_PASSWORD), Redis, the registry', async () => {
    const wrong = path.join(tmp, 'wrong-pg.toml');
    await writeFile(wrong, readFileSync(sb.managerToml, 'utf8').replace(`password = "${PG_PW}"`, `password = "${WRONG_PG}"`));
    expect((await mgr('wrong pg password: status', ['status'], EXIT.storeUnreachable, { config: wrong })).stdout).toMatch(/postgresql UNREACHABLE/);
    await mgr('wrong pg password: status --json', ['status', '--json'], EXIT.storeUnreachable, { config: wrong });
    await mgr('wrong pg password: clear-history', ['clear-history', '-r', '30d'], EXIT.storeUnreachable, { config: wrong });
    await mgr('wrong pg password: upgrade --json', ['upgrade', '--yes', '--json'], EXIT.storeUnreachable, { config: wrong });
    await mgr('wrong BACKEND_DB_PASSWORD: backup create', ['backup', 'create', '--out', BUNDLES], EXIT.storeUnreachable, { env: { BACKEND_DB_PASSWORD: WRONG_PG } });

    await stores.etcd.put('config/redis/password', WRONG_REDIS);
    try {
      await mgr('wrong redis password: status', ['status'], EXIT.storeUnreachable);
      await mgr('wrong redis password: clear-history --json', ['clear-history', '-r', '30d', '--json'], EXIT.storeUnreachable);
    } finally {
      await stores.etcd.put('config/redis/password', REDIS_PW);
    }

    await stores.etcd.put(`config/docker/registry/${REGISTRY}/password`, WRONG_REG);
    try {
      const r = await mgr('wrong registry password: rescan', ['image', 'rescan', REGISTRY, '--dry-run'], EXIT.partial);
      expect(r.stdout).toMatch(/FAILED registry registry\.secret\.example: .*401/);
      await mgr('wrong registry password: rescan --json', ['image', 'rescan', REGISTRY, '--dry-run', '--json'], EXIT.partial);
    } finally {
      await stores.etcd.put(`config/docker/registry/${REGISTRY}/password`, REG_PW);
    }
  });

  it('the debug logs said something: the check above read real log output', () => {
    const debugLines = runs.flatMap(({ r }) => r.stderr.split('\n')).filter((l) => l.startsWith('{') && l.includes('"level":20'));
    expect(debugLines.length).toBeGreaterThan(0);
    expect(runs.length).toBeGreaterThanOrEqual(40);
  });

  it('the backup bundles: only the etcd payload holds passwords (the Redis and registry ones, as a copy of etcd)', () => {
    const bundles = readdirSync(BUNDLES).map((d) => path.join(BUNDLES, d));
    expect(bundles.length).toBe(2); // the upgrade's and `backup create`'s
    for (const bundle of bundles) {
      for (const file of filesUnder(bundle)) {
        if (path.basename(file) === ETCD_FILE) {
          // A backup of etcd must restore config/redis/password and the registry password, so it has them.
          const values = readFileSync(file, 'utf8').trim().split('\n').map((l) => Buffer.from((JSON.parse(l) as { v: string }).v, 'base64').toString());
          expect(values).toContain(REDIS_PW);
          expect(values).toContain(REG_PW);
          expect(values.filter((v) => leaks(v).length > 0).sort()).toEqual([REDIS_PW, REG_PW].sort());
        } else {
          expect(leaks(readFileSync(file)), file).toEqual([]);
        }
      }
      expect(readFileSync(path.join(bundle, MANIFEST_FILE), 'utf8')).not.toContain('password');
      expect(statSync(path.join(bundle, POSTGRES_FILE)).mode & 0o077).toBe(0);
    }
  });

  it('files mgr wrote: the cron file carries no password; the manager.toml backup copy is as private as the original', () => {
    expect(leaks(readFileSync(CRON_FILE))).toEqual([]);
    const copies = readdirSync(sb.dir).filter((f) => f.startsWith('manager.toml.bak-'));
    expect(copies).toHaveLength(1);
    const copy = path.join(sb.dir, copies[0]!);
    expect(readFileSync(copy, 'utf8')).toContain(PG_PW); // a byte copy of manager.toml, password included
    expect(statSync(copy).mode & 0o077).toBe(0);
    expect(statSync(sb.managerToml).mode & 0o077).toBe(0);
  });

  it("server logs of the sandbox and mgr's own records in PostgreSQL and etcd carry no password", async () => {
    const logs = filesUnder(sb.dir).filter((f) => f.endsWith('.log'));
    expect(logs.length).toBeGreaterThan(0);
    for (const f of logs) expect(leaks(readFileSync(f)), f).toEqual([]);
    // Every row of every table in schema mgr (steps, runs, migrations, quarantine …), as text.
    const rows = await stores.pg.withClient(async (c) => {
      const tables = await c.query<{ t: string }>(`SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables WHERE schemaname = 'mgr'`);
      expect(tables.rows.length).toBeGreaterThan(0);
      const out: string[] = [];
      for (const { t } of tables.rows) out.push(...(await c.query<{ r: string }>(`SELECT x::text AS r FROM ${t} x`)).rows.map((r) => r.r));
      return out.join('\n');
    });
    expect(leaks(rows)).toEqual([]);
    // etcd: the passwords only where Backend.AI keeps them.
    const holders = (await stores.etcd.getFlat('')).filter((kv) => leaks(kv.key + '\n' + kv.value).length > 0).map((kv) => kv.key);
    expect(holders.sort()).toEqual(['config/redis/password', `config/docker/registry/${REGISTRY}/password`].sort());
  });
});
