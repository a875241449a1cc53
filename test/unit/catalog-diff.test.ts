import { describe, expect, it } from 'vitest';
import { diffCatalogs, type Catalog, type TableInfo } from '../../src/schema/catalog.js';

/** A small catalog in the shape readCatalog returns; each test changes one thing. */
function catalog(): Catalog {
  const kernels: TableInfo = {
    columns: {
      id: { type: 'uuid', notNull: true, default: 'uuid_generate_v4()' },
      status: { type: 'kernelstatus', notNull: true, default: "'PENDING'::kernelstatus" },
      vfolder_mounts: { type: 'json', notNull: false, default: null },
    },
    constraints: { pk_kernels: { type: 'PRIMARY KEY', definition: 'PRIMARY KEY (id)' } },
    indexes: {
      pk_kernels: 'CREATE UNIQUE INDEX pk_kernels ON kernels USING btree (id)',
      ix_kernels_status: 'CREATE INDEX ix_kernels_status ON kernels USING btree (status)',
    },
  };
  return {
    schema: 'public',
    extensions: ['uuid-ossp'],
    enums: { kernelstatus: ['PENDING', 'RUNNING'] },
    tables: { kernels },
    alembicVersions: ['81c264528f20'],
  };
}

describe('diffCatalogs', () => {
  it('reports nothing for equal catalogs, whatever the column order', () => {
    const reordered = catalog();
    const cols = reordered.tables.kernels!.columns;
    reordered.tables.kernels!.columns = Object.fromEntries(Object.entries(cols).reverse());
    expect(Object.keys(reordered.tables.kernels!.columns)).not.toEqual(Object.keys(catalog().tables.kernels!.columns));
    expect(diffCatalogs(reordered, catalog())).toEqual([]);
  });

  it('reports a column whose type, nullability and default all differ on one line', () => {
    const actual = catalog();
    actual.tables.kernels!.columns.vfolder_mounts = { type: 'jsonb', notNull: true, default: "'{}'::jsonb" };
    expect(diffCatalogs(actual, catalog())).toEqual([
      "column kernels.vfolder_mounts: type jsonb, expected json; NOT NULL, expected nullable; default '{}'::jsonb, expected none",
    ]);
  });

  it('reports missing and unexpected columns with their definition', () => {
    const actual = catalog();
    delete actual.tables.kernels!.columns.vfolder_mounts;
    actual.tables.kernels!.columns.concurrency_used = { type: 'integer', notNull: false, default: '0' };
    expect(diffCatalogs(actual, catalog())).toEqual([
      'column kernels.concurrency_used: unexpected (integer NULL DEFAULT 0)',
      'column kernels.vfolder_mounts: missing (expected json NULL)',
    ]);
  });

  it('treats enum label order as significant', () => {
    const actual = catalog();
    actual.enums.kernelstatus = ['RUNNING', 'PENDING'];
    expect(diffCatalogs(actual, catalog())).toEqual(['enum kernelstatus: labels RUNNING, PENDING; expected PENDING, RUNNING']);
  });

  it('reports a renamed enum as one missing and one unexpected type', () => {
    const actual = catalog();
    actual.enums = { kernelstatus_old: ['PENDING', 'RUNNING'] };
    expect(diffCatalogs(actual, catalog())).toEqual([
      'enum kernelstatus: missing (expected labels PENDING, RUNNING)',
      'enum kernelstatus_old: unexpected (labels PENDING, RUNNING)',
    ]);
  });

  it('compares constraint and index definitions, not just names', () => {
    const actual = catalog();
    actual.tables.kernels!.constraints.pk_kernels = { type: 'PRIMARY KEY', definition: 'PRIMARY KEY (id, status)' };
    actual.tables.kernels!.indexes.ix_kernels_status = 'CREATE UNIQUE INDEX ix_kernels_status ON kernels USING btree (status)';
    expect(diffCatalogs(actual, catalog())).toEqual([
      'constraint kernels.pk_kernels: PRIMARY KEY (id, status); expected PRIMARY KEY (id)',
      'index kernels.ix_kernels_status: CREATE UNIQUE INDEX ix_kernels_status ON kernels USING btree (status); expected CREATE INDEX ix_kernels_status ON kernels USING btree (status)',
    ]);
  });

  it('reports missing indexes, constraints and tables', () => {
    const actual = catalog();
    delete actual.tables.kernels!.indexes.ix_kernels_status;
    delete actual.tables.kernels!.constraints.pk_kernels;
    const expected = catalog();
    expected.tables.images = { columns: {}, constraints: {}, indexes: {} };
    expect(diffCatalogs(actual, expected)).toEqual([
      'table images: missing',
      'constraint kernels.pk_kernels: missing (expected PRIMARY KEY (id))',
      'index kernels.ix_kernels_status: missing (expected CREATE INDEX ix_kernels_status ON kernels USING btree (status))',
    ]);
  });

  it('reports extensions and alembic_version rows, including a missing alembic_version table', () => {
    const actual = catalog();
    actual.extensions = ['pgcrypto'];
    actual.alembicVersions = null;
    expect(diffCatalogs(actual, catalog())).toEqual([
      'extension pgcrypto: unexpected',
      'extension uuid-ossp: missing',
      'alembic_version: no alembic_version table; expected 81c264528f20',
    ]);
    const twoHeads = catalog();
    twoHeads.alembicVersions = ['7dd1d81c3204', '911023380bc9'];
    expect(diffCatalogs(twoHeads, catalog())).toEqual(['alembic_version: 7dd1d81c3204, 911023380bc9; expected 81c264528f20']);
  });
});
