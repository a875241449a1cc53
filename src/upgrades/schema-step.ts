import { MgrError } from '../errors.js';
import { detectRelease } from '../engine/detect.js';
import {
  adoptAlembicHistory,
  applySqlMigration,
  loadSqlMigrations,
  verifySqlMigration,
  type SqlMigration,
} from '../engine/sql-migrations.js';
import { revisionIndex, type Revision } from '../engine/releases.js';
import type { Step } from '../engine/types.js';

let cache: SqlMigration[] | undefined;
function migrationFor(revision: Revision): SqlMigration {
  cache ??= loadSqlMigrations();
  const m = cache.find((x) => x.revision === revision);
  if (!m) throw new MgrError('integrity', `no migration file for alembic revision ${revision} under drizzle/`);
  return m;
}

/**
 * A step that mirrors one Backend.AI alembic revision with the SQL file named after it. A
 * revision that Backend.AI's own alembic already applied (alembic_version at or past it) is
 * adopted: recorded, not run.
 */
export function schemaStep(revision: Revision): Step {
  const m = () => migrationFor(revision);
  return {
    id: `${m().release}/${revision}`,
    title: `alembic ${revision}: ${m().name.split('/')[1]!.slice(13).replace(/_/g, ' ')}`,
    kind: 'schema',
    plan: async () => [{ store: 'postgres', action: m().description, detail: m().sql }],
    apply: async (ctx) => {
      const file = m();
      const detected = await detectRelease(ctx.stores.pg);
      return ctx.stores.pg.withClient(async (client) => {
        if (detected.kind === 'known' && detected.position >= revisionIndex(revision)) {
          const adopted = await adoptAlembicHistory(client, [file], detected.position);
          return {
            summary: adopted.length ? `already applied by Backend.AI's alembic (alembic_version ${detected.rows.join(',')}); adopted` : 'already applied',
            skipped: true,
          };
        }
        const ran = await applySqlMigration(client, file, {
          onRetry: (attempt, e) => ctx.log.warn({ step: file.name, attempt, err: (e as Error).message }, 'lock timeout; retrying'),
        });
        return { summary: ran ? `applied ${file.name}` : 'already applied' };
      });
    },
    verify: async (ctx) => {
      const failed = await ctx.stores.pg.withClient((c) => verifySqlMigration(c, m()));
      if (failed.length) throw new MgrError('stepFailed', `after ${m().name}, these checks did not hold: ${failed.join(' | ')}`);
    },
  };
}
