import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { PACKAGE_ROOT } from '../../src/paths.js';

/** The built CLI (`npm test` compiles dist/ first), run as an operator would run it. */
export const MGR_BIN = path.join(PACKAGE_ROOT, 'bin', 'mgr.js');

export interface MgrResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function spawnMgr(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess & { result: Promise<MgrResult> } {
  const child = spawn(process.execPath, [MGR_BIN, ...args], {
    env: { ...process.env, MGR_LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const result = new Promise<MgrResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return Object.assign(child, { result });
}

export function runMgr(args: string[], env: NodeJS.ProcessEnv = {}): Promise<MgrResult> {
  return spawnMgr(args, env).result;
}
