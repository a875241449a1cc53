import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import type { Stores } from '../../src/stores/index.js';
import {
  FAILURE_CODE,
  MIGRATION_STATUS,
  backgroundMigrationStatus,
  enqueueBackgroundMigration,
  ensureBbmTables,
  getMigration,
  pauseBackgroundMigration,
  pgKeysetBounds,
  pgKeysetCursor,
  registerBackgroundMigration,
  resumeBackgroundMigration,
  runBackgroundMigrations,
  setBatchSize,
  type BackgroundMigrationDefinition,
  type BatchRange,
  type EnqueueOptions,
} from '../../src/bbm/index.js';

/**
 * The engine on a real PostgreSQL with a keyset migration that copies bbm_test.src into
 * bbm_test.dst. Its work function records every call, and can be told to fail a given id or to
 * change the batch size mid-run, so the engine's rules can be watched from outside.
 */
const ROWS = 500;

interface Call {
  range: BatchRange;
  at: number;
}
const calls: Call[] = [];
let poisonId: number | undefined;
let onFirstBatch: (() => Promise<void>) | undefined;

const copyRows: BackgroundMigrationDefinition = {
  name: 'test_copy_rows',
  ...pgKeysetCursor,
  async work(ctx, range) {
    calls.push({ range, at: calls.length });
    if (calls.length === 1 && onFirstBatch) await onFirstBatch();
    if (poisonId !== undefined && Number(range.min) <= poisonId && poisonId <= Number(range.max)) throw new Error(`row ${poisonId} is poisoned`);
    const r = await ctx.stores.pg.withClient((c) =>
      c.query('INSERT INTO bbm_test.dst SELECT id, v FROM bbm_test.src WHERE id BETWEEN $1 AND $2 ON CONFLICT (id) DO NOTHING', [range.min, range.max]),
    );
    return { rows: r.rowCount ?? 0 };
  },
};

describe('batched background migrations (engine, real PostgreSQL)', () => {
  let sb: TestSandbox;
  let stores: Stores;
  const sql = (text: string, params: unknown[] = []) => stores.pg.withClient((c) => c.query(text, params));
  const enqueue = async (o: Partial<EnqueueOptions> = {}) => {
    const bounds = await stores.pg.withClient((c) => pgKeysetBounds(c, 'bbm_test.src', 'id'));
    return stores.pg.withClient((c) =>
      enqueueBackgroundMigration(c, {
        name: 'copy',
        jobSignatureName: 'test_copy_rows',
        batchSize: 50,
        cursorKind: 'pg_keyset',
        tableName: 'bbm_test.src',
        columnName: 'id',
        ...bounds,
        ...o,
      }),
    );
  };
  const jobs = async (name = 'copy') =>
    (
      await sql(
        `SELECT j.id, j.min_value::int AS min, j.max_value::int AS max, j.status, j.attempts, j.rows, j.batch_size, j.kind, j.worker
         FROM mgr.batched_background_migration_jobs j JOIN mgr.batched_background_migrations m ON m.id = j.migration_id
         WHERE m.name = $1 ORDER BY j.id`,
        [name],
      )
    ).rows as { id: number; min: number; max: number; status: number; attempts: number; rows: number; batch_size: number; worker: string }[];

  beforeAll(async () => {
    sb = await startTestSandbox();
    stores = await sb.openStores();
    registerBackgroundMigration(copyRows);
    await sql(`CREATE SCHEMA bbm_test;
      CREATE TABLE bbm_test.src (id int PRIMARY KEY, v text NOT NULL);
      CREATE TABLE bbm_test.dst (id int PRIMARY KEY, v text NOT NULL)`);
    // ids with gaps (every third id missing): batches must still hold batch_size real rows
    await sql(`INSERT INTO bbm_test.src SELECT i, 'v' || i FROM generate_series(1, ${(ROWS * 3) / 2}) i WHERE i % 3 <> 0`);
    await stores.pg.withClient(ensureBbmTables);
  });
  afterAll(async () => {
    await stores?.close();
    await sb?.stop();
  });
  beforeEach(async () => {
    calls.length = 0;
    poisonId = undefined;
    onFirstBatch = undefined;
    await sql('DELETE FROM mgr.batched_background_migrations; TRUNCATE bbm_test.dst');
  });

  it('keeps its tables in schema mgr, creates them idempotently, and enqueues idempotently by name', async () => {
    await stores.pg.withClient(ensureBbmTables);
    await Promise.all([1, 2, 3].map(() => stores.pg.withClient(ensureBbmTables)));
    const t = await sql(`SELECT table_schema, table_name FROM information_schema.tables WHERE table_name LIKE 'batched_background_migration%' ORDER BY 2`);
    expect(t.rows).toEqual([
      { table_schema: 'mgr', table_name: 'batched_background_migration_jobs' },
      { table_schema: 'mgr', table_name: 'batched_background_migrations' },
    ]);
    const a = await enqueue();
    const b = await enqueue({ batchSize: 7 });
    expect(a.created).toBe(true);
    expect(b.created).toBe(false);
    expect(b.migration.id).toBe(a.migration.id);
    expect(b.migration.batchSize).toBe(50);
  });

  it('runs to the end with three in-process workers: every row once, job ranges tiling the column', async () => {
    await enqueue();
    const summary = await runBackgroundMigrations(stores, { names: ['copy'], workers: 3 });
    expect(summary.outcome).toBe('finished');
    const [st] = summary.migrations;
    expect(st).toMatchObject({ status: 'finished', progressPct: 100, rowsDone: ROWS, totalEstimate: ROWS });
    expect((await sql('SELECT count(*)::int AS n FROM bbm_test.dst')).rows[0].n).toBe(ROWS);
    const js = await jobs();
    expect(js.every((j) => j.status === 2 && j.attempts === 1 && j.rows === 50)).toBe(true);
    expect(js).toHaveLength(ROWS / 50);
    expect(new Set(js.map((j) => j.worker)).size).toBeGreaterThan(1);
    const ids = (await sql('SELECT id FROM bbm_test.src ORDER BY id')).rows.map((r) => r.id as number);
    const sorted = [...js].sort((x, y) => x.min - y.min);
    expect(sorted[0]!.min).toBe(ids[0]);
    expect(sorted.at(-1)!.max).toBe(ids.at(-1));
    for (let i = 1; i < sorted.length; i++) {
      // the next batch starts at the first real row after the previous batch's end
      expect(sorted[i]!.min).toBe(ids[ids.indexOf(sorted[i - 1]!.max) + 1]);
    }
  });

  it('applies set-batch-size to the next batch', async () => {
    await enqueue({ batchSize: 10 });
    onFirstBatch = async () => {
      await stores.pg.withClient((c) => setBatchSize(c, 'copy', 25));
    };
    expect((await runBackgroundMigrations(stores, { names: ['copy'] })).outcome).toBe('finished');
    const js = await jobs();
    expect(js[0]).toMatchObject({ batch_size: 10, rows: 10 });
    expect(js[1]).toMatchObject({ batch_size: 25, rows: 25 });
    expect(js.slice(1).every((j) => j.batch_size === 25)).toBe(true);
    expect((await sql('SELECT count(*)::int AS n FROM bbm_test.dst')).rows[0].n).toBe(ROWS);
  });

  it('retries a failing batch only after every batch ran once, fails with code 4 past the attempt limit, and finishes after the cause is fixed', async () => {
    await enqueue({ maxAttempts: 3 });
    poisonId = 151; // the 101st real row: in the third batch
    const first = await runBackgroundMigrations(stores, { names: ['copy'] });
    expect(first.outcome).toBe('failed');
    const m = await stores.pg.withClient((c) => getMigration(c, 'copy'));
    expect(m.status).toBe(MIGRATION_STATUS.failed);
    expect(m.failureErrorCode).toBe(FAILURE_CODE.tooManyRetries);
    expect(m.failureError).toMatch(/failed 3 times: row 151 is poisoned/);
    const js = await jobs();
    const bad = js.find((j) => j.min <= 151 && 151 <= j.max)!;
    expect(bad).toMatchObject({ status: 3, attempts: 3 });
    expect(js.filter((j) => j !== bad).every((j) => j.status === 2)).toBe(true);
    // every batch ran once before the first retry of the failing one
    const badCalls = calls.map((c, i) => (c.range.min === String(bad.min) ? i : -1)).filter((i) => i >= 0);
    expect(badCalls).toHaveLength(3);
    expect(badCalls[1]).toBe(js.length); // the first retry comes after all js.length first runs
    const [st] = await stores.pg.withClient((c) => backgroundMigrationStatus(c, 'copy'));
    expect(st).toMatchObject({ status: 'failed', failureErrorCode: 4, jobs: { failed: 1 } });
    expect(st!.progressPct).toBeLessThan(100);

    poisonId = undefined; // the cause is fixed
    const second = await runBackgroundMigrations(stores, { names: ['copy'] });
    expect(second.outcome).toBe('finished');
    expect((await jobs()).find((j) => j.id === bad.id)).toMatchObject({ status: 2, attempts: 1 });
    expect((await sql('SELECT count(*)::int AS n FROM bbm_test.dst')).rows[0].n).toBe(ROWS);
    expect((await stores.pg.withClient((c) => getMigration(c, 'copy'))).rowsDone).toBe(ROWS);
  });

  it('pauses before the next batch and resumes; progress stays below 100% until really finished', async () => {
    await enqueue({ totalEstimate: 100 }); // an estimate that is too low must not show 100%
    onFirstBatch = async () => {
      await stores.pg.withClient((c) => pauseBackgroundMigration(c, 'copy'));
    };
    const paused = await runBackgroundMigrations(stores, { names: ['copy'] });
    expect(paused.outcome).toBe('paused');
    expect(calls).toHaveLength(1); // the batch in flight finished, no further one was claimed
    expect(paused.migrations[0]).toMatchObject({ status: 'paused', rowsDone: 50 });
    // a paused migration is left paused by run
    expect((await runBackgroundMigrations(stores, { names: ['copy'] })).outcome).toBe('paused');
    expect(calls).toHaveLength(1);

    expect(await stores.pg.withClient((c) => resumeBackgroundMigration(c, undefined, { dryRun: true }))).toEqual([{ name: 'copy', from: 'paused', to: 'active' }]);
    expect((await stores.pg.withClient((c) => getMigration(c, 'copy'))).status).toBe(MIGRATION_STATUS.paused);
    await stores.pg.withClient((c) => resumeBackgroundMigration(c, 'copy'));
    await sql(`UPDATE mgr.batched_background_migrations SET total_tuple_count = 100`);
    const done = await runBackgroundMigrations(stores, { names: ['copy'] });
    expect(done.outcome).toBe('finished');
    expect(done.migrations[0]).toMatchObject({ progressPct: 100, rowsDone: ROWS });
    // before the final claim marked it finished, 500 of an estimated 100 showed 99.9%
    await sql(`UPDATE mgr.batched_background_migrations SET status = 1`);
    const [st] = await stores.pg.withClient((c) => backgroundMigrationStatus(c, 'copy'));
    expect(st!.progressPct).toBe(99.9);
  });

  it('fails with code 3 for an unknown job signature, 1 for a missing table and 2 for a missing column', async () => {
    await enqueue({ name: 'nosig', jobSignatureName: 'no_such_function' });
    await enqueue({ name: 'notable', tableName: 'bbm_test.gone' });
    await enqueue({ name: 'nocolumn', columnName: 'gone' });
    const s = await runBackgroundMigrations(stores, { names: ['nosig', 'notable', 'nocolumn'] });
    expect(s.outcome).toBe('failed');
    expect(s.migrations.map((m) => [m.name, m.status, m.failureErrorCode])).toEqual([
      ['nosig', 'failed', 3],
      ['notable', 'failed', 1],
      ['nocolumn', 'failed', 2],
    ]);
    expect(s.migrations[0]!.failureError).toMatch(/no_such_function/);
  });

  it('rejects a second definition under a taken name', () => {
    registerBackgroundMigration(copyRows); // the same one again is fine
    expect(() => registerBackgroundMigration({ ...copyRows })).toThrow(/already registered/);
  });
});
