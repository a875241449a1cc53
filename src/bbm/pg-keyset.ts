import type pg from 'pg';
import { BackgroundMigrationFailure, FAILURE_CODE, type BackgroundMigrationDefinition, type BbmContext, type BatchRange, type ClaimContext } from './types.js';

/**
 * Keyset batching over one column of a PostgreSQL table: the next batch ends at the value
 * `size` real rows further (ORDER BY column LIMIT size), so gaps in the column never make empty
 * or oversized batches. Cursor values travel as text and are cast back to the column's type.
 */

/** "schema.table" or "table" → a quoted identifier. */
function quoteQualified(name: string): string {
  return name
    .split('.')
    .map((p) => `"${p.replace(/"/g, '""')}"`)
    .join('.');
}

interface KeysetTarget {
  table: string;
  column: string;
  /** The column's SQL type, to cast text cursor values back. */
  type: string;
}

/** Checks the table and column exist (codes 1 and 2 otherwise) and returns what queries need. */
async function keysetTarget(client: pg.ClientBase, tableName: string | null, columnName: string | null): Promise<KeysetTarget> {
  const table = tableName ? quoteQualified(tableName) : '';
  const t = tableName ? await client.query<{ oid: string | null }>('SELECT to_regclass($1)::oid::text AS oid', [table]).catch(() => undefined) : undefined;
  const oid = t?.rows[0]?.oid;
  if (!oid) throw new BackgroundMigrationFailure(FAILURE_CODE.invalidTable, `table ${JSON.stringify(tableName)} does not exist`);
  const c = await client.query<{ type: string }>(
    'SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = $1::oid AND attname = $2 AND attnum > 0 AND NOT attisdropped',
    [oid, columnName ?? ''],
  );
  if (!c.rows[0]) throw new BackgroundMigrationFailure(FAILURE_CODE.invalidColumn, `column ${JSON.stringify(columnName)} does not exist in table ${tableName}`);
  return { table, column: `"${columnName!.replace(/"/g, '""')}"`, type: c.rows[0].type };
}

/** min_value/max_value to enqueue a keyset migration with: the column's current first and last value. */
export async function pgKeysetBounds(client: pg.ClientBase, tableName: string, columnName: string): Promise<{ minValue: string | null; maxValue: string | null }> {
  const k = await keysetTarget(client, tableName, columnName);
  const r = await client.query<{ lo: string | null; hi: string | null }>(
    `SELECT (SELECT t.${k.column}::text AS lo FROM ${k.table} t ORDER BY t.${k.column} LIMIT 1) AS lo,
            (SELECT t.${k.column}::text AS hi FROM ${k.table} t ORDER BY t.${k.column} DESC LIMIT 1) AS hi`,
  );
  return { minValue: r.rows[0]?.lo ?? null, maxValue: r.rows[0]?.hi ?? null };
}

async function nextKeysetBatch(ctx: ClaimContext, after: string | undefined, size: number): Promise<BatchRange | undefined> {
  const m = ctx.migration;
  const k = await keysetTarget(ctx.client, m.tableName, m.columnName);
  const lower = after === undefined ? '>=' : '>';
  // The text casts get their own names: ORDER BY a bare output name would sort text ("10" < "8").
  const r = await ctx.client.query<{ lo: string | null; hi: string | null }>(
    `WITH s AS (SELECT ${k.column} AS v FROM ${k.table} WHERE ${k.column} ${lower} $1::${k.type} AND ${k.column} <= $2::${k.type}
                ORDER BY ${k.column} LIMIT $3)
     SELECT (SELECT s.v::text AS lo FROM s ORDER BY s.v LIMIT 1) AS lo, (SELECT s.v::text AS hi FROM s ORDER BY s.v DESC LIMIT 1) AS hi`,
    [after ?? m.minValue, m.maxValue, size],
  );
  const row = r.rows[0];
  return row?.lo != null && row.hi != null ? { min: row.lo, max: row.hi } : undefined;
}

async function countKeysetRows(ctx: BbmContext): Promise<number> {
  const m = ctx.migration;
  if (m.minValue === null || m.maxValue === null) return 0;
  return ctx.stores.pg.withClient(async (client) => {
    const k = await keysetTarget(client, m.tableName, m.columnName);
    const r = await client.query<{ n: number }>(
      `SELECT count(*)::bigint AS n FROM ${k.table} WHERE ${k.column} >= $1::${k.type} AND ${k.column} <= $2::${k.type}`,
      [m.minValue, m.maxValue],
    );
    return Number(r.rows[0]!.n);
  });
}

/** The cursor half of a keyset migration's definition: spread it into a definition and add `work`. */
export const pgKeysetCursor: Pick<BackgroundMigrationDefinition, 'cursorKind' | 'nextBatch' | 'estimateTotal'> = {
  cursorKind: 'pg_keyset',
  nextBatch: nextKeysetBatch,
  estimateTotal: countKeysetRows,
};
