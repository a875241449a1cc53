import type { ClearHistoryBenchResults } from './clear-history.js';
import type { ImageBenchResults } from './images.js';
import { median } from './measure.js';
import type { RescanBenchResults } from './rescan.js';
import type { UpgradeBenchResults } from './upgrade.js';

/**
 * bench/results.json (every figure of the last run of each benchmark) → bench/REPORT.md and the
 * SVG charts. Pure functions of the results: `node dist/bench/run.js --report-only` rewrites the
 * report from results.json without measuring anything.
 */

export type Mode = 'quick' | 'full';

export interface Section<T> {
  mode: Mode;
  /** What was measured at which size, in words (e.g. "10,000 / 30,000 / 100,000 images"). */
  sizes: string;
  /** How many times each figure was measured; medians are quoted. */
  repetitions: string;
  startedAt: string;
  durationMs: number;
  /** 1-minute load average sampled while it ran (the machine is shared, 2 cores). */
  load: { mean: number; max: number };
  result?: T;
  error?: string;
}

export interface StartupResults {
  runs: number;
  nodeMs: number;
  mgrHelpMs: number;
  ratio: number;
}

export interface ImagePoint {
  images: number;
  /** Wall time of every mgr migration run. */
  mgrMs: number[];
  /** Wall time of every floor run (raw etcd read + COPY). */
  floorMs: number[];
  /** Peak RSS (MiB) of the migration's process, the largest over the runs. */
  peakRssMiB: number;
  /** Peak RSS (MiB) of the floor's process, the largest over the runs. */
  floorPeakRssMiB: number;
}

export interface ImagesResults {
  points: ImagePoint[];
  /** bench/images.ts's return value of every repetition, as it came. */
  raw: ImageBenchResults[];
}

export interface RescanResults {
  repetitions: RescanBenchResults[];
}

export interface ClearHistoryResults {
  points: ClearHistoryBenchResults[];
}

export interface Invocation {
  args: string[];
  startedAt: string;
  durationMs: number;
  ran: string[];
}

export interface BenchResults {
  generatedAt: string;
  machine: { cpu: string; cores: number; memoryGiB: number; os: string };
  versions: Record<string, string>;
  /** The `run.js` invocations whose sections are in this file, oldest first: what each ran and how long it took. */
  invocations: Invocation[];
  benchmarks: {
    startup?: Section<StartupResults>;
    images?: Section<ImagesResults>;
    clearHistory?: Section<ClearHistoryResults>;
    rescan?: Section<RescanResults>;
    upgrade?: Section<UpgradeBenchResults>;
  };
}

export const CHARTS = { images: 'images-scaling.svg', clearHistory: 'clear-history-scaling.svg' } as const;

// ---------------------------------------------------------------------------------------------
// numbers

const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const int = (x: number) => Math.round(x).toLocaleString('en-US');
const secs = (ms: number) => (ms >= 10_000 ? `${r1(ms / 1000)} s` : ms >= 1000 ? `${r2(ms / 1000)} s` : `${Math.round(ms)} ms`);
const count = (n: number) => (n >= 1_000_000 && n % 1_000_000 === 0 ? `${n / 1_000_000}M` : n >= 1000 && n % 1000 === 0 ? `${n / 1000}k` : String(n));
const bytes = (n: number) => (n >= 2 ** 30 ? `${r2(n / 2 ** 30)} GiB` : `${Math.round(n / 2 ** 20)} MiB`);
const mark = (met: boolean) => (met ? 'met' : '**MISSED**');

function clearHistoryMedians(p: ClearHistoryBenchResults) {
  const wall = median(p.runs.map((r) => r.wallMs));
  return {
    wallMs: wall,
    ratio: r2(wall / p.floor.wallMs),
    longestStatementMs: Math.max(...p.runs.map((r) => r.longestStatementMs)),
    insertP99Ms: Math.max(...p.runs.map((r) => r.inserts.p99Ms)),
    insertMaxMs: Math.max(...p.runs.map((r) => r.inserts.maxMs)),
  };
}

function rescanMedians(reps: RescanBenchResults[]) {
  const wall = (registry: string, concurrency: number) =>
    median(reps.map((r) => r.runs.find((x) => x.registry === registry && x.concurrency === concurrency)!.wallMs));
  const farName = 'far';
  const first = reps[0]!;
  return {
    farDefaultMs: wall(farName, first.defaultConcurrency),
    farSerialMs: wall(farName, 1),
    nearDefaultMs: wall('near', first.defaultConcurrency),
    nearSerialMs: wall('near', 1),
    speedupBehindProxy: r2(median(reps.map((r) => r.speedupBehindProxy))),
    speedupLoopback: r2(median(reps.map((r) => r.speedupLoopback))),
    peakNone: Math.max(...reps.map((r) => r.peakRssMiBNoTags)),
    peak200: Math.max(...reps.map((r) => r.peakRssMiB200Tags)),
    peak2000: Math.max(...reps.map((r) => r.peakRssMiB2000Tags)),
  };
}

function imageRatio(p: ImagePoint): number {
  return r2(median(p.mgrMs) / median(p.floorMs));
}

// ---------------------------------------------------------------------------------------------
// REPORT.md

export function renderReport(res: BenchResults): string {
  const b = res.benchmarks;
  const L: string[] = [];
  L.push('# mgr benchmark report', '');
  L.push(
    `Written by \`npm run bench\` (\`bench/run.ts\`) on ${res.generatedAt}. Every figure is from a run on this machine with real`,
    'PostgreSQL, etcd, Redis and docker-registry servers started by the benchmark itself, and every ratio is against a floor',
    'measured in the same run. Raw numbers: `bench/results.json`. Each section says whether it comes from the full sizes or',
    'from `--quick`, how many repetitions it had, and how busy the (shared, 2-core) machine was while it ran.',
    'Figures are medians of the repetitions stated; "max" figures are the largest over all repetitions.',
    '',
    'Run it: `npm run bench` (full sizes), `node dist/bench/run.js --quick` (small sizes, a minute or two),',
    '`--only NAME[,NAME]` (startup, rescan, images, upgrade, clearHistory; other sections are kept),',
    '`--report-only` (rewrite this file and the charts from results.json).',
    '',
  );

  L.push('## Headline', '');
  L.push(...headline(res), '');

  L.push('## Machine and versions', '');
  L.push(`- CPU: ${res.machine.cpu}, ${res.machine.cores} cores; memory ${res.machine.memoryGiB} GiB; ${res.machine.os}`);
  L.push(`- Versions: ${Object.entries(res.versions).map(([k, v]) => `${k} ${v}`).join('; ')}`);
  for (const inv of res.invocations) {
    L.push(`- Run ${inv.startedAt}: \`node dist/bench/run.js${inv.args.map((a) => ` ${a}`).join('')}\` ran ${inv.ran.join(', ') || 'nothing'} in ${secs(inv.durationMs)}`);
  }
  L.push('', '| benchmark | sizes | mode | repetitions | started | took | load avg (mean / max) |', '|---|---|---|---|---|---|---|');
  for (const [name, s] of Object.entries(b) as [string, Section<unknown>][]) {
    L.push(`| ${name} | ${s.sizes} | ${s.mode} | ${s.repetitions} | ${s.startedAt.slice(0, 16).replace('T', ' ')} | ${secs(s.durationMs)} | ${s.load.mean} / ${s.load.max} |`);
  }
  L.push('');

  if (b.images) L.push(...imagesSection(b.images));
  if (b.clearHistory) L.push(...clearHistorySection(b.clearHistory));
  if (b.rescan) L.push(...rescanSection(b.rescan));
  if (b.upgrade) L.push(...upgradeSection(b.upgrade));
  if (b.startup) L.push(...startupSection(b.startup));
  return L.join('\n') + '\n';
}

function headline(res: BenchResults): string[] {
  const b = res.benchmarks;
  const out: string[] = [];
  const failed = (name: string, s: Section<unknown> | undefined) => {
    if (!s) out.push(`- ${name}: not measured.`);
    else if (s.error) out.push(`- ${name}: the benchmark FAILED: ${s.error.split('\n')[0]}`);
    return !s?.result;
  };
  const tag = (s: Section<unknown>) => (s.mode === 'quick' ? ' (quick sizes)' : '');
  if (!failed('Image migration', b.images)) {
    const pts = b.images!.result!.points;
    const big = pts[pts.length - 1]!;
    const small = pts[0]!;
    out.push(
      `- Image migration${tag(b.images!)}: ${count(big.images)} images in ${secs(median(big.mgrMs))} = **${imageRatio(big)}× the floor of bench/images.ts** (goal ≤ 1.5×: ${mark(imageRatio(big) <= 1.5)} on paper); ` +
        `${pts.map((p) => `${count(p.images)} ${imageRatio(p)}×`).join(', ')}. That floor's etcd read is quadratic on etcd 3.4 (see the caveat below), so the large-size ratios flatter mgr. ` +
        `Peak RSS ${small.peakRssMiB} MiB at ${count(small.images)} vs ${big.peakRssMiB} MiB at ${count(big.images)} images (${r2(big.peakRssMiB / small.peakRssMiB)}× for ${r2(big.images / small.images)}× the data).`,
    );
    const step = b.upgrade?.result?.steps.find((x) => x.id === '22.03/images-from-etcd');
    if (step?.floorMs) {
      const ratio = r2(step.mgrMs / step.floorMs);
      out.push(
        `- Image migration against a bounded-read floor${tag(b.upgrade!)} (inside the full upgrade, ${count(b.upgrade!.result!.images)} images): the images-from-etcd step takes ${secs(step.mgrMs)} vs ${secs(step.floorMs)} = **${ratio}×** (goal ≤ 1.5×: ${mark(ratio <= 1.5)}).`,
      );
    }
  }
  if (!failed('clear-history', b.clearHistory)) {
    const p = b.clearHistory!.result!.points.at(-1)!;
    const m = clearHistoryMedians(p);
    out.push(
      `- clear-history${tag(b.clearHistory!)}: ${count(p.kernels)} kernels (${int(p.doomedKernels)} past retention) in ${secs(m.wallMs)} = **${m.ratio}× the floor** ` +
        `(goal ≤ 2×: ${mark(m.ratio <= 2)}); longest statement ${r1(m.longestStatementMs)} ms (goal ≤ 200 ms: ${mark(m.longestStatementMs <= 200)}); ` +
        `concurrent inserts p99 ${m.insertP99Ms} ms, max ${m.insertMaxMs} ms (per run: ${p.runs.map((r) => r.inserts.maxMs).join(' / ')} ms; the floor's own max ${p.floor.inserts.maxMs} ms) (goal never blocked > 200 ms: ${mark(m.insertMaxMs <= 200)}).`,
    );
  }
  if (!failed('Image rescan', b.rescan)) {
    const m = rescanMedians(b.rescan!.result!.repetitions);
    const first = b.rescan!.result!.repetitions[0]!;
    out.push(
      `- Image rescan${tag(b.rescan!)}: default concurrency (${first.defaultConcurrency}) is **${m.speedupBehindProxy}× faster than concurrency 1 behind a ${first.proxyDelayMs} ms proxy** ` +
        `(goal ≥ 8×: ${mark(m.speedupBehindProxy >= 8)}), ${m.speedupLoopback}× on loopback; peak RSS ${m.peak200} MiB at ${first.tags / 10} tags, ${m.peak2000} MiB at ${first.tags} tags (${m.peakNone} MiB with none).`,
    );
  }
  if (!failed('Full upgrade', b.upgrade)) {
    const u = b.upgrade!.result!;
    out.push(
      `- Full upgrade 21.03 → 22.03${tag(b.upgrade!)} of ${count(u.kernels)} kernels + ${count(u.images)} images: ${secs(u.medianMgrWallMs)} = **${u.ratio}× the floor** (${secs(u.medianFloorMs)}; no goal was set). Peak RSS ${Math.max(...u.mgrPeakRssMiB)} MiB.`,
    );
  }
  if (!failed('Start-up', b.startup)) {
    const s = b.startup!.result!;
    out.push(`- Start-up: \`mgr --help\` ${Math.round(s.mgrHelpMs)} ms vs \`node -e 0\` ${Math.round(s.nodeMs)} ms (**${r2(s.ratio)}×**, no goal was set).`);
  }
  return out;
}

function sectionHeader(title: string, s: Section<unknown>, floor: string): string[] {
  const L = [`## ${title}`, ''];
  L.push(`Sizes: ${s.sizes} (${s.mode}). Repetitions: ${s.repetitions}. Took ${secs(s.durationMs)}; load average ${s.load.mean} mean, ${s.load.max} max.`, '');
  if (floor) L.push(`Floor: ${floor}`, '');
  if (s.error) L.push('**The benchmark failed:**', '', '```', s.error, '```', '');
  return L;
}

function imagesSection(s: Section<ImagesResults>): string[] {
  const L = sectionHeader(
    'Image migration (etcd → images / image_aliases)',
    s,
    'a raw paged read of the same etcd keys plus a COPY of the same rows into an empty `images` table, measured in the same run.',
  );
  if (!s.result) return L;
  L.push(
    'The migration is what the 22.03 step runs inline: enqueue (the counting scan of images/ that pins a revision and records range fences) and `runBackgroundMigrations` with 2 workers to the end, integrity check included. Floor and migration each run in a child process of their own on the same stores; peak RSS is that process\'s VmHWM.',
    '',
    '| images | mgr (median) | floor (median) | ratio | peak RSS mgr / floor | mgr runs (ms) | floor runs (ms) |',
    '|---:|---:|---:|---:|---:|---|---|',
  );
  for (const p of s.result.points) {
    L.push(
      `| ${int(p.images)} | ${secs(median(p.mgrMs))} | ${secs(median(p.floorMs))} | ${imageRatio(p)}× | ${p.peakRssMiB} / ${p.floorPeakRssMiB} MiB | ${p.mgrMs.map(int).join(', ')} | ${p.floorMs.map(int).join(', ')} |`,
    );
  }
  const pts = s.result.points;
  L.push('', `Memory: the migration's peak RSS grows ${r2(pts.at(-1)!.peakRssMiB / pts[0]!.peakRssMiB)}× from ${count(pts[0]!.images)} to ${count(pts.at(-1)!.images)} images (${r2(pts.at(-1)!.images / pts[0]!.images)}× the data).`);
  const parts = pts.map((p, i) => {
    const at = s.result!.raw.map((r) => r.sizes[i]!);
    return { p, read: median(at.map((x) => x.floor.etcdReadMs)), copy: median(at.map((x) => x.floor.copyMs)), enqueue: median(at.map((x) => x.migration.enqueueMs)), run: median(at.map((x) => x.migration.runMs)) };
  });
  L.push(
    '',
    'Where the time goes (medians):',
    '',
    '| images | floor: etcd read | floor: COPY | mgr: enqueue (count scan + fences) | mgr: batches (2 workers) + aliases + check |',
    '|---:|---:|---:|---:|---:|',
    ...parts.map((x) => `| ${int(x.p.images)} | ${secs(x.read)} | ${secs(x.copy)} | ${secs(x.enqueue)} | ${secs(x.run)} |`),
    '',
    "Caveat on this floor: its etcd read pages over the whole images/ prefix with a limit of 10,000 keys. etcd 3.4 walks its index to the END of the requested range on every request, so that read grows with the square of the keys (see the etcd read column), while mgr bounds every read by fences recorded at enqueue. At the larger sizes the floor's read is therefore slower than mgr's whole migration and the ratio drops below 1×: it says mgr avoids that trap, not that mgr beats the minimum. The full-upgrade section below measures the same copy against a floor that reads etcd in bounded ranges.",
  );
  const upsert = s.result.raw[0]?.upsert;
  if (upsert) {
    L.push(
      '',
      `How a batch of ${int(upsert.batchRows)} rows is written (${int(upsert.rows)} rows, median of 3, into an empty table / over the same rows): ` +
        `multi-row VALUES ${secs(upsert.valuesParams.insertMs)} / ${secs(upsert.valuesParams.updateMs)}; ` +
        `one jsonb parameter (what mgr uses) ${secs(upsert.jsonbRecordset.insertMs)} / ${secs(upsert.jsonbRecordset.updateMs)}; ` +
        `COPY into a temp table + merge ${secs(upsert.copyMerge.insertMs)} / ${secs(upsert.copyMerge.updateMs)}.`,
    );
  }
  L.push('', `![migration time against size](${CHARTS.images})`, '');
  return L;
}

function clearHistorySection(s: Section<ClearHistoryResults>): string[] {
  const L = sectionHeader(
    'clear-history (kernels past retention, their dependent rows and stat keys)',
    s,
    'one `DELETE FROM kernels WHERE terminated_at < cutoff` (what Backend.AI runs) plus one UNLINK pass over the same stat keys in pipelined chunks of 1,000, on a copy of the same database. Half of the terminated kernels are past the retention. A second connection inserts a kernel every ~10 ms during every run.',
  );
  if (!s.result) return L;
  L.push(
    '| kernels | deleted | floor (DELETE + UNLINK) | mgr (median) | ratio | cascade | batches | longest statement | inserts p50 / p99 / max (mgr) | inserts max (floor) | mgr runs (ms) |',
    '|---:|---:|---:|---:|---:|---|---:|---:|---|---:|---|',
  );
  for (const p of s.result.points) {
    const m = clearHistoryMedians(p);
    const run = p.runs[0]!;
    L.push(
      `| ${int(p.kernels)} | ${int(p.doomedKernels)} | ${secs(p.floor.wallMs)} (${secs(p.floor.deleteMs)} + ${secs(p.floor.unlinkMs)}) | ${secs(m.wallMs)} | ${m.ratio}× | ${run.cascadeMode} | ${run.batches} | ${r1(m.longestStatementMs)} ms | ` +
        `${Math.max(...p.runs.map((r) => r.inserts.p50Ms))} / ${m.insertP99Ms} / ${m.insertMaxMs} ms | ${p.floor.inserts.maxMs} ms | ${p.runs.map((r) => int(r.wallMs)).join(', ')} |`,
    );
  }
  const last = s.result.points.at(-1)!;
  L.push(
    '',
    `Each size seeds its own installation (${int(last.vfolderAttachmentRows)} vfolder_attachment rows at ${count(last.kernels)} kernels). ` +
      `Deleting a kernel fires Backend.AI's ON DELETE CASCADE on vfolder_attachment, which has no index on \`kernel\`: every kernel the floor deletes scans that table, ` +
      `so the floor grows with kernels × attachments (about quadratically when both grow with the installation). ` +
      `mgr's cascade mode "explicit" deletes the dependent rows itself, batch by batch, with the per-row cascade triggers skipped (session_replication_role = replica); "triggers" lets them fire as the floor does. ` +
      `VACUUM (ANALYZE) after the last run took ${secs(last.vacuumMs)} (not in the timed part). Batch size ${last.runs[0]!.batchSize}, statement target ${last.runs[0]!.targetStatementMs} ms.`,
    '',
    `![purge time against size](${CHARTS.clearHistory})`,
    '',
  );
  return L;
}

function rescanSection(s: Section<RescanResults>): string[] {
  const L = sectionHeader(
    'Image rescan (registry → images)',
    s,
    'the same CLI at concurrency 1 (the speed-up is serial time / default-concurrency time).',
  );
  if (!s.result) return L;
  const m = rescanMedians(s.result.repetitions);
  const first = s.result.repetitions[0]!;
  L.push(
    `${first.tags} tags in ${first.repositories} repositories of a real docker-registry; every run is \`mgr image rescan --json\` in its own process on an empty images table.`,
    '',
    '| registry | concurrency | wall (median) | speed-up |',
    '|---|---:|---:|---:|',
    `| behind a ${first.proxyDelayMs} ms proxy | ${first.defaultConcurrency} | ${secs(m.farDefaultMs)} | ${m.speedupBehindProxy}× |`,
    `| behind a ${first.proxyDelayMs} ms proxy | 1 | ${secs(m.farSerialMs)} | 1× |`,
    `| loopback | ${first.defaultConcurrency} | ${secs(m.nearDefaultMs)} | ${m.speedupLoopback}× |`,
    `| loopback | 1 | ${secs(m.nearSerialMs)} | 1× |`,
    '',
    `Peak RSS of the mgr process: ${m.peakNone} MiB with no tags (node, drivers, stores), ${m.peak200} MiB at ${first.tags / 10} tags, ${m.peak2000} MiB at ${first.tags} tags (largest over the repetitions).`,
    '',
  );
  return L;
}

function upgradeSection(s: Section<UpgradeBenchResults>): string[] {
  const L = sectionHeader(
    'Full upgrade 21.03 → 21.09 → 22.03',
    s,
    'the unavoidable work by hand, step by step: the same schema SQL files run as they are; one read of every etcd images/ key and value (one unlimited range read per 2,000 keys, between boundaries found beforehand and not timed) plus a COPY of the same images and image_aliases rows; one GROUP BY over kernels plus one MSET for the concurrency counters; CONFIG SET appendonly yes and the wait for its rewrite. Config-only steps (manager.toml edit, schedule, checks) have a floor of nothing. The pre-upgrade backup is left out of both (`--no-backup`).',
  );
  if (!s.result) return L;
  const u = s.result;
  L.push(
    `Seeded with \`seedInstallation\` (${int(u.kernels)} kernels, ${int(u.images)} image tags, ${int(u.aliases)} aliases, ${int(u.statKeys)} Redis keys with a stat key for every kernel; database ${bytes(u.databaseBytes)}; seeding took ${secs(u.seedMs)}). ` +
      'Every run is `mgr upgrade --yes --json --no-backup --no-schedule --force` in its own process on a fresh copy of the seeded database (--force: the seed leaves fresh agent heartbeats).',
    '',
    `mgr: ${secs(u.medianMgrWallMs)} median wall (runs: ${u.mgrWallMs.map(int).join(', ')} ms; the report's own duration ${u.mgrReportMs.map(int).join(', ')} ms); floor ${secs(u.medianFloorMs)} (runs: ${u.floorMs.map(int).join(', ')} ms); **ratio ${u.ratio}×**; peak RSS ${u.mgrPeakRssMiB.join(', ')} MiB.`,
    '',
    '| step | kind | mgr (median) | floor (median) |',
    '|---|---|---:|---:|',
    ...u.steps.map((st) => `| ${st.id} | ${st.kind} | ${secs(st.mgrMs)} | ${st.floorMs === null ? '—' : secs(st.floorMs)} |`),
    '',
    `Where mgr spends most beyond the floor: ${[...u.steps]
      .sort((a, b) => b.mgrMs - (b.floorMs ?? 0) - (a.mgrMs - (a.floorMs ?? 0)))
      .slice(0, 3)
      .map((st) => `${st.id} ${secs(st.mgrMs)} vs ${st.floorMs === null ? 'no floor' : secs(st.floorMs)}`)
      .join('; ')}.`,
    '',
    `The images-from-etcd floor: etcd read ${u.floorImageReadMs.map(int).join(', ')} ms, COPY ${u.floorImageCopyMs.map(int).join(', ')} ms.`,
    '',
    `The steps add up to ${secs(u.steps.reduce((a, st) => a + st.mgrMs, 0))}; the rest of the wall time is process start-up, preflight, the upgrade lock, maintenance mode and the before/after counts of every table and key space.`,
    '',
  );
  return L;
}

function startupSection(s: Section<StartupResults>): string[] {
  const L = sectionHeader('Start-up', s, '`node -e 0` on the same node binary.');
  if (!s.result) return L;
  const r = s.result;
  L.push(`\`mgr --help\`: ${Math.round(r.mgrHelpMs)} ms median; \`node -e 0\`: ${Math.round(r.nodeMs)} ms median; ratio ${r2(r.ratio)}× (${r.runs} runs each, interleaved).`, '');
  return L;
}

// ---------------------------------------------------------------------------------------------
// SVG charts (hand-written: no chart library)

export interface ChartSeries {
  name: string;
  color: string;
  points: { x: number; y: number }[];
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  xFormat?: (x: number) => string;
  /** Logarithmic y axis, for series that differ by orders of magnitude. */
  yLog?: boolean;
}

/** Steps of 1, 2 or 5 × 10^n giving at most ~6 ticks from 0 to past max. */
function ticks(max: number): number[] {
  if (max <= 0) return [0, 1];
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = 0; v < max + step; v += step) out.push(Math.round(v * 1e6) / 1e6);
  return out;
}

/** 1, 2, 5 × 10^n from below min to past max, for a logarithmic axis. */
function logTicks(min: number, max: number): number[] {
  const out: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) out.push(Number((m * 10 ** e).toPrecision(1)));
  }
  const lo = out.filter((v) => v <= min).at(-1) ?? out[0]!;
  const hi = out.find((v) => v >= max) ?? out.at(-1)!;
  return out.filter((v) => v >= lo && v <= hi);
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function renderLineChart(c: LineChart): string {
  const W = 720;
  const H = 420;
  const m = { left: 80, right: 250, top: 50, bottom: 60 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all = c.series.flatMap((s) => s.points);
  const xt = ticks(Math.max(...all.map((p) => p.x)));
  const yt = c.yLog ? logTicks(Math.min(...all.map((p) => p.y)), Math.max(...all.map((p) => p.y))) : ticks(Math.max(...all.map((p) => p.y)));
  const xMax = xt.at(-1)!;
  const X = (x: number) => m.left + (x / xMax) * pw;
  const [y0, y1] = c.yLog ? [Math.log10(yt[0]!), Math.log10(yt.at(-1)!)] : [0, yt.at(-1)!];
  const Y = (y: number) => m.top + ph - (((c.yLog ? Math.log10(y) : y) - y0) / (y1 - y0)) * ph;
  const fx = c.xFormat ?? ((x: number) => String(x));
  const o: string[] = [];
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  o.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  o.push(`<text x="${W / 2 - m.right / 2 + m.left / 2}" y="26" text-anchor="middle" font-size="15" font-weight="bold">${esc(c.title)}</text>`);
  for (const v of yt) {
    o.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${r1(Y(v))}" y2="${r1(Y(v))}" stroke="#e4e4e4"/>`);
    o.push(`<text x="${m.left - 8}" y="${r1(Y(v) + 4)}" text-anchor="end">${esc(String(v))}</text>`);
  }
  for (const v of xt) {
    o.push(`<line x1="${r1(X(v))}" x2="${r1(X(v))}" y1="${m.top + ph}" y2="${m.top + ph + 5}" stroke="black"/>`);
    o.push(`<text x="${r1(X(v))}" y="${m.top + ph + 20}" text-anchor="middle">${esc(fx(v))}</text>`);
  }
  o.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${m.top + ph}" y2="${m.top + ph}" stroke="black"/>`);
  o.push(`<line x1="${m.left}" x2="${m.left}" y1="${m.top}" y2="${m.top + ph}" stroke="black"/>`);
  o.push(`<text x="${m.left + pw / 2}" y="${H - 15}" text-anchor="middle">${esc(c.xLabel)}</text>`);
  o.push(`<text transform="translate(20 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(c.yLabel)}</text>`);
  for (const [i, s] of c.series.entries()) {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    o.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${r1(X(p.x))},${r1(Y(p.y))}`).join(' ')}"/>`);
    for (const p of pts) {
      o.push(`<circle cx="${r1(X(p.x))}" cy="${r1(Y(p.y))}" r="4" fill="${s.color}"/>`);
      o.push(`<text x="${r1(X(p.x)) + 6}" y="${r1(Y(p.y)) - 6}" fill="${s.color}" font-size="11">${esc(String(p.y >= 10 ? r1(p.y) : r2(p.y)))}</text>`);
    }
    const ly = m.top + 10 + i * 20;
    o.push(`<line x1="${m.left + pw + 50}" x2="${m.left + pw + 70}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2"/>`);
    o.push(`<text x="${m.left + pw + 76}" y="${ly + 4}">${esc(s.name)}</text>`);
  }
  o.push('</svg>');
  return o.join('\n') + '\n';
}

/** The charts the results allow: file name → SVG text. */
export function renderCharts(res: BenchResults): Record<string, string> {
  const out: Record<string, string> = {};
  const img = res.benchmarks.images?.result;
  if (img && img.points.length) {
    out[CHARTS.images] = renderLineChart({
      title: `Image migration: time against size${res.benchmarks.images!.mode === 'quick' ? ' (quick sizes)' : ''}`,
      xLabel: 'image tags in etcd',
      yLabel: 'seconds (median)',
      xFormat: count,
      series: [
        { name: 'mgr migration', color: '#c0392b', points: img.points.map((p) => ({ x: p.images, y: median(p.mgrMs) / 1000 })) },
        { name: 'floor (paged read + COPY)', color: '#2471a3', points: img.points.map((p) => ({ x: p.images, y: median(p.floorMs) / 1000 })) },
      ],
    });
  }
  const ch = res.benchmarks.clearHistory?.result;
  if (ch && ch.points.length) {
    out[CHARTS.clearHistory] = renderLineChart({
      title: `clear-history: purge time against size${res.benchmarks.clearHistory!.mode === 'quick' ? ' (quick sizes)' : ''}`,
      xLabel: 'kernels in the database (half of the terminated ones past retention)',
      yLabel: 'seconds (logarithmic)',
      yLog: true,
      xFormat: count,
      series: [
        { name: 'mgr clear-history', color: '#c0392b', points: ch.points.map((p) => ({ x: p.kernels, y: median(p.runs.map((r) => r.wallMs)) / 1000 })) },
        { name: 'floor (DELETE + UNLINK)', color: '#2471a3', points: ch.points.map((p) => ({ x: p.kernels, y: p.floor.wallMs / 1000 })) },
      ],
    });
  }
  return out;
}
