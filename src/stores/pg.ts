import pg from 'pg';
import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import { MgrError } from '../errors.js';

export interface PgConfig {
  host: string;
  port: number;
  name: string;
  user: string;
  password: string;
}

export interface PgStore {
  pool: pg.Pool;
  db: NodePgDatabase;
  /** Runs fn on one dedicated client, released in finally. */
  withClient<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T>;
  /** Runs fn in one transaction on one client: COMMIT on success, ROLLBACK on throw. */
  withTransaction<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T>;
  version(): Promise<string>;
  close(): Promise<void>;
}

// BIGINT (int8) as JS number would lose precision past 2^53; keep it a string unless safe.
pg.types.setTypeParser(20, (v: string) => {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : v;
});

export function pgClientConfig(c: PgConfig): pg.ClientConfig {
  return {
    host: c.host,
    port: c.port,
    database: c.name,
    user: c.user,
    password: c.password,
    connectionTimeoutMillis: 10_000,
    application_name: 'mgr',
  };
}

export function openPg(c: PgConfig, opts: { max?: number } = {}): PgStore {
  const pool = new pg.Pool({ ...pgClientConfig(c), max: opts.max ?? 8, idleTimeoutMillis: 10_000 });
  // An idle client's error (server restarted) must not crash the process; the next query reports it.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  const withClient = async <T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    let client: pg.PoolClient;
    try {
      client = await pool.connect();
    } catch (e) {
      throw pgUnreachable(c, e);
    }
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  };
  return {
    pool,
    db: drizzle(pool),
    withClient,
    withTransaction: (fn) =>
      withClient(async (client) => {
        await client.query('BEGIN');
        try {
          const r = await fn(client);
          await client.query('COMMIT');
          return r;
        } catch (e) {
          await client.query('ROLLBACK').catch(() => undefined);
          throw e;
        }
      }),
    version: async () => (await withClient((cl) => cl.query<{ server_version: string }>('SHOW server_version'))).rows[0]!.server_version,
    close: () => pool.end(),
  };
}

export function pgUnreachable(c: PgConfig, cause: unknown): MgrError {
  return new MgrError(
    'storeUnreachable',
    `PostgreSQL at ${c.host}:${c.port} (database "${c.name}", user "${c.user}") is not reachable: ${(cause as Error)?.message ?? cause}`,
    { cause, hint: 'check [db] in manager.toml and that PostgreSQL is running' },
  );
}

/** SQLSTATE codes mgr branches on. */
export const PG_ERROR = {
  lockNotAvailable: '55P03',
  uniqueViolation: '23505',
  undefinedTable: '42P01',
  queryCanceled: '57014',
  adminShutdown: '57P01',
} as const;

export function pgErrorCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}
