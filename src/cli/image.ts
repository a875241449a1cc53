import { Command, Option } from 'commander';
import { EXIT } from '../errors.js';
import { parseRegistryArgument, rescanImages, type RescanReport } from '../images/rescan.js';
import { DEFAULT_REGISTRY_CONCURRENCY } from '../images/registry-client.js';
import { action, dryRunOption, interrupt, jsonOption, out, positiveInt, printJson, progressReporter, withStores } from './common.js';

interface RescanFlags {
  concurrency: number;
  dryRun?: boolean;
  prune?: boolean;
  json?: boolean;
}

export function registerImage(program: Command): void {
  const image = program.command('image').description('container images known to the manager (the 22.03 images table)');
  image
    .command('rescan')
    .description(
      'read the registries configured in etcd (config/docker/registry) over the registry HTTP API and ' +
        'update the images table: new tags are added, changed ones updated, unchanged rows left alone, ' +
        'hand-set max limits kept. Nothing is deleted unless --prune.',
    )
    .argument('[registry]', 'REGISTRY or REGISTRY/PROJECT (the etcd registry name; default: every registry)')
    .addOption(
      new Option('--concurrency <n>', 'registry requests in flight per registry')
        .argParser(positiveInt('--concurrency'))
        .default(DEFAULT_REGISTRY_CONCURRENCY),
    )
    .addOption(dryRunOption())
    .option('--prune', 'also delete rows (and their aliases) of the scanned registry/project that the registry no longer has; refused during maintenance')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      '\nExit codes: 0 all scanned, 3 unknown registry or bad etcd config, 5 refused (--prune during maintenance),\n' +
        '8 partial (a registry, repository or image failed; everything else was saved).\n\n' +
        'Examples:\n  mgr image rescan\n  mgr image rescan cr.backend.ai/stable --dry-run\n  mgr image rescan cr.backend.ai --prune --dry-run --json',
    )
    .action(
      action(async (arg: string | undefined, flags: RescanFlags, cmd: Command) => {
        const { registry, project } = parseRegistryArgument(arg);
        const bar = progressReporter('rescan', { json: flags.json });
        let report: RescanReport;
        try {
          report = await withStores(cmd, (stores, log) =>
            rescanImages(stores, {
              registry,
              project,
              concurrency: flags.concurrency,
              dryRun: flags.dryRun,
              prune: flags.prune,
              signal: interrupt.signal,
              onProgress: (p) => bar.update(p),
              log,
            }),
          );
        } finally {
          bar.stop();
        }
        if (flags.json) printJson({ ok: report.totals.failed === 0, ...report });
        else printSummary(report);
        return report.totals.failed > 0 ? EXIT.partial : EXIT.ok;
      }),
    );
}

/** Skipped refs printed per reason; a registry full of non-kernel images stays readable. */
const SKIPPED_SHOWN = 5;

function groupBy<T>(items: T[], key: (t: T) => string): Map<string, T[]> {
  const m = new Map<string, T[]>();
  for (const it of items) m.set(key(it), [...(m.get(key(it)) ?? []), it]);
  return m;
}

function printSummary(report: RescanReport): void {
  const would = report.dryRun ? ' (dry run: nothing written)' : '';
  for (const r of report.perRegistry) {
    const scope = r.projects.length ? ` [${r.projects.join(', ')}]` : '';
    const pruneWord = report.dryRun ? 'would prune' : 'pruned';
    out(
      `${r.name}${scope}: ${r.added} added, ${r.updated} updated, ${r.unchanged} unchanged, ${r.skipped.length} skipped, ${r.failed.length} failed` +
        (report.prune ? `, ${r.pruned.length} ${pruneWord}` : '') +
        would,
    );
    for (const [reason, refs] of groupBy(r.skipped, (s) => s.reason)) {
      const shown = refs.slice(0, SKIPPED_SHOWN).map((s) => s.ref).join(', ');
      out(`  skipped ${refs.length} (${reason}): ${shown}${refs.length > SKIPPED_SHOWN ? `, … ${refs.length - SKIPPED_SHOWN} more (--json lists all)` : ''}`);
    }
    for (const f of r.failed) out(`  FAILED ${f.ref ?? `registry ${f.registry}`}: ${f.reason}`);
    for (const p of r.pruned) out(`  ${pruneWord} ${p.ref} (${p.architecture})${p.aliases.length ? ` with aliases ${p.aliases.join(', ')}` : ''}`);
    for (const n of r.notes) out(`  note: ${n}`);
  }
  const t = report.totals;
  out(`total: ${t.added} added, ${t.updated} updated, ${t.unchanged} unchanged, ${t.skipped} skipped, ${t.failed} failed${report.prune ? `, ${t.pruned} ${report.dryRun ? 'would be pruned' : 'pruned'}` : ''}${would}`);
}
