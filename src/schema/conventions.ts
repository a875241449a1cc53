import { getTableName, type BuildExtraConfigColumns } from 'drizzle-orm';
import {
  customType,
  foreignKey,
  index,
  primaryKey,
  type ForeignKeyBuilder,
  type IndexBuilder,
  type PgColumn,
  type PgColumnBuilderBase,
  type PrimaryKeyBuilder,
} from 'drizzle-orm/pg-core';

/**
 * Backend.AI's SQLAlchemy naming convention (`models/base.py`, backend-ai-schema.md §0.1), so
 * every constraint and index name is derived the way Backend.AI derives it instead of typed by
 * hand. Objects Backend.AI names explicitly (`uq_sgroup_domain`, `ix_kernels_unique_sess_token`
 * …) are written out where they are declared.
 */

function tableOf(column: PgColumn): string {
  return getTableName(column.table);
}

/** `ix_<table>_<column>`: the index behind `index=True`. */
export function ix(column: PgColumn): IndexBuilder {
  return index(`ix_${tableOf(column)}_${column.name}`).on(column);
}

/** `pk_<table>` over the given columns. */
export function pk(first: PgColumn, ...rest: PgColumn[]): PrimaryKeyBuilder {
  return primaryKey({ name: `pk_${tableOf(first)}`, columns: [first, ...rest] });
}

/**
 * `fk_<table>_<column>_<referred table>`. Backend.AI's FKs are either NO ACTION both ways or
 * CASCADE both ways; `cascade` picks the latter.
 */
export function fk(column: PgColumn, target: PgColumn, opts: { cascade?: boolean } = {}): ForeignKeyBuilder {
  const builder = foreignKey({
    name: `fk_${tableOf(column)}_${column.name}_${tableOf(target)}`,
    columns: [column],
    foreignColumns: [target],
  });
  return opts.cascade ? builder.onUpdate('cascade').onDelete('cascade') : builder;
}

/**
 * The columns a pgTable constraint callback receives for a column map: lets one constraint
 * function serve a table in every release that extends its columns.
 */
export type TableColumns<TColumns extends Record<string, PgColumnBuilderBase>> = BuildExtraConfigColumns<string, TColumns, 'pg'>;

/** PostgreSQL `bytea` as a Node Buffer (dotfiles, container logs). */
export const bytea = customType<{ data: Buffer; driverData: Buffer }>({
  dataType: () => 'bytea',
});

/** Resource slot maps (`ResourceSlotColumn`): slot name → decimal string. */
export type ResourceSlots = Record<string, string>;
