import { readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Sweeps store servers that a SIGKILLed earlier run left behind under the test sandbox prefix
 * (matched on their working dir: Redis renames its process title). A sandbox whose owner (the
 * test process that started it, in owner.pid) is still alive belongs to a run in progress and
 * is left alone, so two test runs on one machine do not kill each other's stores.
 */
const PREFIX = 'mgr-test-';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function orphanedSandboxes(): string[] {
  const root = os.tmpdir();
  return readdirSync(root)
    .filter((d) => d.startsWith(PREFIX))
    .map((d) => path.join(root, d))
    .filter((dir) => {
      try {
        return !alive(Number(readFileSync(path.join(dir, 'owner.pid'), 'utf8')));
      } catch {
        return true; // no owner file: not a live sandbox
      }
    });
}

function sweep(): void {
  const dirs = orphanedSandboxes();
  if (dirs.length === 0) return;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (dirs.some((d) => cwd === d || cwd.startsWith(d + '/')) && Number(pid) !== process.pid) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone or not ours */
    }
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

export default function setup(): () => void {
  sweep();
  return sweep;
}
