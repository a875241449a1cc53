/**
 * Reads a PostgreSQL schema's catalog the way backend-ai-schema.md §4 does, and diffs two
 * catalogs. This is mgr's proof that an upgraded database equals Backend.AI's: compare
 * catalogs, never dump text, because column order (attnum) legitimately differs between a
 * migrated and a freshly created database and is therefore not compared.
 *
 * Every type, default, constraint and index text is normalised by dropping the read schema's
 * own qualifier (`public.kernelstatus` → `kernelstatus`, `ON public.kernels` → `ON kernels`), so
 * a catalog does not depend on the session's search_path.
 */
import type pg from 'pg';

export interface ColumnInfo {
  /** `format_type(atttypid, atttypmod)`, e.g. `character varying(64)`, `kernelstatus`. */
  type: string;
  notNull: boolean;
  /** `pg_get_expr(adbin, adrelid)`, or null when the column has no server default. */
  default: string | null;
}

export const CONSTRAINT_TYPES = {
  p: 'PRIMARY KEY',
  f: 'FOREIGN KEY',
  u: 'UNIQUE',
  c: 'CHECK',
  x: 'EXCLUDE',
  t: 'CONSTRAINT TRIGGER',
} as const;
export type ConstraintType = (typeof CONSTRAINT_TYPES)[keyof typeof CONSTRAINT_TYPES];

export interface ConstraintInfo {
  type: ConstraintType;
  /** `pg_get_constraintdef(oid)`: FK actions appear only when not NO ACTION. */
  definition: string;
}

export interface TableInfo {
  columns: Record<string, ColumnInfo>;
  constraints: Record<string, ConstraintInfo>;
  /** Index name → `indexdef` from pg_indexes (PK/UNIQUE backing indexes included). */
  indexes: Record<string, string>;
}

export interface Catalog {
  /** The schema that was read (`public` for Backend.AI's tables). */
  schema: string;
  /** Installed extensions except plpgsql, sorted. Database-wide. */
  extensions: string[];
  /** Enum type → labels in enumsortorder. */
  enums: Record<string, string[]>;
  /** Ordinary tables of the schema, `alembic_version` included. */
  tables: Record<string, TableInfo>;
  /** `alembic_version` rows sorted, or null when the schema has no alembic_version table. */
  alembicVersions: string[] | null;
}

/** Reads the catalog of one schema (backend-ai-schema.md §4, queries 1–6). */
export async function readCatalog(client: pg.ClientBase, schema = 'public'): Promise<Catalog> {
  const unqualify = unqualifier(schema);
  const catalog: Catalog = { schema, extensions: [], enums: {}, tables: {}, alembicVersions: null };
  const table = (name: string): TableInfo => (catalog.tables[name] ??= { columns: {}, constraints: {}, indexes: {} });

  const extensions = await client.query<{ extname: string }>(
    `SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`,
  );
  catalog.extensions = extensions.rows.map((r) => r.extname);

  const enums = await client.query<{ typname: string; labels: string[] }>(
    `SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS labels
       FROM pg_type t
       JOIN pg_enum e ON e.enumtypid = t.oid
       JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = $1
      GROUP BY t.typname ORDER BY 1`,
    [schema],
  );
  for (const r of enums.rows) catalog.enums[r.typname] = r.labels;

  const columns = await client.query<{ relname: string; attname: string; type: string; notnull: boolean; dflt: string | null }>(
    `SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS notnull,
            pg_get_expr(d.adbin, d.adrelid) AS dflt
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE n.nspname = $1 AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY 1, a.attnum`,
    [schema],
  );
  for (const r of columns.rows) {
    table(r.relname).columns[r.attname] = {
      type: unqualify(r.type),
      notNull: r.notnull,
      default: r.dflt === null ? null : unqualify(r.dflt),
    };
  }

  const constraints = await client.query<{ relname: string; conname: string; contype: string; def: string }>(
    `SELECT c.relname, k.conname, k.contype::text AS contype, pg_get_constraintdef(k.oid) AS def
       FROM pg_constraint k
       JOIN pg_class c ON c.oid = k.conrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = $1 AND c.relkind = 'r'
      ORDER BY 1, 2`,
    [schema],
  );
  for (const r of constraints.rows) {
    const type = CONSTRAINT_TYPES[r.contype as keyof typeof CONSTRAINT_TYPES];
    if (!type) throw new Error(`constraint ${r.relname}.${r.conname} has unknown contype ${r.contype}`);
    table(r.relname).constraints[r.conname] = { type, definition: unqualify(r.def) };
  }

  const indexes = await client.query<{ tablename: string; indexname: string; indexdef: string }>(
    `SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = $1 ORDER BY 1, 2`,
    [schema],
  );
  for (const r of indexes.rows) table(r.tablename).indexes[r.indexname] = unqualify(r.indexdef);

  if (catalog.tables.alembic_version) {
    const versions = await client.query<{ version_num: string }>(
      `SELECT version_num FROM ${client.escapeIdentifier(schema)}.alembic_version ORDER BY 1`,
    );
    catalog.alembicVersions = versions.rows.map((r) => r.version_num);
  }
  return catalog;
}

/**
 * Human-readable differences of `actual` against `expected`, one line per differing object,
 * in a stable order; empty when the catalogs are equal. Column order is not compared.
 */
export function diffCatalogs(actual: Catalog, expected: Catalog): string[] {
  const out: string[] = [];
  for (const name of union(actual.extensions, expected.extensions)) {
    if (!actual.extensions.includes(name)) out.push(`extension ${name}: missing`);
    else if (!expected.extensions.includes(name)) out.push(`extension ${name}: unexpected`);
  }
  for (const name of unionKeys(actual.enums, expected.enums)) {
    const [a, e] = [actual.enums[name], expected.enums[name]];
    if (!a) out.push(`enum ${name}: missing (expected labels ${e!.join(', ')})`);
    else if (!e) out.push(`enum ${name}: unexpected (labels ${a.join(', ')})`);
    else if (a.join('\0') !== e.join('\0')) out.push(`enum ${name}: labels ${a.join(', ')}; expected ${e.join(', ')}`);
  }
  for (const name of unionKeys(actual.tables, expected.tables)) {
    const [a, e] = [actual.tables[name], expected.tables[name]];
    if (!a) out.push(`table ${name}: missing`);
    else if (!e) out.push(`table ${name}: unexpected`);
    else out.push(...diffTable(name, a, e));
  }
  const rows = (v: string[] | null) => (v === null ? 'no alembic_version table' : v.length ? v.join(', ') : 'no rows');
  if (rows(actual.alembicVersions) !== rows(expected.alembicVersions)) {
    out.push(`alembic_version: ${rows(actual.alembicVersions)}; expected ${rows(expected.alembicVersions)}`);
  }
  return out;
}

function diffTable(table: string, actual: TableInfo, expected: TableInfo): string[] {
  const out: string[] = [];
  for (const name of unionKeys(actual.columns, expected.columns)) {
    const [a, e] = [actual.columns[name], expected.columns[name]];
    const where = `column ${table}.${name}`;
    if (!a) out.push(`${where}: missing (expected ${describeColumn(e!)})`);
    else if (!e) out.push(`${where}: unexpected (${describeColumn(a)})`);
    else {
      const parts: string[] = [];
      if (a.type !== e.type) parts.push(`type ${a.type}, expected ${e.type}`);
      if (a.notNull !== e.notNull) parts.push(`${nullability(a)}, expected ${nullability(e)}`);
      if (a.default !== e.default) parts.push(`default ${a.default ?? 'none'}, expected ${e.default ?? 'none'}`);
      if (parts.length) out.push(`${where}: ${parts.join('; ')}`);
    }
  }
  for (const name of unionKeys(actual.constraints, expected.constraints)) {
    const [a, e] = [actual.constraints[name], expected.constraints[name]];
    const where = `constraint ${table}.${name}`;
    if (!a) out.push(`${where}: missing (expected ${e!.definition})`);
    else if (!e) out.push(`${where}: unexpected (${a.definition})`);
    else if (a.definition !== e.definition) out.push(`${where}: ${a.definition}; expected ${e.definition}`);
  }
  for (const name of unionKeys(actual.indexes, expected.indexes)) {
    const [a, e] = [actual.indexes[name], expected.indexes[name]];
    const where = `index ${table}.${name}`;
    if (a === undefined) out.push(`${where}: missing (expected ${e})`);
    else if (e === undefined) out.push(`${where}: unexpected (${a})`);
    else if (a !== e) out.push(`${where}: ${a}; expected ${e}`);
  }
  return out;
}

const nullability = (c: ColumnInfo) => (c.notNull ? 'NOT NULL' : 'nullable');

function describeColumn(c: ColumnInfo): string {
  return `${c.type} ${c.notNull ? 'NOT NULL' : 'NULL'}${c.default === null ? '' : ` DEFAULT ${c.default}`}`;
}

function union(a: string[], b: string[]): string[] {
  return [...new Set([...a, ...b])].sort();
}

function unionKeys(a: object, b: object): string[] {
  return union(Object.keys(a), Object.keys(b));
}

/**
 * Removes `<schema>.` qualifiers (plain or double-quoted) from SQL text, leaving string
 * literals alone: `'public.x'` inside quotes is data, not a qualifier.
 */
function unqualifier(schema: string): (sqlText: string) => string {
  const escaped = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const qualifier = new RegExp(`(^|[^A-Za-z0-9_$"])(?:${escaped(schema)}|"${escaped(schema.replaceAll('"', '""'))}")\\.`, 'g');
  return (sqlText) =>
    sqlText
      .split(/('(?:[^']|'')*')/)
      .map((part, i) => (i % 2 === 1 ? part : part.replace(qualifier, '$1')))
      .join('');
}
