import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { MgrError, type LockHolderInfo } from '../errors.js';
import type { Logger } from '../log.js';
import { quote, type EtcdStore } from '../stores/etcd.js';
import { currentHolder, lockBusy, parseHolder } from './common.js';
import type { HeldLock, LockBackend, LockRequest } from './types.js';

/** flock(1)'s exit code when the lock stayed busy until -w ran out (chosen to differ from its own errors). */
const FLOCK_BUSY_EXIT = 75;
const ACQUIRED_LINE = 'locked';

/**
 * Backend.AI's "filelock": a BSD flock on `{ipc-base-path}/{manager-id}.{name}.lock`, the same
 * lock call (fcntl.flock LOCK_EX) and file naming as the manager's FileLock.
 *
 * Node has no flock in core, so the lock is held by a flock(1) child (util-linux) that execs
 * `cat` on a pipe from this process: the kernel drops the lock when that child exits, and the
 * child exits as soon as the pipe closes, which the kernel does when this process dies, even
 * by SIGKILL. Single node only: it refuses when etcd lists more than one manager.
 */
export class FileLockBackend implements LockBackend {
  readonly kind = 'filelock' as const;

  constructor(
    private readonly opts: { ipcBasePath: string; managerId: string; etcd: EtcdStore; log: Logger },
  ) {}

  /** The lock file of a lock name (the name is percent-quoted so it stays one path component). */
  lockFile(name: string): string {
    return path.join(this.opts.ipcBasePath, `${this.opts.managerId}.${quote(name)}.lock`);
  }

  async acquire(req: LockRequest): Promise<HeldLock> {
    const file = this.lockFile(req.name);
    await refuseOnSeveralManagers(this.opts.etcd, file);
    await mkdir(this.opts.ipcBasePath, { recursive: true });
    const child = await this.spawnHolder(file, req);
    const holder = currentHolder(req.purpose);
    const lost = new AbortController();
    let released = false;
    const onExit = () => {
      if (released) return;
      const why = `its flock process ${child.pid} exited (${child.signalCode ?? `code ${child.exitCode}`})`;
      this.opts.log.error({ lock: req.name, file }, `filelock lost: ${why}`);
      lost.abort(new MgrError('stepFailed', `lock "${req.name}" (filelock ${file}) was lost: ${why}`));
    };
    if (child.exitCode !== null || child.signalCode !== null) onExit();
    else child.once('exit', onExit);
    try {
      await writeFile(file, JSON.stringify(holder) + '\n');
    } catch (e) {
      // The lock is held; only its holder info is missing.
      this.opts.log.warn({ lock: req.name, file, err: (e as Error).message }, 'could not write holder info into the lock file');
    }
    return {
      name: req.name,
      holder,
      lost: lost.signal,
      release: async () => {
        if (released) return;
        released = true;
        await writeFile(file, '').catch(() => undefined); // stale holder info would mislead `holder()`
        await endHolder(child);
      },
    };
  }

  async holder(name: string): Promise<LockHolderInfo | undefined> {
    const file = this.lockFile(name);
    let raw: string;
    try {
      raw = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    // A probe: if a non-blocking flock succeeds, nobody holds it (whatever the file says).
    const probe = await runFlock(['-n', '-E', String(FLOCK_BUSY_EXIT), file, 'true']);
    if (probe === 0) return undefined;
    return parseHolder(raw) ?? { host: 'unknown', pid: 0, since: 'unknown', purpose: `holder not recorded in ${file}` };
  }

  /** Starts `flock -F FILE sh -c 'echo locked; exec cat'` and resolves once it holds the lock. */
  private spawnHolder(file: string, req: LockRequest): Promise<ChildProcessWithoutNullStreams> {
    const wait = req.waitMs > 0 ? ['-w', (req.waitMs / 1000).toFixed(3)] : ['-n'];
    const child = spawn('flock', ['-x', ...wait, '-E', String(FLOCK_BUSY_EXIT), '-F', file, '-c', `echo ${ACQUIRED_LINE}; exec cat`], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return new Promise((resolve, reject) => {
      let out = '';
      let err = '';
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        req.signal?.removeEventListener('abort', onAbort);
        fn();
      };
      const onAbort = () => {
        child.kill('SIGKILL');
        settle(() => reject(req.signal!.reason));
      };
      req.signal?.addEventListener('abort', onAbort, { once: true });
      if (req.signal?.aborted) onAbort();
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk: string) => {
        out += chunk;
        if (!out.includes(ACQUIRED_LINE + '\n')) return;
        // Held: from now on neither the child nor its pipes keep this process alive.
        child.unref();
        for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void }).unref?.();
        settle(() => resolve(child));
      });
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk: string) => (err += chunk));
      child.once('error', (e: NodeJS.ErrnoException) => {
        settle(() =>
          reject(
            e.code === 'ENOENT'
              ? new MgrError('config', 'the filelock backend needs flock(1) from util-linux, which is not on PATH', {
                  hint: 'install util-linux, or set [manager] distributed-lock = "etcd" or "pg_advisory"',
                  cause: e,
                })
              : e,
          ),
        );
      });
      child.once('exit', (code) => {
        if (code === FLOCK_BUSY_EXIT) {
          settle(() => {
            this.holder(req.name).then(
              (h) => reject(lockBusy('filelock', req.name, req.waitMs, h)),
              () => reject(lockBusy('filelock', req.name, req.waitMs, undefined)),
            );
          });
        } else {
          settle(() => reject(new MgrError('internal', `flock on ${file} failed (exit ${code}): ${err.trim() || 'no message'}`)));
        }
      });
    });
  }
}

/** Closes the child's stdin: `cat` sees EOF and exits, and the kernel drops the flock. */
async function endHolder(child: ChildProcessWithoutNullStreams): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}

function runFlock(args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const p = spawn('flock', args, { stdio: 'ignore' });
    p.once('error', reject);
    p.once('exit', (code) => resolve(code ?? -1));
  });
}

/** Manager instance ids registered in etcd (`nodes/manager/{instance-id}`). */
export async function registeredManagers(etcd: EtcdStore): Promise<string[]> {
  const kvs = await etcd.getFlat('nodes/manager/');
  return [...new Set(kvs.map((kv) => kv.key.slice('nodes/manager/'.length).split('/')[0]!).filter(Boolean))].sort();
}

/** A flock excludes processes on one host only: refuse when etcd shows managers on several. */
async function refuseOnSeveralManagers(etcd: EtcdStore, file: string): Promise<void> {
  const managers = await registeredManagers(etcd);
  if (managers.length <= 1) return;
  throw new MgrError(
    'refused',
    `the filelock backend is single-node only (a flock on ${file} excludes processes on this host alone), ` +
      `but etcd ${etcd.abs('nodes/manager/')} lists ${managers.length} managers: ${managers.join(', ')}`,
    { hint: 'set [manager] distributed-lock = "etcd" or "pg_advisory" in manager.toml for a multi-node installation' },
  );
}
