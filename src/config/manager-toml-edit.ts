import { constants as fsConstants } from 'node:fs';
import { chmod, chown, copyFile, open, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { parse as parseTomlDoc, patch as patchToml } from '@decimalturn/toml-patch';
import { createTwoFilesPatch, diffArrays } from 'diff';
import { MgrError } from '../errors.js';
import type { Step, StepContext } from '../engine/types.js';
import { registeredManagers } from '../locks/filelock.js';
import { localConfigFromText, type LockBackendName } from './manager-toml.js';

/**
 * The 22.03 edits of manager.toml, made in place with @decimalturn/toml-patch so every other
 * byte (comments, key order, inline tables, alignment, CRLF) stays as the operator wrote it:
 *  - `[manager] distributed-lock` written explicitly. MIGRATION.md says the default is "etcd",
 *    but from 22.03.2 on a manager with no key uses "pg_advisory" (M#592): without the key
 *    the lock backend silently depends on the exact 22.03.x release.
 *  - a commented `# periodic-sync-stats = false` under `[debug]`, so the operator finds the
 *    switch that brings back 21.09's periodic kernels.last_stat updates.
 * toml-patch decides where a new key goes (after the table's last key); the comment lines are
 * then put in place of, or above, the line it added, since TOML values cannot carry comments.
 */

export const PERIODIC_SYNC_STATS_HELP = 'Periodically sync container stat from Redis to the kernels.last_stat column.';

const LOCK_COMMENT = [
  '# Set by mgr: one of "etcd", "pg_advisory", "filelock" (single-node installations only).',
  '# Without this key a 22.03.0-1 manager uses "etcd" and a 22.03.2+ manager "pg_advisory".',
];

const LOCK_WHY =
  'a 22.03.2+ manager with no key falls back to "pg_advisory" (M#592) although MIGRATION.md says "etcd", ' +
  'so mgr makes the choice explicit';

export interface ManagerTomlEditOptions {
  /** Written when the file has no `distributed-lock`; an operator's value is always kept. */
  lockBackend: LockBackendName;
  /** Name shown in errors and in the diff header. */
  file?: string;
}

export interface ManagerTomlEditPlan {
  /** The file after the edit; equal to the input when there is nothing to do. */
  newText: string;
  /** Unified diff from the input to newText ("" when unchanged). */
  diff: string;
  /** One line per edit, saying what and why; empty when there is nothing to do. */
  changes: string[];
  /** The lock backend the file ends up with, and who chose it. */
  lockBackend: { value: LockBackendName; chosenBy: 'operator' | 'mgr' };
}

/** Pure: what the 22.03 edits make of this manager.toml text. */
export function planManagerTomlEdit(text: string, opts: ManagerTomlEditOptions): ManagerTomlEditPlan {
  const file = opts.file ?? 'manager.toml';
  // Validates the whole file first (an operator's "redlock" is refused here with the allowed list).
  const current = localConfigFromText(text, file);
  const eol = text.includes('\r\n') ? '\r\n' : '\n';
  const doc = parseTomlDoc(text) as Record<string, unknown>;
  const changes: string[] = [];

  const addLock = current.manager.distributedLock === undefined;
  if (addLock) {
    tableOf(doc, 'manager')['distributed-lock'] = opts.lockBackend;
    changes.push(`[manager] distributed-lock = "${opts.lockBackend}" added: ${LOCK_WHY}`);
  }
  const debug = doc.debug;
  const wantSyncComment =
    !(isTable(debug) && 'periodic-sync-stats' in debug) && !/^[ \t]*#[ \t]*periodic-sync-stats[ \t]*=/m.test(text);
  if (wantSyncComment) tableOf(doc, 'debug')['periodic-sync-stats'] = false;
  if (!addLock && !wantSyncComment) {
    return { newText: text, diff: '', changes, lockBackend: { value: current.manager.distributedLock!, chosenBy: 'operator' } };
  }

  let lines = patchToml(text, doc).split(eol);
  let added = addedLineIndexes(text.split(eol), lines);
  let syncLine = added.find((i) => /^[ \t]*periodic-sync-stats[ \t]*=[ \t]*false[ \t]*$/.test(lines[i]!));
  if (wantSyncComment && syncLine === undefined) {
    // [debug] is an inline table or dotted keys: no line of its own to turn into a comment.
    delete tableOf(doc, 'debug')['periodic-sync-stats'];
    lines = patchToml(text, doc).split(eol);
    added = addedLineIndexes(text.split(eol), lines);
    syncLine = undefined;
  }
  const lockLine = added.find((i) => /^[ \t]*distributed-lock[ \t]*=/.test(lines[i]!));
  // Edit from the bottom up so the other index stays valid.
  const edits = [
    ...(syncLine !== undefined
      ? [{ at: syncLine, remove: 1, insert: (indent: string) => [`${indent}# ${PERIODIC_SYNC_STATS_HELP}`, `${indent}# periodic-sync-stats = false`] }]
      : []),
    ...(lockLine !== undefined ? [{ at: lockLine, remove: 0, insert: (indent: string) => LOCK_COMMENT.map((c) => indent + c) }] : []),
  ].sort((a, b) => b.at - a.at);
  for (const e of edits) {
    const indent = /^[ \t]*/.exec(lines[e.at]!)![0];
    lines.splice(e.at, e.remove, ...e.insert(indent));
  }
  if (syncLine !== undefined) {
    changes.push(`[debug] commented "# periodic-sync-stats = false" added: 22.03 updates kernels.last_stat only at termination unless it is true`);
  }
  const newText = lines.join(eol);
  return {
    newText,
    diff: newText === text ? '' : createTwoFilesPatch(file, file, text, newText, 'current', 'after mgr'),
    changes,
    lockBackend: addLock ? { value: opts.lockBackend, chosenBy: 'mgr' } : { value: current.manager.distributedLock!, chosenBy: 'operator' },
  };
}

export interface ManagerTomlEditResult extends ManagerTomlEditPlan {
  /** The file edited (symlinks resolved). */
  file: string;
  /** The copy of the file before the edit; undefined when nothing changed. */
  backupPath: string | undefined;
}

/**
 * Applies planManagerTomlEdit to a file: a backup copy first (`{file}.bak-{UTC timestamp}`, same
 * mode and owner), then the new text through a temp file in the same directory, fsync and
 * rename, so a crash leaves the old or the new file, never half of one. Idempotent: a file
 * that needs nothing is not touched.
 */
export async function applyManagerTomlEdit(file: string, opts: Omit<ManagerTomlEditOptions, 'file'>): Promise<ManagerTomlEditResult> {
  // Edit the target of a symlink (e.g. /etc/backend.ai/manager.toml → …) and keep the link.
  const target = await realpath(file).catch((e: unknown) => {
    throw new MgrError('config', `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  });
  const text = await readFile(target, 'utf8');
  const plan = planManagerTomlEdit(text, { ...opts, file: target });
  if (plan.newText === text) return { ...plan, file: target, backupPath: undefined };
  const st = await stat(target);
  const backupPath = await writeBackup(target, st);
  await replaceAtomically(target, plan.newText, text, st);
  return { ...plan, file: target, backupPath };
}

async function writeBackup(file: string, st: { mode: number; uid: number; gid: number }): Promise<string> {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  for (let n = 1; ; n++) {
    const backup = `${file}.bak-${stamp}${n > 1 ? `-${n}` : ''}`;
    try {
      await copyFile(file, backup, fsConstants.COPYFILE_EXCL);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw e;
    }
    await chmod(backup, st.mode & 0o7777);
    await keepOwner(backup, st, file);
    return backup;
  }
}

async function replaceAtomically(file: string, text: string, expectedOld: string, st: { mode: number; uid: number; gid: number }): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.mgr-${process.pid}.tmp`);
  const fh = await open(tmp, 'w', st.mode & 0o7777);
  try {
    await fh.writeFile(text, 'utf8');
    await fh.chmod(st.mode & 0o7777);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await keepOwner(tmp, st, file);
    // The operator may have edited the file since it was read: never overwrite that.
    if ((await readFile(file, 'utf8')) !== expectedOld) {
      throw new MgrError('refused', `${file} changed while mgr was editing it; nothing was written`, { hint: 'run the step again' });
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const dir = await open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** A new file belongs to whoever runs mgr: give it the original's owner, or refuse. */
async function keepOwner(p: string, st: { uid: number; gid: number }, original: string): Promise<void> {
  if (st.uid === process.getuid?.() && st.gid === process.getgid?.()) return;
  try {
    await chown(p, st.uid, st.gid);
  } catch (e) {
    throw new MgrError('refused', `cannot give the edited copy of ${original} its owner ${st.uid}:${st.gid}: ${(e as Error).message}`, {
      cause: e,
      hint: `run mgr as root or as the owner of ${original}`,
    });
  }
}

/**
 * 22.03 step: write `[manager] distributed-lock` into the manager.toml at
 * `ctx.options.managerTomlPath` (the operator's value is kept; else `--lock-backend`, default
 * "etcd"), and document `[debug] periodic-sync-stats`.
 */
export function lockBackendStep(): Step {
  const textOf = async (ctx: StepContext) => readFile(await realpath(ctx.options.managerTomlPath), 'utf8');
  return {
    id: '22.03/manager-toml-lock-backend',
    title: 'manager.toml: write [manager] distributed-lock explicitly, document [debug] periodic-sync-stats',
    kind: 'config',
    async plan(ctx) {
      const file = ctx.options.managerTomlPath;
      const p = planManagerTomlEdit(await textOf(ctx), { lockBackend: ctx.options.lockBackend, file });
      if (p.changes.length === 0) return [];
      return [{ store: 'file', action: `edit ${file}: ${p.changes.join('; ')}`, detail: p.diff }];
    },
    async apply(ctx) {
      const r = await applyManagerTomlEdit(ctx.options.managerTomlPath, { lockBackend: ctx.options.lockBackend });
      const warnings: string[] = [];
      if (r.lockBackend.value === 'filelock') {
        const managers = await registeredManagers(ctx.stores.etcd);
        if (managers.length > 1) {
          warnings.push(`distributed-lock is "filelock", a single-node lock, but etcd lists ${managers.length} managers (${managers.join(', ')}): use "etcd" or "pg_advisory"`);
        }
      }
      for (const w of warnings) ctx.log.warn(w);
      const lock = `distributed-lock = "${r.lockBackend.value}" (${r.lockBackend.chosenBy === 'mgr' ? 'written by mgr' : "the operator's, kept"})`;
      return {
        summary: r.backupPath ? `${r.file}: ${lock}; backup ${r.backupPath}` : `${r.file}: already up to date, ${lock}`,
        counts: { edits: r.changes.length },
        ...(warnings.length ? { warnings } : {}),
      };
    },
    async verify(ctx) {
      const file = ctx.options.managerTomlPath;
      // Done means: the key is set, and planning again finds nothing left to edit.
      const p = planManagerTomlEdit(await textOf(ctx), { lockBackend: ctx.options.lockBackend, file });
      if (p.changes.length) throw new MgrError('stepFailed', `${file} still needs: ${p.changes.join('; ')}`);
    },
  };
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function tableOf(doc: Record<string, unknown>, key: string): Record<string, unknown> {
  const t = doc[key];
  if (isTable(t)) return t;
  const fresh: Record<string, unknown> = {};
  doc[key] = fresh;
  return fresh;
}

/** Indexes (in `after`) of the lines that are not in `before`. */
function addedLineIndexes(before: string[], after: string[]): number[] {
  const out: number[] = [];
  let i = 0;
  for (const part of diffArrays(before, after)) {
    if (part.added) for (let k = 0; k < part.value.length; k++) out.push(i + k);
    if (!part.removed) i += part.value.length;
  }
  return out;
}
