import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MGR_VERSION, PACKAGE_ROOT } from '../src/paths.js';
import { PG_BIN } from '../src/sandbox/index.js';
import { sampleLoad } from './measure.js';
import { renderCharts, renderReport, type BenchResults, type Mode, type Section } from './report.js';

/**
 * `npm run bench`: every benchmark, each on its own sandbox of real stores, then bench/REPORT.md,
 * bench/results.json and the SVG charts.
 *
 *   node dist/bench/run.js [--quick] [--only NAME[,NAME…]] [--report-only]
 *
 * --quick runs small sizes (a smoke run of a minute or two); --only runs the named benchmarks and
 * keeps the other sections of results.json as they were (each section records its own mode,
 * sizes and date); --report-only rewrites REPORT.md and the charts from results.json.
 * results.json and the report are rewritten after every benchmark, so a run stopped half-way
 * keeps what it measured.
 */

const BENCH_DIR = path.join(PACKAGE_ROOT, 'bench');
const RESULTS_FILE = path.join(BENCH_DIR, 'results.json');
const REPORT_FILE = path.join(BENCH_DIR, 'REPORT.md');

type Benchmarks = BenchResults['benchmarks'];
type Name = keyof Benchmarks;
type ResultOf<N extends Name> = NonNullable<NonNullable<Benchmarks[N]>['result']>;

interface Plan<N extends Name> {
  sizes: string;
  repetitions: string;
  run: (log: (msg: string) => void) => Promise<ResultOf<N>>;
}

/** What each benchmark measures at each mode. Modules are imported when their benchmark runs. */
const PLANS: { [N in Name]: (mode: Mode) => Plan<N> } = {
  startup: (mode) => {
    const runs = mode === 'quick' ? 3 : 7;
    return {
      sizes: '`mgr --help` and `node -e 0`',
      repetitions: `${runs} each, interleaved`,
      run: async () => ({ runs, ...(await (await import('./startup.js')).benchStartup(runs)) }),
    };
  },

  images: (mode) => {
    const sizes = mode === 'quick' ? [1_000, 3_000, 10_000] : [10_000, 30_000, 100_000];
    const repetitions = mode === 'quick' ? 1 : 3;
    return {
      sizes: `${sizes.map((n) => n.toLocaleString('en-US')).join(' / ')} images`,
      repetitions: `${repetitions} (each seeds its own stores and runs the floor and the migration once per size)`,
      run: async (log) => {
        const { benchImageMigration } = await import('./images.js');
        const reps: Awaited<ReturnType<typeof benchImageMigration>>[] = [];
        for (let i = 0; i < repetitions; i++) {
          reps.push(await benchImageMigration({ sizes }));
          log(`repetition ${i + 1}/${repetitions}: ${reps.at(-1)!.sizes.map((s) => `${s.tags} tags ${s.ratioToFloor}×`).join(', ')}`);
        }
        return {
          points: sizes.map((_, i) => {
            const at = reps.map((r) => r.sizes[i]!);
            return {
              images: at[0]!.tags,
              mgrMs: at.map((s) => s.migration.totalMs),
              floorMs: at.map((s) => s.floor.totalMs),
              peakRssMiB: Math.max(...at.map((s) => s.migration.peakRssMiB)),
              floorPeakRssMiB: Math.max(...at.map((s) => s.floor.peakRssMiB)),
            };
          }),
          raw: reps,
        };
      },
    };
  },

  clearHistory: (mode) => {
    const points = mode === 'quick' ? [{ kernels: 5_000, runs: 1 }, { kernels: 10_000, runs: 1 }, { kernels: 20_000, runs: 1 }] : [{ kernels: 100_000, runs: 3 }, { kernels: 300_000, runs: 3 }, { kernels: 1_000_000, runs: 3 }];
    return {
      sizes: `${points.map((p) => p.kernels.toLocaleString('en-US')).join(' / ')} kernels`,
      repetitions: `one floor and ${points.map((p) => p.runs).join(' / ')} mgr runs per size, each on its own copy of the seeded database`,
      run: async (log) => {
        const { benchClearHistory } = await import('./clear-history.js');
        const { DEFAULT_BATCH_SIZE, DEFAULT_TARGET_STATEMENT_MS } = await import('../src/history/index.js');
        const results = [];
        for (const p of points) {
          // mgr's defaults, as `mgr clear-history` runs them (replicaRole: dependents deleted by mgr, not by the cascade triggers)
          const runs = Array.from({ length: p.runs }, () => ({ batchSize: DEFAULT_BATCH_SIZE, targetStatementMs: DEFAULT_TARGET_STATEMENT_MS, replicaRole: true }));
          results.push(await benchClearHistory({ kernels: p.kernels, runs, log }));
        }
        return { points: results };
      },
    };
  },

  rescan: (mode) => {
    const o = mode === 'quick' ? { repositories: 20, tagsPerRepository: 10 } : { repositories: 200, tagsPerRepository: 10 };
    const repetitions = mode === 'quick' ? 1 : 3;
    return {
      sizes: `${(o.repositories * o.tagsPerRepository).toLocaleString('en-US')} tags in ${o.repositories} repositories (and a tenth of them)`,
      repetitions: `${repetitions} (each with its own registry and push)`,
      run: async (log) => {
        const { benchRescan } = await import('./rescan.js');
        const repetitionsOut = [];
        for (let i = 0; i < repetitions; i++) {
          repetitionsOut.push(await benchRescan(o));
          log(`repetition ${i + 1}/${repetitions}: speed-up ${repetitionsOut.at(-1)!.speedupBehindProxy}× behind the proxy`);
        }
        return { repetitions: repetitionsOut };
      },
    };
  },

  upgrade: (mode) => {
    const o = mode === 'quick' ? { kernels: 20_000, images: 2_000, runs: 1 } : { kernels: 1_000_000, images: 100_000, runs: 3 };
    return {
      sizes: `${o.kernels.toLocaleString('en-US')} kernels + ${o.images.toLocaleString('en-US')} images`,
      repetitions: `${o.runs} mgr and ${o.runs} floor runs`,
      run: async (log) => (await import('./upgrade.js')).benchUpgrade({ ...o, log }),
    };
  },
};

/** Order of a full run: cheap first, so a failure late in the run still leaves most figures. */
const ORDER: Name[] = ['startup', 'rescan', 'images', 'upgrade', 'clearHistory'];

function versionOf(cmd: string, args: string[], pattern: RegExp): string {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return pattern.exec(out)?.[1] ?? out.split('\n')[0]!.trim();
  } catch (e) {
    return `unknown (${(e as Error).message.split('\n')[0]})`;
  }
}

function machine(): Pick<BenchResults, 'machine' | 'versions'> {
  const cpus = os.cpus();
  return {
    machine: {
      cpu: cpus[0]?.model.trim() ?? 'unknown',
      cores: cpus.length,
      memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
    },
    versions: {
      mgr: MGR_VERSION,
      node: process.version,
      PostgreSQL: versionOf(path.join(PG_BIN, 'postgres'), ['--version'], /\(PostgreSQL\) (\S+)/),
      Redis: versionOf('/usr/bin/redis-server', ['--version'], /v=(\S+)/),
      etcd: versionOf('/usr/bin/etcd', ['--version'], /etcd Version: (\S+)/),
      'docker-registry': versionOf('/usr/bin/docker-registry', ['--version'], /(\d+\.\d+\.\d+\S*)/),
    },
  };
}

async function writeOutputs(res: BenchResults): Promise<void> {
  await writeFile(RESULTS_FILE, JSON.stringify(res, null, 2) + '\n');
  await writeFile(REPORT_FILE, renderReport(res));
  for (const [file, svg] of Object.entries(renderCharts(res))) await writeFile(path.join(BENCH_DIR, file), svg);
}

async function main(): Promise<number> {
  const started = performance.now();
  const args = process.argv.slice(2);
  const { values } = parseArgs({
    args,
    options: { quick: { type: 'boolean' }, only: { type: 'string', multiple: true }, 'report-only': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(
      'usage: node dist/bench/run.js [--quick] [--only NAME[,NAME…]] [--report-only]\n' +
        `  benchmarks: ${ORDER.join(', ')}\n  writes bench/REPORT.md, bench/results.json and bench/*.svg\n`,
    );
    return 0;
  }
  const previous: BenchResults | undefined = existsSync(RESULTS_FILE) ? (JSON.parse(readFileSync(RESULTS_FILE, 'utf8')) as BenchResults) : undefined;
  if (values['report-only']) {
    if (!previous) throw new Error(`${RESULTS_FILE} does not exist: run the benchmarks first`);
    await writeOutputs(previous);
    return 0;
  }
  const only = (values.only ?? []).flatMap((s) => s.split(',')).filter(Boolean);
  const unknown = only.filter((n) => !ORDER.includes(n as Name));
  if (unknown.length) throw new Error(`unknown benchmark ${unknown.join(', ')}; known: ${ORDER.join(', ')}`);
  const names = only.length ? ORDER.filter((n) => only.includes(n)) : ORDER;
  const mode: Mode = values.quick ? 'quick' : 'full';

  const res: BenchResults = {
    generatedAt: new Date().toISOString(),
    ...machine(),
    invocations: [],
    benchmarks: { ...previous?.benchmarks },
  };
  const invocation = { args, startedAt: res.generatedAt, durationMs: 0, ran: [] as string[] };
  // Keep the invocations whose sections are still in the file.
  const kept = new Set(ORDER.filter((n) => !names.includes(n) && res.benchmarks[n]));
  res.invocations = [...(previous?.invocations ?? []).filter((inv) => inv.ran.some((n) => kept.has(n as Name))), invocation];
  let failures = 0;
  for (const name of names) {
    const plan = PLANS[name](mode) as Plan<Name>;
    const log = (msg: string) => process.stderr.write(`[bench ${name}] ${msg}\n`);
    log(`${mode}: ${plan.sizes}; ${plan.repetitions}`);
    const startedAt = new Date().toISOString();
    const t0 = performance.now();
    const load = sampleLoad();
    let section: Section<ResultOf<Name>>;
    try {
      const result = await plan.run(log);
      section = { mode, sizes: plan.sizes, repetitions: plan.repetitions, startedAt, durationMs: Math.round(performance.now() - t0), load: load.stop(), result };
    } catch (e) {
      failures++;
      const error = e instanceof Error ? (e.stack ?? e.message) : String(e);
      log(`FAILED: ${error}`);
      section = { mode, sizes: plan.sizes, repetitions: plan.repetitions, startedAt, durationMs: Math.round(performance.now() - t0), load: load.stop(), error };
    }
    (res.benchmarks as Record<Name, Section<unknown>>)[name] = section;
    invocation.ran.push(name);
    invocation.durationMs = Math.round(performance.now() - started);
    await writeOutputs(res);
    log(`done in ${Math.round(section.durationMs / 1000)} s; ${path.relative(process.cwd(), REPORT_FILE)} updated`);
  }
  process.stderr.write(`[bench] ${names.length} benchmarks in ${Math.round((performance.now() - started) / 1000)} s; ${failures} failed\n`);
  return failures ? 1 : 0;
}

process.exitCode = await main();
