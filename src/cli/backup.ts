import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { Command, Option } from 'commander';
import { EXIT } from '../errors.js';
import { DEFAULT_BACKUP_DIR, createBackup, listBackups, restoreBackup, verifyBackup, type BackupPart, type RestoreReport } from '../backup/index.js';
import type { Progress } from '../engine/types.js';
import { action, dryRunOption, interrupt, jsonOption, out, printJson, progressReporter, withStores } from './common.js';

/** One progress display per store part, replaced when the next part starts. */
function partProgress(verb: string, json: boolean): { update(p: Progress & { part: BackupPart }): void; stop(): void } {
  let current: { part: BackupPart; bar: ReturnType<typeof progressReporter> } | undefined;
  return {
    update: (p) => {
      if (current?.part !== p.part) {
        current?.bar.stop();
        current = { part: p.part, bar: progressReporter(`${verb} ${p.part}`, { json }) };
      }
      current.bar.update(p);
    },
    stop: () => current?.bar.stop(),
  };
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

async function askYes(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await rl.question(`${question} [y/N] `)).trim());
  } finally {
    rl.close();
  }
}

function printRestore(r: RestoreReport): void {
  out(`${r.dryRun ? 'dry run: would restore' : 'restored'} ${r.bundle} (release ${r.release}, taken ${r.createdAt})${r.resumed ? ' — resumed' : ''}`);
  out(`  into postgres ${r.target.postgres}, etcd ${r.target.etcd}, redis ${r.target.redis}`);
  out(`  before: ${r.before.postgres} relations, ${r.before.etcd} etcd keys, ${r.before.redis} Redis keys${r.dryRun && (r.before.postgres || r.before.etcd || r.before.redis) ? ' (deleted first)' : ''}`);
  for (const p of r.parts) out(`  ${p.part.padEnd(9)} ${p.status}${p.status === 'restored' ? `: ${p.count} ${p.part === 'postgres' ? 'rows' : 'keys'} in ${(p.durationMs / 1000).toFixed(1)} s` : ''}`);
  for (const c of r.checks) out(`  check: ${c}`);
  for (const w of r.warnings) out(`  warning: ${w}`);
}

export function registerBackup(program: Command): void {
  const backup = program
    .command('backup')
    .description('back up PostgreSQL, etcd and Redis together into one bundle, verify bundles, restore one');

  backup
    .command('create')
    .description(
      'back up the whole installation into a new bundle directory (mode 0700): pg_dump of the database, every etcd key of the namespace, Redis DBs 0-4, and a manifest with sha256 of each file. Maintenance mode is on and the clear-history lock held while it runs.',
    )
    .addOption(new Option('--out <dir>', 'directory the bundle is created in').default(DEFAULT_BACKUP_DIR))
    .addOption(jsonOption())
    .action(
      action(async (flags: { out: string; json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores, log) => {
          const progress = partProgress('backup', Boolean(flags.json));
          try {
            const m = await createBackup(stores, { outDir: flags.out, log, signal: interrupt.signal, onProgress: progress.update });
            progress.stop();
            if (flags.json) return printJson({ ok: true, ...m });
            out(`backup written: ${m.path}`);
            out(`  release ${m.release.name} (alembic_version ${m.release.alembicVersion.join(', ') || 'none'}), ${(m.durationMs / 1000).toFixed(1)} s`);
            out(`  postgres: ${Object.keys(m.postgres.tables).length} tables, ${Object.values(m.postgres.tables).reduce((a, t) => a + t.rows, 0)} rows`);
            out(`  etcd: ${m.etcd.keys} keys at revision ${m.etcd.revision}`);
            out(`  redis: ${m.redis.dbs.map((d) => `DB ${d.db} ${d.keys}`).join(', ')} keys`);
            out(`  size: ${mib(m.files.reduce((a, f) => a + f.bytes, 0))}`);
          } finally {
            progress.stop();
          }
        }),
      ),
    );

  backup
    .command('verify')
    .description('check a bundle without touching any store: every file present with its recorded size, sha256 and line count, and the dump readable by pg_restore. Exit 9 when it is damaged.')
    .argument('<bundle>', 'bundle directory')
    .addOption(jsonOption())
    .action(
      action(async (bundle: string, flags: { json?: boolean }) => {
        const v = await verifyBackup(path.resolve(bundle));
        if (flags.json) printJson({ ok: v.ok, bundle: path.resolve(bundle), problems: v.problems, release: v.manifest?.release.name, createdAt: v.manifest?.createdAt });
        else if (v.ok) out(`ok: ${bundle} (release ${v.manifest!.release.name}, taken ${v.manifest!.createdAt}, ${v.manifest!.files.length} files verified)`);
        else {
          out(`DAMAGED: ${bundle}`);
          for (const p of v.problems) out(`  ${p}`);
        }
        return v.ok ? EXIT.ok : EXIT.integrity;
      }),
    );

  backup
    .command('list')
    .description('list the bundles in a directory with release, time, size and verification status')
    .argument('[dir]', 'directory holding bundles', DEFAULT_BACKUP_DIR)
    .option('--no-verify', 'skip the checksums (fast; reads only the manifests)')
    .addOption(jsonOption())
    .action(
      action(async (dir: string, flags: { verify: boolean; json?: boolean }) => {
        const list = await listBackups(path.resolve(dir), { verify: flags.verify });
        if (flags.json) return printJson({ ok: true, bundles: list });
        if (list.length === 0) out(`no bundles in ${dir}`);
        for (const b of list) {
          const status = !b.finished ? 'UNFINISHED' : b.verify === undefined ? 'not verified' : b.verify.ok ? 'ok' : `DAMAGED (${b.verify.problems.length} problems)`;
          out(`${b.name}  ${b.release ?? '?'}  ${b.createdAt ?? '?'}  ${mib(b.bytes)}  ${status}`);
        }
      }),
    );

  backup
    .command('restore')
    .description(
      'restore a bundle into the configured stores (etcd, then PostgreSQL in one transaction, then Redis). Verifies the bundle first (exit 9 when damaged) and refuses stores that hold data unless --force (exit 5). If a part fails, running the same command again finishes the restore.',
    )
    .argument('<bundle>', 'bundle directory')
    .option('-y, --yes', 'do not ask for confirmation (required when stdin is not a terminal)')
    .option('--force', 'delete what the stores hold first: drop the database schemas, delete the etcd namespace, FLUSHDB 0-4')
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .action(
      action(async (bundle: string, flags: { yes?: boolean; force?: boolean; dryRun?: boolean; json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores, log) => {
          const progress = partProgress('restore', Boolean(flags.json));
          try {
            const report = await restoreBackup(stores, path.resolve(bundle), {
              force: flags.force,
              yes: flags.yes,
              dryRun: flags.dryRun,
              confirm: process.stdin.isTTY ? askYes : undefined,
              log,
              signal: interrupt.signal,
              onProgress: progress.update,
            });
            progress.stop();
            if (flags.json) printJson({ ok: true, ...report });
            else printRestore(report);
          } finally {
            progress.stop();
          }
        }),
      ),
    );
}
