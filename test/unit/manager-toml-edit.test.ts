import { lstat, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { diffArrays } from 'diff';
import { parse as parseToml } from 'smol-toml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyManagerTomlEdit, lockBackendStep, planManagerTomlEdit, PERIODIC_SYNC_STATS_HELP } from '../../src/config/manager-toml-edit.js';
import { localConfigFromText } from '../../src/config/manager-toml.js';
import { ConfigError, MgrError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import type { StepContext, UpgradeOptions } from '../../src/engine/types.js';

const FIXTURE = fileURLToPath(new URL('../fixtures/manager-21.x.sample.toml', import.meta.url));
const LOCK_LINE = 'distributed-lock = "etcd"';
const SYNC_LINES = [`# ${PERIODIC_SYNC_STATS_HELP}`, '# periodic-sync-stats = false'];

/** The lines of `after` that are not in `before`, failing on any removed or changed line. */
function onlyAdditions(before: string[], after: string[]): { at: number; lines: string[] }[] {
  const blocks: { at: number; lines: string[] }[] = [];
  let i = 0;
  for (const part of diffArrays(before, after)) {
    expect(part.removed, `line(s) removed or changed: ${JSON.stringify(part.value)}`).toBeFalsy();
    if (part.added) blocks.push({ at: i, lines: part.value });
    i += part.value.length;
  }
  return blocks;
}

describe('planManagerTomlEdit (pure)', () => {
  let sample: string;
  beforeAll(async () => {
    sample = await readFile(FIXTURE, 'utf8');
  });

  it('on the 21.x sample: keeps every original line byte-identical and adds the lock key in [manager], the comment under [debug]', () => {
    const p = planManagerTomlEdit(sample, { lockBackend: 'etcd' });
    const before = sample.split('\n');
    const after = p.newText.split('\n');
    const blocks = onlyAdditions(before, after);
    expect(blocks).toHaveLength(2);
    // After the last key of [manager] (importer-image), before the blank lines and [docker-registry].
    const [lock, sync] = blocks;
    expect(after[lock!.at - 1]).toBe('importer-image = "lablup/importer:manylinux2010"');
    expect(lock!.lines.at(-1)).toBe(LOCK_LINE);
    expect(lock!.lines.slice(0, -1).every((l) => l.startsWith('# '))).toBe(true);
    expect(after[lock!.at + lock!.lines.length + 2]).toBe('[docker-registry]');
    // Under [debug] enabled = false.
    expect(after[sync!.at - 2]).toBe('[debug]');
    expect(after[sync!.at - 1]).toBe('enabled = false');
    expect(sync!.lines).toEqual(SYNC_LINES);
    // Removing the added lines gives back the original, byte for byte.
    expect(after.filter((_, i) => !blocks.some((b) => i >= b.at && i < b.at + b.lines.length))).toEqual(before);

    expect(localConfigFromText(p.newText, 'edited').manager.distributedLock).toBe('etcd');
    const parsed = parseToml(p.newText) as Record<string, Record<string, unknown>>;
    const original = parseToml(sample) as Record<string, Record<string, unknown>>;
    expect(parsed).toEqual({ ...original, manager: { ...original.manager, 'distributed-lock': 'etcd' } });
    expect(p.lockBackend).toEqual({ value: 'etcd', chosenBy: 'mgr' });
    expect(p.changes[0]).toMatch(/22\.03\.2\+ manager with no key falls back to "pg_advisory" \(M#592\)/);
    expect(p.diff).toContain(`+${LOCK_LINE}`);
    expect(p.diff).toContain(`+${SYNC_LINES[1]}`);
  });

  it("keeps an operator's distributed-lock = \"filelock\"", () => {
    const text = sample.replace('hide-agents = false\n', 'hide-agents = false\ndistributed-lock = "filelock"\n');
    const p = planManagerTomlEdit(text, { lockBackend: 'etcd' });
    expect(p.lockBackend).toEqual({ value: 'filelock', chosenBy: 'operator' });
    expect(p.newText).not.toContain(LOCK_LINE);
    expect(localConfigFromText(p.newText, 'edited').manager.distributedLock).toBe('filelock');
    expect(onlyAdditions(text.split('\n'), p.newText.split('\n')).map((b) => b.lines)).toEqual([SYNC_LINES]);
  });

  it('changes nothing the second time', () => {
    const once = planManagerTomlEdit(sample, { lockBackend: 'pg_advisory' });
    const twice = planManagerTomlEdit(once.newText, { lockBackend: 'etcd' });
    expect(twice.newText).toBe(once.newText);
    expect(twice.changes).toEqual([]);
    expect(twice.diff).toBe('');
    expect(twice.lockBackend).toEqual({ value: 'pg_advisory', chosenBy: 'operator' });
  });

  it('keeps CRLF line endings', () => {
    const crlf = sample.replace(/\n/g, '\r\n');
    const p = planManagerTomlEdit(crlf, { lockBackend: 'etcd' });
    expect(p.newText).not.toMatch(/[^\r]\n/);
    expect(p.newText.split('\r\n')).toEqual(planManagerTomlEdit(sample, { lockBackend: 'etcd' }).newText.split('\n'));
    expect(localConfigFromText(p.newText, 'crlf').manager.distributedLock).toBe('etcd');
  });

  it('adds [manager] and [debug] when the file has neither', () => {
    const minimal = '[etcd]\nnamespace = "local"\n\n[db]\naddr = { host = "db", port = 5432 }\nname = "backend"\nuser = "postgres"\n';
    const p = planManagerTomlEdit(minimal, { lockBackend: 'etcd' });
    expect(p.newText.startsWith(minimal)).toBe(true);
    const tail = p.newText.slice(minimal.length).split('\n');
    expect(tail).toContain('[manager]');
    expect(tail).toContain(LOCK_LINE);
    expect(tail.slice(tail.indexOf('[debug]') + 1, tail.indexOf('[debug]') + 3)).toEqual(SYNC_LINES);
    expect(localConfigFromText(p.newText, 'min').manager.distributedLock).toBe('etcd');
    expect(planManagerTomlEdit(p.newText, { lockBackend: 'etcd' }).changes).toEqual([]);
  });

  it('keeps indentation, and leaves an inline [debug] table alone', () => {
    const text = 'debug = { enabled = false }\n[etcd]\nnamespace = "l"\n[db]\naddr = { host = "db", port = 1 }\nname = "backend"\nuser = "u"\n[manager]\n    id = "i-x"\n';
    const p = planManagerTomlEdit(text, { lockBackend: 'etcd' });
    expect(p.newText.split('\n')).toContain(`    ${LOCK_LINE}`);
    expect(p.newText).not.toContain('periodic-sync-stats');
    expect(p.newText.split('\n')[0]).toBe('debug = { enabled = false }');
    expect(planManagerTomlEdit(p.newText, { lockBackend: 'etcd' }).changes).toEqual([]);
  });

  it('refuses a file whose distributed-lock is "redlock", naming the allowed values', () => {
    const text = sample.replace('hide-agents = false\n', 'hide-agents = false\ndistributed-lock = "redlock"\n');
    expect(() => planManagerTomlEdit(text, { lockBackend: 'etcd' })).toThrow(ConfigError);
    expect(() => planManagerTomlEdit(text, { lockBackend: 'etcd' })).toThrow(/"redlock" is not supported in 22\.03/);
  });
});

describe('applyManagerTomlEdit and lockBackendStep (files)', () => {
  let dir: string;
  let sample: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-toml-edit-'));
    sample = await readFile(FIXTURE, 'utf8');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes a same-mode backup first, replaces the file atomically, and does nothing the second time', async () => {
    const file = path.join(dir, 'manager.toml');
    await writeFile(file, sample, { mode: 0o640 });
    const r = await applyManagerTomlEdit(file, { lockBackend: 'etcd' });
    expect(r.backupPath).toMatch(/manager\.toml\.bak-\d{8}T\d{6}Z$/);
    expect(await readFile(r.backupPath!, 'utf8')).toBe(sample);
    expect((await stat(r.backupPath!)).mode & 0o777).toBe(0o640);
    expect((await stat(file)).mode & 0o777).toBe(0o640);
    expect(await readFile(file, 'utf8')).toBe(r.newText);
    expect((await readdir(dir)).filter((f) => f.endsWith('.tmp'))).toEqual([]);

    const again = await applyManagerTomlEdit(file, { lockBackend: 'pg_advisory' });
    expect(again.backupPath).toBeUndefined();
    expect(again.changes).toEqual([]);
    expect(await readFile(file, 'utf8')).toBe(r.newText);
    expect((await readdir(dir)).filter((f) => f.includes('.bak-'))).toHaveLength(1);
  });

  it('edits the target of a symlink and keeps the link', async () => {
    const target = path.join(dir, 'real.toml');
    const link = path.join(dir, 'link.toml');
    await writeFile(target, sample);
    await symlink(target, link);
    const r = await applyManagerTomlEdit(link, { lockBackend: 'etcd' });
    expect(r.file).toBe(target);
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readlink(link)).toBe(target);
    expect(await readFile(target, 'utf8')).toContain(LOCK_LINE);
  });

  it('the step plans a diff saying why, applies it, and verifies by re-parsing', async () => {
    const file = path.join(dir, 'step.toml');
    await writeFile(file, sample);
    const options = { lockBackend: 'etcd', managerTomlPath: file } as UpgradeOptions;
    // This step reads and writes only the file (stores are needed for "filelock" alone).
    const ctx = { options, log: silentLogger, release: '22.03' } as StepContext;
    const step = lockBackendStep();
    await expect(step.verify(ctx)).rejects.toThrow(MgrError);
    const changes = await step.plan(ctx);
    expect(changes).toHaveLength(1);
    expect(changes[0]!.store).toBe('file');
    expect(changes[0]!.action).toMatch(/falls back to "pg_advisory" \(M#592\).*makes the choice explicit/);
    expect(changes[0]!.detail).toContain(`+${LOCK_LINE}`);
    expect(await readFile(file, 'utf8')).toBe(sample); // plan writes nothing
    const result = await step.apply(ctx);
    expect(result.summary).toMatch(/distributed-lock = "etcd" \(written by mgr\); backup .*\.bak-/);
    await step.verify(ctx);
    expect(await step.plan(ctx)).toEqual([]);
    expect((await step.apply(ctx)).summary).toMatch(/already up to date/);
  });
});
