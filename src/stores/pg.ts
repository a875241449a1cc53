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

type ConnectCallback = (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: unknown) => void) => void;

/**
 * A pool whose failed connections (server down, wrong password) are the storeUnreachable
 * MgrError naming the server, however they are made: withClient, pool.connect or pool.query
 * (which connects through this method), never a bare driver error that ends as exit 1.
 */
class NamedPool extends pg.Pool {
  constructor(
    private readonly target: PgConfig,
    config: pg.PoolConfig,
  ) {
    super(config);
  }

  override connect(): Promise<pg.PoolClient>;
  override connect(callback: ConnectCallback): void;
  override connect(callback?: ConnectCallback): Promise<pg.PoolClient> | void {
    if (!callback) {
      return super.connect().catch((e: unknown) => {
        throw pgUnreachable(this.target, e);
      });
    }
    super.connect((err, client, done) => callback(err && pgUnreachable(this.target, err), client, done));
  }
}

export function openPg(c: PgConfig, opts: { max?: number } = {}): PgStore {
  const pool = new NamedPool(c, { ...pgClientConfig(c), max: opts.max ?? 8, idleTimeoutMillis: 10_000 });
  // An idle client's error (server restarted) must not crash the process; the next query reports it.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  const withClient = async <T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    const client = await pool.connect();
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
