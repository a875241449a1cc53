import type { PgStore } from '../stores/pg.js';
import { detectFromRows, type Detected } from './releases.js';

/** Reads `alembic_version` and says which release the database is at. */
export async function detectRelease(pg: PgStore): Promise<Detected> {
  return pg.withClient(async (c) => {
    const t = await c.query(`SELECT to_regclass('public.alembic_version') AS t`);
    if (t.rows[0]?.t === null) return { kind: 'empty' } as Detected;
    const r = await c.query<{ version_num: string }>('SELECT version_num FROM alembic_version');
    return detectFromRows(r.rows.map((x) => x.version_num));
  });
}
