import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { expect } from 'vitest';
import { MANAGER_REDIS_DBS, type Stores } from '../../src/stores/index.js';
import { etcdChecksum, pgChecksums, redisChecksums, type TableSum } from '../helpers/checksums.js';
import { runMgr, type MgrResult } from '../helpers/cli.js';

/**
 * The bad-input corpus runner shared by bad-input*.test.ts: one case is one bad input, the
 * mgr command line that meets it, the exit code and the message it must give, and the proof
 * that nothing was written: content checksums of PostgreSQL, etcd and Redis (and the bytes of
 * the files it could touch) before and after.
 */

export interface BadInputCase {
  name: string;
  /** argv after `mgr`; a function because the sandbox's paths exist only after beforeAll. */
  args: () => string[];
  env?: () => NodeJS.ProcessEnv;
  exit: number;
  /** What was wrong and where (file + key, etcd key, flag or variable). */
  message: RegExp;
  /** Where the message must appear: stderr (errors) or stdout (a report, e.g. a failed registry). */
  stream?: 'stderr' | 'stdout';
  /** Puts the bad input in place (before the "before" checksums); teardown undoes it. */
  setup?: () => Promise<void>;
  teardown?: () => Promise<void>;
  /** Extra files whose bytes must not change (manager.toml is always checked). */
  files?: () => string[];
  /** Further assertions (e.g. a value that must not be echoed). */
  check?: (r: MgrResult) => void | Promise<void>;
}

export interface StoreSums {
  pg: Record<string, TableSum>;
  etcd: { keys: number; sha256: string };
  redis: Record<number, { keys: number; sha256: string }>;
  /** sha256 of each file's bytes, or "absent". */
  files: Record<string, string>;
}

export async function storeSums(stores: Stores, files: string[]): Promise<StoreSums> {
  const fileSums: Record<string, string> = {};
  for (const f of files) {
    fileSums[f] = await readFile(f).then(
      (b) => createHash('sha256').update(b).digest('hex'),
      () => 'absent',
    );
  }
  return {
    pg: await stores.pg.withClient((c) => pgChecksums(c)),
    etcd: await etcdChecksum(stores.etcd),
    // TTLs tick while a case runs: compare whether a key has one, not its seconds.
    redis: await redisChecksums(stores.redis, { ttl: 'presence' }),
    files: fileSums,
  };
}

/**
 * Drops the TTL of every Redis key that has one (the seed's per-agent stat keys live 120 s):
 * a key expiring on its own during a minute of cases is not a write, but would fail the check.
 */
export async function persistExpiringKeys(stores: Stores): Promise<number> {
  let persisted = 0;
  for (const db of MANAGER_REDIS_DBS) {
    const conn = await stores.redis.db(db);
    let cursor = '0';
    do {
      const [next, keys] = await conn.scan(cursor, 'COUNT', 1000);
      cursor = next;
      for (const k of keys) persisted += await conn.persist(k);
    } while (cursor !== '0');
  }
  return persisted;
}

/** A Node stack frame or mgr's internal-error wrapper: bad input must never end in either. */
const CRASH = /mgr: internal error|^\s+at .+:\d+:\d+\)?$/m;

/** Runs one case against the stores of `stores`, whose manager.toml is `managerToml`. */
export async function runBadInputCase(c: BadInputCase, stores: Stores, managerToml: string): Promise<MgrResult> {
  await c.setup?.();
  try {
    const files = [managerToml, ...(c.files?.() ?? [])];
    const before = await storeSums(stores, files);
    const args = c.args();
    const r = await runMgr(args, c.env?.() ?? {});
    const shown = `case "${c.name}": mgr ${args.map((a) => (/\s/.test(a) ? JSON.stringify(a) : a)).join(' ')}\nexit ${r.code}\n--- stderr\n${r.stderr}--- stdout\n${r.stdout.slice(0, 3000)}`;
    expect(r.code, shown).toBe(c.exit);
    expect(c.stream === 'stdout' ? r.stdout : r.stderr, shown).toMatch(c.message);
    expect(r.stderr, shown).not.toMatch(CRASH);
    expect(await storeSums(stores, files), `case "${c.name}" wrote to a store or file`).toEqual(before);
    await c.check?.(r);
    return r;
  } finally {
    await c.teardown?.();
  }
}
