import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MgrError } from '../../src/errors.js';
import { clearHistory, LOCK_NAME, type ClearHistoryReport } from '../../src/history/index.js';
import { lockBackendFor } from '../../src/locks/index.js';
import { enterMaintenance, leaveMaintenance } from '../../src/maintenance/index.js';
import { openStores, REDIS_DB, type Stores } from '../../src/stores/index.js';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { checksums, expectedAfter, expectStoresMatch, readState, RETENTION, seedHistory, TIE_RUN, type SeededHistory } from './clear-history-fixture.js';

// Library-level runs of clearHistory on real PostgreSQL, Redis and etcd, with a fixed "now" so
// kernels 1 µs either side of the cutoff are decided exactly.
const NOW = new Date('2025-06-15T12:00:00.000Z');

let sb: TestSandbox;
let stores: Stores;

beforeAll(async () => {
  sb = await startTestSandbox();
  stores = await sb.openStores();
});

afterAll(async () => {
  await stores?.close();
  await sb?.stop();
});

const seed = (kernels = 600): Promise<SeededHistory> => seedHistory(stores, { now: NOW, kernels, boundary: true });

describe('clearHistory', () => {
  it('dry run: counts exactly what would go (kernels, dependent rows, existing stat keys) and writes nothing', async () => {
    const s = await seed();
    const before = await checksums(stores);
    const r = await clearHistory(stores, { retention: RETENTION, now: NOW, dryRun: true, batchSize: 100 });
    const terminated = [...s.expected.doomed].map((id) => s.before.kernels.get(id)!.terminatedAt!).sort();
    expect(s.expected.doomed.size).toBeGreaterThan(300);
    expect(r).toMatchObject({
      dryRun: true,
      cutoff: '2025-03-17T12:00:00.000Z',
      kernelsDeleted: s.expected.doomed.size,
      dependentRows: s.expected.dependentRows,
      redisKeysDeleted: s.expected.redisKeysDeleted,
      batches: Math.ceil(s.expected.doomed.size / 100),
      oldestTerminatedAt: terminated[0],
      newestTerminatedAt: terminated.at(-1),
      compaction: null,
      vacuumed: [],
      cascadeMode: 'explicit',
    } satisfies Partial<ClearHistoryReport>);
    expect(r.redisKeysDeleted).toBeLessThan(r.kernelsDeleted); // some doomed kernels have no key: counted, not assumed
    expect(await checksums(stores)).toEqual(before);
  });

  it('deletes exactly the kernels terminated before the cutoff, their dependent rows and stat keys, in batches of the given size', async () => {
    const s = await seed();
    const r = await clearHistory(stores, { retention: RETENTION, now: NOW, batchSize: 10 });

    expect(r.kernelsDeleted).toBe(s.expected.doomed.size);
    expect(r.redisKeysDeleted).toBe(s.expected.redisKeysDeleted);
    expect(r.dependentRows).toEqual(s.expected.dependentRows);
    expect(r.dependentRows.session_dependencies).toBeGreaterThanOrEqual(3);
    expect(r.dependentRows.vfolder_attachment).toBeGreaterThanOrEqual(3);
    expect(r.batches).toBe(Math.ceil(s.expected.doomed.size / 10));
    expect(r.largestBatch).toBe(10);
    expect(r.longestStatement).toMatch(/^(select batch|delete (kernels|session_dependencies|vfolder_attachment))$/);
    // The sandbox connects as a superuser and the catalog is Backend.AI's: dependent rows are
    // deleted by the batches and the per-kernel cascade triggers are skipped.
    expect(r.cascadeMode).toBe('explicit');
    await expectStoresMatch(stores, s.expected);

    const after = await readState(stores);
    // The boundary: strictly before the cutoff goes; at or after it stays.
    expect(after.kernels.has(s.edge.justBefore!)).toBe(false);
    expect(after.kernels.has(s.edge.atCutoff!)).toBe(true);
    expect(after.kernels.has(s.edge.justAfter!)).toBe(true);
    // NULL terminated_at is never deleted, whatever the status and however old the kernel.
    for (const k of ['nullRunning', 'nullTerminated', 'nullCancelled', 'nullPending']) expect(after.kernels.has(s.edge[k]!), k).toBe(true);
    // No status filter: an old terminated_at goes even if the status says RUNNING (as in Backend.AI).
    expect(after.kernels.has(s.edge.oldButRunning!)).toBe(false);
    for (const id of s.ties) expect(after.kernels.has(id)).toBe(false);
    expect(TIE_RUN).toBeGreaterThan(2 * 10); // the tie run spans batch boundaries
    expect(after.statKeys.has(s.orphanKey)).toBe(true); // orphans are not swept

    expect(r.compaction).toBe('BGSAVE'); // the sandbox's Redis has appendonly no
    expect(r.compactionReply).toMatch(/Background saving (started|scheduled)|in progress/);
    expect(r.vacuumed).toEqual(['kernels', 'session_dependencies', 'vfolder_attachment']);
    const vac = await stores.pg.pool.query<{ relname: string }>(
      `SELECT relname FROM pg_stat_user_tables WHERE relname IN ('kernels', 'session_dependencies', 'vfolder_attachment') AND last_vacuum IS NOT NULL AND last_analyze IS NOT NULL ORDER BY 1`,
    );
    expect(vac.rows.map((x) => x.relname)).toEqual(['kernels', 'session_dependencies', 'vfolder_attachment']);
    expect(r.warnings).toEqual([]);

    // A rerun finds nothing and asks nothing of Redis.
    const again = await clearHistory(stores, { retention: RETENTION, now: NOW, batchSize: 10 });
    expect(again).toMatchObject({ kernelsDeleted: 0, redisKeysDeleted: 0, batches: 0, compaction: null, vacuumed: [] });
  });

  it('shrinks batches below --batch-size when deleting a kernel is slow (vfolder_attachment has no index on kernel)', async () => {
    const s = await seed();
    // 60 more vfolders attached to every kept kernel: each deleted kernel's cascade trigger now scans ~10k rows.
    await stores.pg.pool.query(
      `INSERT INTO vfolders SELECT (jsonb_populate_record(NULL::vfolders, to_jsonb(v) || jsonb_build_object('id', gen_random_uuid(), 'name', 'extra-' || g))).*
         FROM (SELECT * FROM vfolders ORDER BY id LIMIT 1) v, generate_series(1, 60) g`,
    );
    await stores.pg.pool.query(
      `INSERT INTO vfolder_attachment SELECT v.id, k.id FROM vfolders v, kernels k WHERE v.name LIKE 'extra-%' AND k.id = ANY($1::uuid[])`,
      [[...s.expected.kept]],
    );
    const before = await readState(stores);
    const expected = expectedAfter(before, s.cutoff);
    expect(before.vfolderAttachments.length).toBeGreaterThan(8_000);

    // With the cascade triggers firing: with them skipped, deleting a kernel no longer scans vfolder_attachment.
    const r = await clearHistory(stores, { retention: RETENTION, now: NOW, batchSize: 200, targetStatementMs: 2, replicaRole: false });
    expect(r.cascadeMode).toBe('triggers');
    expect(r.kernelsDeleted).toBe(expected.doomed.size);
    expect(r.largestBatch).toBe(50); // the slow start; later batches fit the 2 ms target
    expect(r.batches).toBeGreaterThan(2 * Math.ceil(expected.doomed.size / 50));
    await expectStoresMatch(stores, expected);
  });

  it('fires the cascade triggers for a role that may not set session_replication_role, with the same result', async () => {
    const s = await seed();
    await stores.pg.pool.query(`DROP ROLE IF EXISTS mgr_limited; CREATE ROLE mgr_limited LOGIN PASSWORD 'limited-secret'`);
    await stores.pg.pool.query(`GRANT USAGE ON SCHEMA public TO mgr_limited; GRANT ALL ON ALL TABLES IN SCHEMA public TO mgr_limited; GRANT CONNECT ON DATABASE ${sb.config.db.name} TO mgr_limited`);
    const limited = await openStores({ ...sb.config, db: { ...sb.config.db, user: 'mgr_limited', password: 'limited-secret' } });
    try {
      const r = await clearHistory(limited, { retention: RETENTION, now: NOW, batchSize: 100 });
      expect(r.cascadeMode).toBe('triggers');
      expect(r.cascadeModeReason).toContain('may not set session_replication_role');
      expect(r.kernelsDeleted).toBe(s.expected.doomed.size);
      expect(r.dependentRows).toEqual(s.expected.dependentRows);
      await expectStoresMatch(stores, s.expected);
    } finally {
      await limited.close();
      await stores.pg.pool.query(`REASSIGN OWNED BY mgr_limited TO postgres; DROP OWNED BY mgr_limited; DROP ROLE mgr_limited`);
    }
  });

  it("never skips the operator's own triggers or foreign keys on kernels: they fire for every deleted kernel", async () => {
    const s = await seed();
    await stores.pg.pool.query(`
      CREATE TABLE kernel_audit (kernel uuid);
      CREATE FUNCTION audit_kernel_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO kernel_audit VALUES (OLD.id); RETURN OLD; END $$;
      CREATE TRIGGER kernels_audit AFTER DELETE ON kernels FOR EACH ROW EXECUTE FUNCTION audit_kernel_delete();`);
    const r = await clearHistory(stores, { retention: RETENTION, now: NOW, batchSize: 100 });
    expect(r.cascadeMode).toBe('triggers');
    expect(r.cascadeModeReason).toContain('trigger kernels_audit on kernels');
    const audited = await stores.pg.pool.query<{ kernel: string }>('SELECT kernel::text AS kernel FROM kernel_audit');
    expect(new Set(audited.rows.map((x) => x.kernel))).toEqual(s.expected.doomed);
    await expectStoresMatch(stores, s.expected);

    const t = await seed(200);
    await stores.pg.pool.query(`CREATE TABLE kernel_notes (kernel uuid REFERENCES kernels (id) ON DELETE CASCADE, note text)`);
    await stores.pg.pool.query(`INSERT INTO kernel_notes SELECT unnest($1::uuid[]), 'note'`, [[...t.expected.doomed]]);
    const dry = await clearHistory(stores, { retention: RETENTION, now: NOW, dryRun: true });
    expect(dry.cascadeMode).toBe('triggers');
    expect(dry.cascadeModeReason).toContain('kernel_notes.kernel');
    await clearHistory(stores, { retention: RETENTION, now: NOW });
    expect((await stores.pg.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM kernel_notes')).rows[0]!.n).toBe(0);
  });

  it('with AOF on it asks for BGREWRITEAOF; vacuum: false skips compaction and VACUUM', async () => {
    await seed(200);
    const redis = await stores.redis.db(REDIS_DB.stat);
    await redis.config('SET', 'appendonly', 'yes');
    try {
      const noVacuum = await clearHistory(stores, { retention: '1yr', now: NOW, vacuum: false });
      expect(noVacuum.kernelsDeleted).toBe(0); // the seed spans one year: nothing is older than 1yr
      const r = await clearHistory(stores, { retention: RETENTION, now: NOW, vacuum: false });
      expect(r.kernelsDeleted).toBeGreaterThan(0);
      expect(r).toMatchObject({ compaction: null, compactionReply: null, vacuumed: [] });

      await seed(200);
      const aof = await clearHistory(stores, { retention: RETENTION, now: NOW });
      expect(aof.kernelsDeleted).toBeGreaterThan(0);
      expect(aof.compaction).toBe('BGREWRITEAOF');
      // Turning AOF on starts a rewrite; one still running is tolerated and reported.
      expect(aof.compactionReply).toMatch(/Background append only file rewriting (started|scheduled)|in progress/);
      expect(aof.warnings).toEqual([]);
    } finally {
      await redis.config('SET', 'appendonly', 'no');
    }
  });

  it('stops after the current batch when the signal aborts; what was deleted is committed and a rerun finishes', async () => {
    const s = await seed();
    const ac = new AbortController();
    const r = await clearHistory(stores, {
      retention: RETENTION,
      now: NOW,
      batchSize: 10,
      signal: ac.signal,
      onProgress: (p) => p.done >= 30 && ac.abort(),
    });
    expect(r).toMatchObject({ interrupted: true, kernelsDeleted: 30, batches: 3, compaction: null, vacuumed: [] });
    const mid = await readState(stores);
    const gone = [...s.expected.doomed].filter((id) => !mid.kernels.has(id));
    expect(gone).toHaveLength(30);
    for (const id of gone) expect(mid.statKeys.has(id)).toBe(false);
    expect(r.redisKeysDeleted).toBe(gone.filter((id) => s.before.statKeys.has(id)).length);

    // The lock was released: the rerun takes it at once and finishes the job.
    const rest = await clearHistory(stores, { retention: RETENTION, now: NOW, batchSize: 10 });
    expect(r.kernelsDeleted + rest.kernelsDeleted).toBe(s.expected.doomed.size);
    expect(r.redisKeysDeleted + rest.redisKeysDeleted).toBe(s.expected.redisKeysDeleted);
    expect(r.dependentRows.session_dependencies + rest.dependentRows.session_dependencies).toBe(s.expected.dependentRows.session_dependencies);
    await expectStoresMatch(stores, s.expected);
  });

  it('refuses while maintenance mode is on (exit code 5) and deletes nothing', async () => {
    await seed(200);
    const before = await checksums(stores);
    await enterMaintenance(stores.etcd, { reason: 'upgrade to 22.03', by: 'test' });
    try {
      const err = await clearHistory(stores, { retention: RETENTION, now: NOW }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MgrError);
      expect(err).toMatchObject({ code: 'refused', exitCode: 5, message: expect.stringContaining('maintenance mode is on (upgrade to 22.03') });
    } finally {
      await leaveMaintenance(stores.etcd);
    }
    expect(await checksums(stores)).toEqual(before);
  });

  it('stops before the next batch when maintenance mode is turned on mid-run', async () => {
    const s = await seed();
    let entered: Promise<unknown> | undefined;
    const err = await clearHistory(stores, {
      retention: RETENTION,
      now: NOW,
      batchSize: 10,
      pauseMs: 300,
      onProgress: (p) => {
        if (p.done >= 10 && !entered) entered = enterMaintenance(stores.etcd, { reason: 'backup', by: 'test' });
      },
    }).catch((e: unknown) => e);
    try {
      expect(err).toMatchObject({ code: 'refused', message: expect.stringContaining('maintenance mode was turned on (backup') });
      expect(((err as MgrError).details!.report as ClearHistoryReport).kernelsDeleted).toBe(10);
      const state = await readState(stores);
      expect([...s.expected.doomed].filter((id) => !state.kernels.has(id))).toHaveLength(10);
    } finally {
      await entered;
      await leaveMaintenance(stores.etcd);
    }
  });

  it('fails with LockBusyError (exit code 6) naming the holder after waiting waitLockMs, and deletes nothing', async () => {
    await seed(200);
    const before = await checksums(stores);
    const held = await lockBackendFor(stores).acquire({ name: LOCK_NAME, waitMs: 0, purpose: 'another clear-history' });
    try {
      const t = Date.now();
      const err = await clearHistory(stores, { retention: RETENTION, now: NOW, waitLockMs: 600 }).catch((e: unknown) => e);
      expect(Date.now() - t).toBeGreaterThanOrEqual(600);
      expect(err).toMatchObject({ code: 'lockBusy', exitCode: 6 });
      expect((err as Error).message).toContain(`pid ${process.pid}`);
      expect((err as Error).message).toContain('another clear-history');
    } finally {
      await held.release();
    }
    expect(await checksums(stores)).toEqual(before);
  });

  it('names the database when it has no kernels table (exit code 3)', async () => {
    await stores.pg.pool.query('DROP DATABASE IF EXISTS not_backend');
    await stores.pg.pool.query('CREATE DATABASE not_backend');
    const other = await openStores({ ...sb.config, db: { ...sb.config.db, name: 'not_backend' } });
    try {
      await expect(clearHistory(other, { retention: RETENTION })).rejects.toMatchObject({
        code: 'config',
        exitCode: 3,
        message: expect.stringContaining('database "not_backend"'),
      });
    } finally {
      await other.close();
    }
  });

  it('rejects a bad retention or batch size as a usage error before touching the stores', async () => {
    await expect(clearHistory(stores, { retention: '1.5yr' })).rejects.toMatchObject({ code: 'usage', exitCode: 2 });
    await expect(clearHistory(stores, { retention: '30d', batchSize: 0 })).rejects.toMatchObject({ code: 'usage' });
  });
});
