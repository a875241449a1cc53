import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { MgrError } from '../errors.js';
import type { PgConfig } from '../stores/pg.js';

/**
 * pg_dump / pg_restore from Debian's postgresql-client. The password goes to the child through
 * PGPASSWORD in its environment, never on the command line (where `ps` would show it).
 */
export const PG_DUMP = '/usr/bin/pg_dump';
export const PG_RESTORE = '/usr/bin/pg_restore';

interface ToolResult {
  stdout: string;
  stderr: string;
}

function connectionArgs(c: PgConfig): string[] {
  return ['--host', c.host, '--port', String(c.port), '--username', c.user, '--dbname', c.name, '--no-password'];
}

function run(tool: string, args: string[], opts: { password?: string; signal?: AbortSignal; what: string }): Promise<ToolResult> {
  if (!existsSync(tool)) {
    return Promise.reject(
      new MgrError('config', `${tool} not found`, { hint: 'install the PostgreSQL client tools: apt-get install postgresql-client' }),
    );
  }
  return new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PGAPPNAME: 'mgr-backup', PGCONNECT_TIMEOUT: '10' };
    if (opts.password !== undefined) env.PGPASSWORD = opts.password;
    const child = spawn(tool, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 64_000) err += b.toString();
    });
    const onAbort = () => child.kill('SIGTERM');
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (e) => {
      opts.signal?.removeEventListener('abort', onAbort);
      reject(new MgrError('internal', `${opts.what}: could not start ${tool}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (opts.signal?.aborted) {
        reject(new MgrError('interrupted', `${opts.what} interrupted`));
      } else if (code === 0) {
        resolve({ stdout: Buffer.concat(out).toString(), stderr: err });
      } else {
        reject(new MgrError('stepFailed', `${opts.what} failed (${sig ?? `exit ${code}`}): ${err.trim().split('\n').slice(-5).join(' | ')}`));
      }
    });
  });
}

/** `pg_dump -Fc` of the whole database, at an exported snapshot when one is given. */
export async function pgDump(c: PgConfig, file: string, opts: { snapshot?: string; signal?: AbortSignal } = {}): Promise<void> {
  const args = [...connectionArgs(c), '--format=custom', '--file', file];
  if (opts.snapshot) args.push(`--snapshot=${opts.snapshot}`);
  await run(PG_DUMP, args, { password: c.password, signal: opts.signal, what: `pg_dump of database "${c.name}"` });
}

/** `pg_restore --list`: the archive's table of contents; fails on an unreadable archive. */
export async function pgRestoreList(file: string): Promise<string> {
  return (await run(PG_RESTORE, ['--list', file], { what: `pg_restore --list ${file}` })).stdout;
}

/**
 * Restores the archive in one transaction, stopping at the first error: the database gets all
 * of it or none of it. `noOwner` restores objects as the connecting user (a sandbox that lacks
 * production's roles).
 */
export async function pgRestore(
  c: PgConfig,
  file: string,
  opts: { noOwner?: boolean; signal?: AbortSignal } = {},
): Promise<void> {
  const args = [...connectionArgs(c), '--exit-on-error', '--single-transaction'];
  if (opts.noOwner) args.push('--no-owner', '--no-privileges');
  args.push(file);
  await run(PG_RESTORE, args, { password: c.password, signal: opts.signal, what: `pg_restore into database "${c.name}"` });
}

/** Schema names the archive creates: its `SCHEMA - <name> <owner>` entries (owner empty with --no-owner). */
export function schemasInToc(toc: string): string[] {
  const out: string[] = [];
  for (const line of toc.split('\n')) {
    const m = /^\d+;\s+\d+\s+\d+\s+SCHEMA\s+-\s+(.*)$/.exec(line);
    if (!m) continue;
    const rest = m[1]!;
    const cut = rest.lastIndexOf(' ');
    out.push(cut > 0 ? rest.slice(0, cut) : rest);
  }
  return out;
}
