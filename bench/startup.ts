import path from 'node:path';
import { PACKAGE_ROOT } from '../src/paths.js';
import { median, runCommand } from './measure.js';

/** `mgr --help` start-up against the floor `node -e 0`, medians of several runs. */
export async function benchStartup(runs = 7): Promise<{ nodeMs: number; mgrHelpMs: number; ratio: number }> {
  const node: number[] = [];
  const mgr: number[] = [];
  for (let i = 0; i < runs; i++) {
    node.push((await runCommand(process.execPath, ['-e', '0'])).ms);
    const r = await runCommand(process.execPath, [path.join(PACKAGE_ROOT, 'bin', 'mgr.js'), '--help']);
    if (r.code !== 0) throw new Error(`mgr --help exited ${r.code}: ${r.stderr}`);
    mgr.push(r.ms);
  }
  const nodeMs = median(node);
  const mgrHelpMs = median(mgr);
  return { nodeMs, mgrHelpMs, ratio: mgrHelpMs / nodeMs };
}
