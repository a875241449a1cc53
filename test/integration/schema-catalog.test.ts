import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { is, SQL } from 'drizzle-orm';
import { getTableConfig, PgDialect, PgEnumColumn, PgTable, type PgColumn } from 'drizzle-orm/pg-core';
import { generateDrizzleJson, generateMigration } from 'drizzle-kit/api';
import { startTestSandbox, type TestSandbox } from '../helpers/sandbox.js';
import { diffCatalogs, readCatalog, type Catalog, type ColumnInfo, type ConstraintType } from '../../src/schema/catalog.js';
import * as release2103 from '../../src/schema/baseline-21.03.js';
import * as release2203 from '../../src/schema/release-22.03.js';
import { REQUIRED_EXTENSIONS } from '../../src/schema/index.js';

const DUMPS = 'test/fixtures/schema-dumps';

/**
 * What a drizzle schema says about each table, in the terms of readCatalog: columns in full
 * (format_type, nullability, pg_get_expr default), constraint names with their kind, and the
 * names of declared indexes. Derived from getTableConfig, independent of any database.
 */
interface Shape {
  extensions: string[];
  enums: Record<string, string[]>;
  tables: Record<string, { columns: Record<string, ColumnInfo>; constraints: Record<string, ConstraintType>; indexes: string[] }>;
}

const dialect = new PgDialect();
const sqlText = (s: SQL) => dialect.sqlToQuery(s).sql;

/** drizzle's SQL type name → PostgreSQL's format_type spelling. */
function formatType(column: PgColumn): string {
  return column
    .getSQLType()
    .replace(/^varchar/, 'character varying')
    .replace(/^char\b/, 'character');
}

/** A drizzle column default as pg_get_expr prints it. */
function serverDefault(column: PgColumn): string | null {
  const d: unknown = column.default;
  if (d === undefined) return null;
  if (is(d, SQL)) return sqlText(d);
  if (typeof d === 'string') {
    // A literal is cast to the column type; varchar(n) is cast to plain character varying.
    const cast = is(column, PgEnumColumn) ? column.enum.enumName : formatType(column).replace(/\(\d+\)$/, '');
    return `'${d.replaceAll("'", "''")}'::${cast}`;
  }
  return String(d);
}

function drizzleShape(module: Record<string, unknown>): Shape {
  const shape: Shape = { extensions: [...REQUIRED_EXTENSIONS], enums: {}, tables: {} };
  for (const value of Object.values(module)) {
    if (!is(value, PgTable)) continue;
    const cfg = getTableConfig(value);
    const columns: Record<string, ColumnInfo> = {};
    for (const c of cfg.columns) {
      columns[c.name] = { type: formatType(c), notNull: c.notNull, default: serverDefault(c) };
      if (is(c, PgEnumColumn)) shape.enums[c.enum.enumName] = [...c.enum.enumValues];
    }
    const constraints: Record<string, ConstraintType> = {};
    for (const p of cfg.primaryKeys) constraints[p.getName()] = 'PRIMARY KEY';
    for (const f of cfg.foreignKeys) constraints[f.getName()] = 'FOREIGN KEY';
    for (const u of cfg.uniqueConstraints) constraints[u.getName()!] = 'UNIQUE';
    for (const k of cfg.checks) constraints[k.name] = 'CHECK';
    shape.tables[cfg.name] = { columns, constraints, indexes: cfg.indexes.map((i) => i.config.name!).sort() };
  }
  return shape;
}

/** The same projection of a catalog read from a database. */
function catalogShape(catalog: Catalog): Shape {
  const tables: Shape['tables'] = {};
  for (const [name, t] of Object.entries(catalog.tables)) {
    const constraints = Object.fromEntries(Object.entries(t.constraints).map(([n, c]) => [n, c.type]));
    // PK and UNIQUE constraints bring an index of the same name; drizzle declares only the constraint.
    const indexes = Object.keys(t.indexes)
      .filter((n) => constraints[n] !== 'PRIMARY KEY' && constraints[n] !== 'UNIQUE')
      .sort();
    tables[name] = { columns: t.columns, constraints, indexes };
  }
  return { extensions: catalog.extensions, enums: catalog.enums, tables };
}

describe('Backend.AI schema catalogs: drizzle model, pg_dump fixtures and the differ', () => {
  let sb: TestSandbox;
  const catalogs: Record<string, Catalog> = {};

  const connect = async (database: string) => {
    const client = new pg.Client({ ...sb.pg.endpoint, database });
    await client.connect();
    return client;
  };
  const withDatabase = async <T>(database: string, fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = await connect(database);
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };
  const createDatabase = (name: string) => withDatabase('postgres', (c) => c.query(`CREATE DATABASE ${name}`));
  const loadDump = async (database: string, file: string) => {
    await createDatabase(database);
    const { host, port, user, password } = sb.pg.endpoint;
    await promisify(execFile)(
      '/usr/bin/psql',
      ['-v', 'ON_ERROR_STOP=1', '-q', '-h', host, '-p', String(port), '-U', user, '-d', database, '-f', `${DUMPS}/${file}`],
      { env: { ...process.env, PGPASSWORD: password } },
    );
    return withDatabase(database, (c) => readCatalog(c));
  };
  /** create_all + `alembic stamp`, with the DDL drizzle-kit generates from a release module. */
  const createFromDrizzle = async (database: string, module: Record<string, unknown>, stamp: string) => {
    await createDatabase(database);
    const statements = await generateMigration(generateDrizzleJson({}), generateDrizzleJson(module));
    return withDatabase(database, async (c) => {
      await c.query('CREATE EXTENSION IF NOT EXISTS "uuid-ossp"');
      for (const s of statements) await c.query(s);
      await c.query('INSERT INTO alembic_version (version_num) VALUES ($1)', [stamp]);
      return readCatalog(c);
    });
  };

  beforeAll(async () => {
    sb = await startTestSandbox({ withRegistry: false });
    // Backend.AI's 21.03 dump is the product's own baseline (the seeder builds from it).
    catalogs.dump2103 = await loadDump('dump_2103', '../../../drizzle/baseline/21.03-8679d0a7e22b.sql');
    catalogs.dump2203 = await loadDump('dump_2203', '22.03-81c264528f20-upgraded.sql');
    catalogs.fresh2203 = await loadDump('fresh_2203', '22.03-fresh-create_all.sql');
  });
  afterAll(async () => {
    await sb?.stop();
  });

  it('reads the 21.03 dump as backend-ai-schema.md §1 and §4 describe it', () => {
    const c = catalogs.dump2103!;
    // Expected values copied from /work/shared/reference/backend-ai-schema.md §0.2, §1 and §4.
    expect(c.extensions).toEqual(['uuid-ossp']);
    expect(c.alembicVersions).toEqual(['8679d0a7e22b']);
    expect(Object.keys(c.tables)).toHaveLength(21); // 20 tables + alembic_version
    expect(Object.keys(c.enums)).toHaveLength(13);
    expect(c.enums.kernelstatus).toEqual([
      'PENDING', 'SCHEDULED', 'PREPARING', 'BUILDING', 'PULLING', 'RUNNING', 'RESTARTING',
      'RESIZING', 'SUSPENDED', 'TERMINATING', 'TERMINATED', 'ERROR', 'CANCELLED',
    ]);
    const kernels = c.tables.kernels!;
    // The dump sets search_path to '' when loading; readCatalog still reports unqualified text.
    expect(kernels.indexes.ix_kernels_unique_sess_token).toBe(
      "CREATE UNIQUE INDEX ix_kernels_unique_sess_token ON kernels USING btree (access_key, session_name) WHERE ((status <> ALL (ARRAY['TERMINATED'::kernelstatus, 'CANCELLED'::kernelstatus])) AND ((cluster_role)::text = 'main'::text))",
    );
    expect(kernels.indexes.ix_kernels_updated_order).toBe(
      "CREATE INDEX ix_kernels_updated_order ON kernels USING btree (GREATEST('created_at'::text, 'terminated_at'::text, 'status_changed'::text))",
    );
    expect(kernels.columns.status).toEqual({ type: 'kernelstatus', notNull: true, default: "'PENDING'::kernelstatus" });
    expect(kernels.columns.id!.default).toBe('uuid_generate_v4()');
    expect(c.tables.keypairs!.columns.concurrency_used).toEqual({ type: 'integer', notNull: false, default: null });
    expect(c.tables.sgroups_for_groups!.constraints.fk_sgroups_for_groups_group_groups!.definition).toBe(
      'FOREIGN KEY ("group") REFERENCES groups(id) ON UPDATE CASCADE ON DELETE CASCADE',
    );
    expect(c.tables.vfolder_permissions!.constraints).not.toHaveProperty('pk_vfolder_permissions');
    expect(c.tables.alembic_version!.constraints.alembic_version_pkc!.type).toBe('PRIMARY KEY');
  });

  it('gives the same catalog whatever the session search_path is', async () => {
    const qualified = await withDatabase('dump_2103', async (c) => {
      await c.query(`SET search_path = ''`);
      return readCatalog(c);
    });
    expect(diffCatalogs(qualified, catalogs.dump2103!)).toEqual([]);
  });

  it('drizzle 21.03 model declares every column, constraint and index of the 21.03 dump', () => {
    expect(drizzleShape(release2103)).toEqual(catalogShape(catalogs.dump2103!));
  });

  it('drizzle 22.03 model declares every column, constraint and index of the 22.03 upgraded dump', () => {
    expect(drizzleShape(release2203)).toEqual(catalogShape(catalogs.dump2203!));
  });

  it('DDL drizzle-kit generates from the 21.03 model builds exactly the 21.03 catalog', async () => {
    const created = await createFromDrizzle('drizzle_2103', release2103, '8679d0a7e22b');
    expect(diffCatalogs(created, catalogs.dump2103!)).toEqual([]);
  });

  it('DDL drizzle-kit generates from the 22.03 model builds exactly the 22.03 upgraded catalog', async () => {
    const created = await createFromDrizzle('drizzle_2203', release2203, '81c264528f20');
    expect(diffCatalogs(created, catalogs.dump2203!)).toEqual([]);
  });

  it('finds exactly the documented drift between a fresh 22.03 create_all and the upgraded 22.03', () => {
    // backend-ai-schema.md §2.3 and §3.3 (copied here). Column order differences are listed
    // there too but are not catalog differences. The fresh dump was never `alembic stamp`ed
    // (schema-dumps/README.md), hence the two alembic_version lines.
    expect(diffCatalogs(catalogs.fresh2203!, catalogs.dump2203!)).toEqual([
      "enum image_type: missing (expected labels COMPUTE, SYSTEM, SERVICE)",
      "enum imagetype: unexpected (labels COMPUTE, SYSTEM, SERVICE)",
      "table alembic_version: missing",
      "index image_aliases.ix_image_alias_unique_ref: missing (expected CREATE UNIQUE INDEX ix_image_alias_unique_ref ON image_aliases USING btree (image, alias))",
      "column images.architecture: default none, expected 'x86_64'::character varying",
      "column images.labels: type json, expected jsonb",
      "column images.tag: type text, expected character varying; nullable, expected NOT NULL",
      "column images.type: type imagetype, expected image_type",
      "index images.ix_image_image_tag_registry: missing (expected CREATE INDEX ix_image_image_tag_registry ON images USING btree (image, tag, registry))",
      "index images.ix_image_name_architecture: missing (expected CREATE UNIQUE INDEX ix_image_name_architecture ON images USING btree (name, architecture))",
      "index images.ix_images_tag: missing (expected CREATE INDEX ix_images_tag ON images USING btree (tag))",
      "column kernels.architecture: type character varying(32), expected character varying; nullable, expected NOT NULL",
      "column kernels.vfolder_mounts: type jsonb, expected json",
      "index keypairs.ix_keypairs_resource_policy: missing (expected CREATE INDEX ix_keypairs_resource_policy ON keypairs USING btree (resource_policy))",
      "column session_templates.created_at: default now(), expected none",
      "alembic_version: no alembic_version table; expected 81c264528f20",
    ]);
  });
});
