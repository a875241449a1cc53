import { MgrError } from '../errors.js';
import type { Step, StepContext } from '../engine/types.js';
import { REDIS_DB } from '../stores/redis.js';

/**
 * 22.03 drops keypairs.concurrency_used and counts running sessions in Redis DB 0 under
 * `keypair.concurrency_used.{access_key}`. Backend.AI left those keys missing (= 0) after its
 * upgrade, so sessions running across it went uncounted. mgr writes the count the 22.03 manager
 * would compute (kernel rows per access key in the resource-occupying statuses, backend-ai.md
 * §6.3) for every keypair, before the column is dropped, and checks it reads back equal.
 */
export const CONCURRENCY_KEY_PREFIX = 'keypair.concurrency_used.';

/** USER_RESOURCE_OCCUPYING_KERNEL_STATUSES: every status except these. */
export const NON_OCCUPYING_STATUSES = ['TERMINATING', 'TERMINATED', 'PENDING', 'CANCELLED'] as const;

const BATCH = 1000;

interface Count {
  accessKey: string;
  count: number;
  /** The 21.x column's value, while the column still exists. */
  column: number | null | undefined;
}

async function recount(ctx: StepContext): Promise<Count[]> {
  return ctx.stores.pg.withClient(async (c) => {
    const hasColumn =
      (
        await c.query(
          `SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'keypairs' AND column_name = 'concurrency_used'`,
        )
      ).rowCount === 1;
    // One pass over kernels (there is no plain index on kernels.access_key): a correlated count
    // per keypair would scan the table once per keypair.
    const r = await c.query<{ access_key: string; n: number; col: number | null }>(
      `SELECT k.access_key, ${hasColumn ? 'k.concurrency_used' : 'NULL::int'} AS col, coalesce(x.n, 0)::int AS n
         FROM keypairs k
         LEFT JOIN (SELECT access_key, count(*) AS n FROM kernels
                     WHERE status::text <> ALL ($1::text[]) GROUP BY access_key) x ON x.access_key = k.access_key
        ORDER BY k.access_key`,
      [NON_OCCUPYING_STATUSES],
    );
    return r.rows.map((row) => ({ accessKey: row.access_key, count: row.n, column: hasColumn ? row.col : undefined }));
  });
}

export function keypairConcurrencyStep(): Step {
  return {
    id: '22.03/keypair-concurrency-to-redis',
    title: 'keypair concurrency counters from PostgreSQL into Redis (before the column is dropped)',
    kind: 'data',
    plan: async (ctx) => {
      const counts = await recount(ctx);
      const busy = counts.filter((c) => c.count > 0);
      return [
        {
          store: 'redis',
          action: `SET ${CONCURRENCY_KEY_PREFIX}{access_key} in DB ${REDIS_DB.stat} for ${counts.length} keypairs (${busy.length} with running kernels, ${busy.reduce((a, c) => a + c.count, 0)} kernels counted)`,
          detail: busy
            .slice(0, 20)
            .map((c) => `${CONCURRENCY_KEY_PREFIX}${c.accessKey} = ${c.count}`)
            .join('\n'),
        },
      ];
    },
    apply: async (ctx) => {
      const counts = await recount(ctx);
      const redis = await ctx.stores.redis.db(REDIS_DB.stat);
      for (let i = 0; i < counts.length; i += BATCH) {
        const chunk = counts.slice(i, i + BATCH);
        await redis.mset(...chunk.flatMap((c) => [CONCURRENCY_KEY_PREFIX + c.accessKey, String(c.count)]));
        ctx.progress({ done: Math.min(i + BATCH, counts.length), total: counts.length, unit: 'keypairs' });
      }
      const stale = counts.filter((c) => c.column !== undefined && (c.column ?? 0) !== c.count);
      return {
        summary: `wrote ${counts.length} counters (${counts.filter((c) => c.count > 0).length} non-zero)`,
        counts: { keypairs: counts.length, kernelsCounted: counts.reduce((a, c) => a + c.count, 0), columnDiffered: stale.length },
        warnings: stale.length
          ? [`${stale.length} keypairs had a keypairs.concurrency_used value that differed from the recount (e.g. ${stale[0]!.accessKey}: column ${stale[0]!.column}, kernels ${stale[0]!.count}); the recount was written`]
          : [],
      };
    },
    verify: async (ctx) => {
      const counts = await recount(ctx);
      const redis = await ctx.stores.redis.db(REDIS_DB.stat);
      const wrong: string[] = [];
      for (let i = 0; i < counts.length; i += BATCH) {
        const chunk = counts.slice(i, i + BATCH);
        const values = await redis.mget(...chunk.map((c) => CONCURRENCY_KEY_PREFIX + c.accessKey));
        chunk.forEach((c, j) => {
          if (values[j] !== String(c.count)) wrong.push(`${c.accessKey}: redis ${values[j]} ≠ ${c.count}`);
        });
      }
      if (wrong.length) {
        throw new MgrError('stepFailed', `${wrong.length} keypair concurrency counters in Redis differ from the kernel rows: ${wrong.slice(0, 5).join('; ')}`);
      }
    },
  };
}
