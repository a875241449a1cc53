import { execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Sweeps store servers that a SIGKILLed earlier run left behind under the test sandbox prefix
 * (matched on their working dir: Redis renames its process title). Each test file starts and
 * stops its own stores; this only cleans up after runs that could not.
 */
function sweep(): void {
  const prefix = path.join(os.tmpdir(), 'mgr-test-');
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (cwd.startsWith(prefix) && Number(pid) !== process.pid) process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* gone or not ours */
    }
  }
  try {
    execFileSync('sh', ['-c', `rm -rf ${prefix}*`]);
  } catch {
    /* nothing to remove */
  }
}

export default function setup(): () => void {
  sweep();
  return sweep;
}
