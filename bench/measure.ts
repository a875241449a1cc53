import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';

/** Shared measuring helpers for the benchmarks: wall time, peak RSS of a process, medians. */

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Runs fn `runs` times and returns every wall time in ms. */
export async function timeRuns(runs: number, fn: (i: number) => Promise<void>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn(i);
    out.push(performance.now() - t0);
  }
  return out;
}

/** Samples this process's RSS every `everyMs` while fn runs; returns fn's result and the peak (bytes). */
export async function withPeakRss<T>(fn: () => Promise<T>, everyMs = 20): Promise<{ result: T; peakRss: number }> {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, everyMs);
  try {
    const result = await fn();
    peak = Math.max(peak, process.memoryUsage.rss());
    return { result, peakRss: peak };
  } finally {
    clearInterval(timer);
  }
}

/** Runs a command to completion; returns wall ms and the child's peak RSS (VmHWM polled from /proc). */
export async function runCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ ms: number; code: number | null; stdout: string; stderr: string; peakRss: number }> {
  const t0 = performance.now();
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let peakRss = 0;
  const poll = setInterval(async () => {
    try {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
      const m = /VmHWM:\s+(\d+) kB/.exec(status);
      if (m) peakRss = Math.max(peakRss, Number(m[1]) * 1024);
    } catch {
      /* exited */
    }
  }, 25);
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearInterval(poll);
  return { ms: performance.now() - t0, code, stdout, stderr, peakRss };
}

/** Samples the 1-minute load average every `everyMs` until stopped: the machine is shared, so every figure says how busy it was. */
export function sampleLoad(everyMs = 5_000): { stop(): { mean: number; max: number } } {
  const samples = [os.loadavg()[0]!];
  const timer = setInterval(() => samples.push(os.loadavg()[0]!), everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      samples.push(os.loadavg()[0]!);
      return { mean: Math.round((samples.reduce((a, b) => a + b, 0) / samples.length) * 10) / 10, max: Math.round(Math.max(...samples) * 10) / 10 };
    },
  };
}
