import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT } from '../../src/errors.js';
import { enterMaintenance, leaveMaintenance } from '../../src/maintenance/index.js';
import { PACKAGE_ROOT } from '../../src/paths.js';
import { seedInstallation } from '../../src/sandbox/seed.js';
import { REDIS_DB, type Stores } from '../../src/stores/index.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { persistExpiringKeys, runBadInputCase, type BadInputCase } from './bad-input-corpus.js';

/**
 * The bad-input corpus on one seeded 21.03 sandbox: broken manager.toml files
 * (test/fixtures/bad-input/manager-toml), environment overrides, etcd shared config, CLI flags,
 * retention strings and installations mgr must refuse to upgrade. Every case runs the real CLI
 * and checks the exit code, that the message says what was wrong and where, and that PostgreSQL,
 * etcd, Redis and manager.toml are byte-for-byte what they were.
 */

const FIXTURES = path.join(PACKAGE_ROOT, 'test/fixtures/bad-input/manager-toml');
// Not under the test-sandbox prefix: the sweeper of a parallel run would delete it.
const tmp = mkdtempSync(path.join(os.tmpdir(), 'mgr-bad-input-'));
const EMPTY_DB = 'not_backend';
const LIVE_AGENT = 'i-bad-input-live';

let sb: TestSandbox;
let stores: Stores;

const toml = (name: string) => path.join(tmp, `${name}.toml`);
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** `FILE [KEY]: detail` as formatProblems prints it. */
const at = (file: string, key: string, detail: string) => new RegExp(`${esc(file)} \\[${esc(key)}\\]: ${detail}`);
const withGood = (...args: string[]) => () => ['-f', sb.managerToml, ...args];

/** Commands that write to every store if they get past the bad input (rotated over the file cases). */
const WRITERS: (() => string[])[] = [
  () => ['clear-history', '-r', '1d', '--no-vacuum'],
  () => ['upgrade', '--yes', '--no-backup', '--no-schedule'],
  () => ['maintenance', 'on', '--reason', 'bad-input corpus'],
  () => ['backup', 'create', '--out', path.join(tmp, 'backups')],
];

function tomlCase(i: number, name: string, exit: number, message: RegExp, check?: BadInputCase['check']): BadInputCase {
  const writer = WRITERS[i % WRITERS.length]!;
  return { name: `manager.toml: ${name} (${writer()[0]})`, args: () => ['-f', toml(name), ...writer()], exit, message, check };
}

const TOML_CASES: BadInputCase[] = [
  tomlCase(0, 'unclosed-string', EXIT.config, new RegExp(`${esc(toml('unclosed-string'))} \\[line 4, column \\d+\\]: TOML syntax error`)),
  tomlCase(1, 'duplicate-key', EXIT.config, new RegExp(`${esc(toml('duplicate-key'))} \\[line 5, column \\d+\\]: TOML syntax error: .*redefine`)),
  tomlCase(2, 'bad-table-header', EXIT.config, new RegExp(`${esc(toml('bad-table-header'))} \\[line 3, column \\d+\\]: TOML syntax error`)),
  tomlCase(3, 'unclosed-inline-table', EXIT.config, new RegExp(`${esc(toml('unclosed-inline-table'))} \\[line 1[12], column \\d+\\]: TOML syntax error`)),
  tomlCase(4, 'etcd-port-string', EXIT.config, at(toml('etcd-port-string'), 'etcd.addr.port', 'expected number, got string "\\d+"')),
  tomlCase(5, 'etcd-addr-string', EXIT.config, at(toml('etcd-addr-string'), 'etcd.addr', 'expected object, got string "127\\.0\\.0\\.1:\\d+"')),
  tomlCase(6, 'heartbeat-string', EXIT.config, at(toml('heartbeat-string'), 'manager.heartbeat-timeout', 'expected number, got string "30"')),
  tomlCase(7, 'heartbeat-negative', EXIT.config, at(toml('heartbeat-negative'), 'manager.heartbeat-timeout', 'Too small: expected number to be >0, got number -5')),
  tomlCase(8, 'missing-namespace', EXIT.config, at(toml('missing-namespace'), 'etcd.namespace', 'required, expected string')),
  tomlCase(9, 'db-port-0', EXIT.config, at(toml('db-port-0'), 'db.addr.port', 'Too small: expected number to be >=1, got number 0')),
  tomlCase(10, 'db-port-70000', EXIT.config, at(toml('db-port-70000'), 'db.addr.port', 'Too big: expected number to be <=65535, got number 70000')),
  tomlCase(11, 'db-type-mysql', EXIT.config, at(toml('db-type-mysql'), 'db.type', 'got "mysql"; allowed: "postgresql"')),
  tomlCase(12, 'db-name-invalid', EXIT.config, at(toml('db-name-invalid'), 'db.name', 'expected a database name of 2-64 letters, digits, "_" or "-", got string "backend; DROP TABLE kernels"')),
  tomlCase(13, 'db-password-number', EXIT.config, at(toml('db-password-number'), 'db.password', 'expected string, got a number \\(value hidden\\)'), (r) =>
    expect(r.stdout + r.stderr).not.toContain('84125560917'),
  ),
  tomlCase(14, 'lock-unknown', EXIT.config, at(toml('lock-unknown'), 'manager.distributed-lock', 'got "zookeeper"; allowed: "filelock", "pg_advisory", "etcd"')),
  tomlCase(15, 'lock-redlock', EXIT.config, at(toml('lock-redlock'), 'manager.distributed-lock', '"redlock" is not supported in 22\\.03 .*use "etcd", "pg_advisory" or "filelock"')),
  tomlCase(16, 'ssl-enabled-maybe', EXIT.config, at(toml('ssl-enabled-maybe'), 'manager.ssl-enabled', 'expected a boolean \\(true/false, yes/no, 1/0, on/off\\), got "maybe"')),
  tomlCase(17, 'event-loop-unknown', EXIT.config, at(toml('event-loop-unknown'), 'manager.event-loop', 'got "trio"; allowed: "asyncio", "uvloop"')),
  tomlCase(18, 'empty', EXIT.config, new RegExp(`2 problems\\):\\n  ${esc(toml('empty'))} \\[etcd\\]: required, expected object\\n  ${esc(toml('empty'))} \\[db\\]: required, expected object`)),
];

const ENV_CASES: BadInputCase[] = [
  {
    name: 'env: BACKEND_DB_ADDR=nonsense',
    args: withGood('upgrade', '--yes', '--no-backup', '--no-schedule'),
    env: () => ({ BACKEND_DB_ADDR: 'nonsense' }),
    exit: EXIT.config,
    message: /environment BACKEND_DB_ADDR: expected "host:port", got "nonsense"/,
  },
  {
    name: 'env: BACKEND_ETCD_ADDR with port 0',
    args: withGood('clear-history', '-r', '1d'),
    env: () => ({ BACKEND_ETCD_ADDR: '127.0.0.1:0' }),
    exit: EXIT.config,
    message: /environment BACKEND_ETCD_ADDR: expected "host:port", got "127\.0\.0\.1:0"/,
  },
  {
    name: 'env: BACKEND_DB_NAME is not a database name (named as the variable, not the file)',
    args: withGood('maintenance', 'on'),
    env: () => ({ BACKEND_DB_NAME: 'bad name!' }),
    exit: EXIT.config,
    message: /environment BACKEND_DB_NAME \[db\.name\]: expected a database name/,
  },
  {
    name: 'env: MGR_LOG_LEVEL=loud',
    args: withGood('clear-history', '-r', '1d'),
    env: () => ({ MGR_LOG_LEVEL: 'loud' }),
    exit: EXIT.usage,
    message: /\$MGR_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent; got "loud"/,
  },
  {
    name: 'file: -f names a file that does not exist',
    args: () => ['-f', path.join(tmp, 'nope.toml'), 'upgrade', '--yes', '--no-backup'],
    exit: EXIT.config,
    message: new RegExp(`config file not found: ${esc(path.join(tmp, 'nope.toml'))}\\n  hint: pass the path of manager.toml with -f/--config`),
  },
  {
    // Tests run as root, where chmod 000 still reads: a directory is the unreadable path.
    name: 'file: -f names a directory',
    args: () => ['-f', tmp, 'clear-history', '-r', '1d'],
    exit: EXIT.config,
    message: new RegExp(`cannot read ${esc(tmp)}: EISDIR`),
  },
];

/** Sets etcd keys (null deletes) for one case and puts back what was there. */
function etcdChange(change: Record<string, string | null>): Pick<BadInputCase, 'setup' | 'teardown'> {
  const saved: Record<string, string | null> = {};
  const apply = async (values: Record<string, string | null>) => {
    for (const [k, v] of Object.entries(values)) await (v === null ? stores.etcd.delete(k) : stores.etcd.put(k, v));
  };
  return {
    setup: async () => {
      for (const k of Object.keys(change)) saved[k] = await stores.etcd.get(k);
      await apply(change);
    },
    teardown: () => apply(saved),
  };
}

const REG = 'config/docker/registry/cr.backend.ai';
const REG_SOURCE = 'etcd /sorna/local/config/docker/registry/cr\\.backend\\.ai';
const REDIS_SOURCE = 'etcd /sorna/local/config/redis';
let redisAddr = ''; // the sandbox's, read in beforeAll

const ETCD_CASES: BadInputCase[] = [
  {
    name: 'etcd: registry URL ftp://',
    args: withGood('clear-history', '-r', '1d'),
    ...etcdChange({ [REG]: 'ftp://cr.backend.ai' }),
    exit: EXIT.config,
    message: new RegExp(`${REG_SOURCE}: expected an http\\(s\\) URL, got string "ftp://cr\\.backend\\.ai"`),
  },
  {
    name: 'etcd: registry URL "not a url"',
    args: withGood('upgrade', '--yes', '--no-backup', '--no-schedule'),
    ...etcdChange({ [REG]: 'not a url' }),
    exit: EXIT.config,
    message: new RegExp(`${REG_SOURCE}: expected an http\\(s\\) URL, got string "not a url"`),
  },
  {
    name: 'etcd: registry without a scheme, under a quoted name (localhost%3A5000)',
    args: withGood('maintenance', 'on'),
    ...etcdChange({ 'config/docker/registry/localhost%3A5000': 'localhost:5000' }),
    exit: EXIT.config,
    message: /etcd \/sorna\/local\/config\/docker\/registry\/localhost%3A5000: expected an http\(s\) URL, got string "localhost:5000"/,
  },
  {
    name: 'etcd: registry ssl-verify = maybe',
    args: withGood('maintenance', 'on'),
    ...etcdChange({ [`${REG}/ssl-verify`]: 'maybe' }),
    exit: EXIT.config,
    message: new RegExp(`${REG_SOURCE} \\[ssl-verify\\]: expected a boolean \\(true/false, yes/no, 1/0, on/off\\), got "maybe"`),
  },
  {
    name: 'etcd: registry type quay',
    args: withGood('image', 'rescan', '--prune'),
    ...etcdChange({ [`${REG}/type`]: 'quay' }),
    exit: EXIT.config,
    message: new RegExp(`${REG_SOURCE} \\[type\\]: got "quay"; allowed: "docker", "harbor", "harbor2"`),
  },
  {
    name: 'etcd: config/redis/addr missing',
    args: () => ['-f', sb.managerToml, 'backup', 'create', '--out', path.join(tmp, 'backups')],
    ...etcdChange({ 'config/redis/addr': null }),
    exit: EXIT.config,
    message: new RegExp(`${REDIS_SOURCE}: missing: the Redis address \\(config/redis/addr\\) must be set in etcd`),
  },
  {
    name: 'etcd: redis addr "localhost" without a port',
    args: withGood('clear-history', '-r', '1d'),
    ...etcdChange({ 'config/redis/addr': 'localhost' }),
    exit: EXIT.config,
    message: new RegExp(`${REDIS_SOURCE} \\[addr\\]: expected "host:port" with a port 1-65535, got "localhost"`),
  },
  {
    name: 'etcd: redis sentinel without service_name',
    args: withGood('upgrade', '--yes', '--no-backup', '--no-schedule'),
    ...etcdChange({ 'config/redis/addr': null, 'config/redis/sentinel': '127.0.0.1:26379' }),
    exit: EXIT.config,
    message: new RegExp(`${REDIS_SOURCE} \\[service_name\\]: required with sentinel`),
  },
  {
    name: 'etcd: redis sentinel address is not host:port',
    args: withGood('clear-history', '-r', '1d'),
    ...etcdChange({ 'config/redis/addr': null, 'config/redis/sentinel': 'sentinel-a', 'config/redis/service_name': 'mymaster' }),
    exit: EXIT.config,
    message: new RegExp(`${REDIS_SOURCE} \\[sentinel\\]: bad sentinel address "sentinel-a"; expected host:port\\[,host:port…\\]`),
  },
];

const flag = (name: string, args: string[] | (() => string[]), message: RegExp, extra: Partial<BadInputCase> = {}): BadInputCase => ({
  name: `flag: ${name}`,
  args: Array.isArray(args) ? withGood(...args) : args,
  exit: EXIT.usage,
  message,
  ...extra,
});
const CRON = () => path.join(tmp, 'cron.d', 'mgr-clear-history');

const FLAG_CASES: BadInputCase[] = [
  flag('unknown option', ['status', '--frobnicate'], /unknown option '--frobnicate'/),
  flag('unknown command', ['frobnicate'], /unknown command 'frobnicate'/),
  flag('too many arguments', ['image', 'rescan', 'a', 'b'], /too many arguments for 'rescan'\. Expected 1 argument but got 2/),
  flag('--concurrency 0', ['image', 'rescan', '--concurrency', '0'], /option '--concurrency <n>' argument '0' is invalid\. --concurrency must be a whole number ≥ 1, got "0"/),
  flag('--concurrency abc', ['image', 'rescan', '--concurrency', 'abc'], /option '--concurrency <n>' argument 'abc' is invalid\. --concurrency must be a whole number ≥ 1, got "abc"/),
  flag('--batch-size -5', ['clear-history', '-r', '1d', '--batch-size', '-5'], /option '--batch-size <n>' argument '-5' is invalid\. --batch-size must be a whole number ≥ 1, got "-5"/),
  flag('--target-statement-ms 0', ['clear-history', '-r', '1d', '--target-statement-ms', '0'], /option '--target-statement-ms <ms>' argument '0' is invalid/),
  flag('--pause-ms -1', ['clear-history', '-r', '1d', '--pause-ms', '-1'], /option '--pause-ms <ms>' argument '-1' is invalid\. --pause-ms must be a number ≥ 0, got "-1"/),
  flag('--wait-lock x', ['upgrade', '--yes', '--no-backup', '--no-schedule', '--wait-lock', 'x'], /option '--wait-lock <seconds>' argument 'x' is invalid\. --wait-lock must be a number ≥ 0, got "x"/),
  flag('--to 22.1 (unknown release)', ['upgrade', '--yes', '--no-backup', '--no-schedule', '--to', '22.1'], /unknown target release "22\.1"; mgr has modules for: 21\.09, 22\.03/),
  // "22.10" must stay "22.10", not become the number 22.1.
  flag('--to 22.10 (unknown release)', ['upgrade', '--dry-run', '--to', '22.10'], /unknown target release "22\.10"; mgr has modules for: 21\.09, 22\.03/),
  flag('--lock-backend redlock', ['upgrade', '--yes', '--no-backup', '--no-schedule', '--lock-backend', 'redlock'], /option '--lock-backend <name>' argument 'redlock' is invalid\. Allowed choices are filelock, pg_advisory, etcd/),
  flag(
    'schedule install --at "61 * * * *"',
    () => ['-f', sb.managerToml, 'clear-history', 'schedule', 'install', '--at', '61 * * * *', '--cron-file', CRON()],
    /option '--at <cron>' argument '61 \* \* \* \*' is invalid\. invalid cron expression "61 \* \* \* \*": .*out of range; expected five fields/,
    { files: () => [CRON()] },
  ),
  // Checked when the flags are read, not at the schedule step after every other step applied.
  flag(
    'upgrade --schedule-at "61 * * * *"',
    () => ['-f', sb.managerToml, 'upgrade', '--yes', '--no-backup', '--schedule-at', '61 * * * *', '--cron-file', CRON()],
    /option '--schedule-at <cron>' argument '61 \* \* \* \*' is invalid\. invalid cron expression/,
    { files: () => [CRON()] },
  ),
  flag('upgrade --schedule-retention 3x', ['upgrade', '--yes', '--no-backup', '--schedule-retention', '3x'], /option '--schedule-retention <duration>' argument '3x' is invalid\. invalid retention "3x": unknown unit "x"/),
  flag('scheduler --at "* * *"', ['scheduler', '--at', '* * *'], /option '--at <cron>' argument '\* \* \*' is invalid\. invalid cron expression "\* \* \*": 3 fields/),
  flag('backup verify without its bundle', ['backup', 'verify'], /missing required argument 'bundle'/),
  flag('lock status without names', ['lock', 'status'], /missing required argument 'names'/),
  flag('backup create --out without a value', ['backup', 'create', '--out'], /option '--out <dir>' argument missing/),
  flag('set-batch-size 0', ['background-migrate', 'set-batch-size', 'images_from_etcd', '0'], /argument 'n'\. batch size must be a whole number ≥ 1, got "0"/),
  flag('--log-level verbose', ['--log-level', 'verbose', 'clear-history', '-r', '1d'], /--log-level must be one of fatal, error, warn, info, debug, trace, silent; got "verbose"/),
  flag('upgrade without --yes on a non-terminal stdin', ['upgrade', '--no-backup', '--no-schedule'], /refusing to upgrade without confirmation: pass --yes when stdin is not a terminal/),
];

const FORMS = 'expected a number of seconds \\(3600, 1\\.5\\), or a number with a unit: s, m, h, d, w \\(decimals allowed: 30m, 1\\.5d, 2w\\) or mo, yr \\(whole numbers only: 3mo, 1yr\\)';
const RETENTIONS: [string, string][] = [
  ['', 'it is empty'],
  ['-1d', 'negative durations are not allowed'],
  ['1.5yr', '"yr" takes a whole number'],
  ['3x', 'unknown unit "x"'],
  ['10ms', 'unknown unit "ms"'],
  ['1e999', 'the number is too large'],
  ['abc', 'unknown unit "bc"'],
  ['99999999999yr', 'the cutoff would fall before the year 1'],
];
const RETENTION_CASES: BadInputCase[] = [
  ...RETENTIONS.map(([value, why]) => ({
    name: `retention: clear-history -r ${JSON.stringify(value)}`,
    args: withGood('clear-history', '-r', value, '--no-vacuum'),
    exit: EXIT.usage,
    message: new RegExp(`invalid retention ${esc(JSON.stringify(value))}: ${esc(why)}; ${FORMS}`),
  })),
  {
    name: 'retention: schedule install -r 99999999999yr (a cron job that would fail every night)',
    args: withGood('clear-history', 'schedule', 'install', '--print', '-r', '99999999999yr'),
    exit: EXIT.usage,
    message: new RegExp(`option '-r, --retention <duration>' argument '99999999999yr' is invalid\\. invalid retention "99999999999yr": the cutoff would fall before the year 1; ${FORMS}`),
  },
];

const sql = (text: string) => () => stores.pg.withClient(async (c) => void (await c.query(text)));
const UPGRADE = ['upgrade', '--yes', '--no-backup', '--no-schedule'];

const REFUSAL_CASES: BadInputCase[] = [
  {
    name: 'refuse: unknown alembic revision',
    args: withGood(...UPGRADE),
    setup: sql(`UPDATE alembic_version SET version_num = 'deadbeef0000'`),
    teardown: sql(`UPDATE alembic_version SET version_num = '8679d0a7e22b'`),
    exit: EXIT.refused,
    message: /alembic_version holds \["deadbeef0000"\], a revision mgr does not know; refusing to guess the release/,
  },
  {
    name: 'refuse: alembic_version with heads of two releases',
    args: withGood(...UPGRADE),
    setup: sql(`INSERT INTO alembic_version VALUES ('60a1effa77d2')`),
    teardown: sql(`DELETE FROM alembic_version WHERE version_num = '60a1effa77d2'`),
    exit: EXIT.refused,
    message: /alembic_version holds \["(8679d0a7e22b|60a1effa77d2)","(8679d0a7e22b|60a1effa77d2)"\], a revision mgr does not know; refusing to guess/,
  },
  {
    name: 'refuse: alembic_version empty',
    args: withGood(...UPGRADE),
    setup: sql(`DELETE FROM alembic_version`),
    teardown: sql(`INSERT INTO alembic_version VALUES ('8679d0a7e22b')`),
    exit: EXIT.refused,
    message: /alembic_version holds \[\], a revision mgr does not know/,
  },
  {
    name: 'refuse: not a Backend.AI database (empty)',
    args: () => ['-f', toml('empty-database'), ...UPGRADE],
    exit: EXIT.refused,
    message: new RegExp(`database "${EMPTY_DB}" has no alembic_version table: it is not a Backend.AI manager database`),
    check: async () => {
      // mgr created nothing there either (no mgr schema, no table).
      const { host, user, password } = sb.pg.endpoint;
      const client = new pg.Client({ host, port: sb.pg.port, user, password, database: EMPTY_DB });
      await client.connect();
      try {
        const r = await client.query(`SELECT count(*)::int AS n FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')`);
        expect(r.rows[0].n).toBe(0);
        expect((await client.query(`SELECT 1 FROM pg_namespace WHERE nspname = 'mgr'`)).rowCount).toBe(0);
      } finally {
        await client.end();
      }
    },
  },
  {
    name: 'refuse: a live agent (Redis agent.last_seen within heartbeat-timeout)',
    args: withGood(...UPGRADE),
    setup: async () => void (await (await stores.redis.db(REDIS_DB.live)).hset('agent.last_seen', LIVE_AGENT, (Date.now() / 1000).toFixed(6))),
    teardown: async () => void (await (await stores.redis.db(REDIS_DB.live)).hdel('agent.last_seen', LIVE_AGENT)),
    exit: EXIT.refused,
    message: new RegExp(`managers or agents are running: agent ${LIVE_AGENT} \\(Redis DB 2 agent\\.last_seen = [^)]+, within heartbeat-timeout 30s\\)`),
  },
  {
    name: 'refuse: a live manager (etcd nodes/manager/{id} = up)',
    args: withGood(...UPGRADE),
    ...etcdChange({ 'nodes/manager/i-bad-input': 'up' }),
    exit: EXIT.refused,
    message: /managers or agents are running: manager i-bad-input \(etcd \/sorna\/local\/nodes\/manager\/i-bad-input = "up"\)/,
  },
  {
    name: 'refuse: manager/status = running',
    args: withGood(...UPGRADE),
    ...etcdChange({ 'manager/status': 'running' }),
    exit: EXIT.refused,
    message: /managers or agents are running: manager \(cluster\) \(etcd \/sorna\/local\/manager\/status = "running"\)/,
  },
  {
    name: 'refuse: image rescan before 22.03 (no images table)',
    args: withGood('image', 'rescan', '--prune'),
    exit: EXIT.refused,
    message: /the images table does not exist: this database is not at Backend\.AI 22\.03 yet/,
  },
  {
    name: 'refuse: clear-history during maintenance',
    args: withGood('clear-history', '-r', '1d'),
    setup: async () => void (await enterMaintenance(stores.etcd, { reason: 'bad-input corpus', by: 'bad-input.test' })),
    teardown: async () => void (await leaveMaintenance(stores.etcd)),
    exit: EXIT.refused,
    message: /clear-history refused: maintenance mode is on \(bad-input corpus, by bad-input\.test/,
  },
];

const CASES = [...TOML_CASES, ...ENV_CASES, ...ETCD_CASES, ...FLAG_CASES, ...RETENTION_CASES, ...REFUSAL_CASES];

describe('bad input: exit code, a message naming what and where, nothing written', () => {
  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    await seedInstallation(stores, { kernels: 300, images: 50 });
    expect(await persistExpiringKeys(stores)).toBeGreaterThan(0);
    redisAddr = (await stores.etcd.get('config/redis/addr'))!;
    const fill = (text: string) =>
      text
        .replaceAll('@ETCD_PORT@', String(sb.etcd.port))
        .replaceAll('@PG_PORT@', String(sb.pg.port))
        .replaceAll('@PG_PASSWORD@', sb.pg.endpoint.password)
        .replaceAll('@DIR@', sb.dir);
    for (const f of readdirSync(FIXTURES)) await writeFile(path.join(tmp, f), fill(readFileSync(path.join(FIXTURES, f), 'utf8')));
    await stores.pg.withClient((c) => c.query(`CREATE DATABASE ${EMPTY_DB}`));
    await writeFile(toml('empty-database'), readFileSync(sb.managerToml, 'utf8').replace(/^name = ".*"$/m, `name = "${EMPTY_DB}"`));
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
    await rm(tmp, { recursive: true, force: true });
  });

  it('covers at least 40 cases, every fixture file among them', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(40);
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
    const used = TOML_CASES.map((c) => c.args()[1]);
    expect(readdirSync(FIXTURES).map((f) => path.join(tmp, f)).sort()).toEqual(used.sort());
  });

  it.for(CASES)('$name', async (c) => {
    await runBadInputCase(c, stores, sb.managerToml);
  });

  it('left the sandbox as seeded: every teardown put back what its setup changed', async () => {
    expect(await stores.etcd.get('config/redis/addr')).toBe(redisAddr);
    await runBadInputCase(
      {
        name: 'control: a good dry run still works',
        args: withGood('upgrade', '--dry-run'),
        exit: EXIT.ok,
        stream: 'stdout',
        message: /dry run: 21\.03 \(alembic_version 8679d0a7e22b\) → 22\.03; nothing was written/,
      },
      stores,
      sb.managerToml,
    );
  });
});
