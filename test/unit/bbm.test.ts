import { describe, expect, it } from 'vitest';
import { MIGRATION_STATUS, progressPct, statusName, unfinishedError, type RunSummary } from '../../src/bbm/index.js';

describe('background migration bookkeeping (pure)', () => {
  it('never shows 100% before the migration is finished, even when the estimate was too low', () => {
    expect(progressPct(0, 1000, false)).toBe(0);
    expect(progressPct(456, 1000, false)).toBe(45.6);
    expect(progressPct(999_999, 1_000_000, false)).toBe(99.9);
    expect(progressPct(1000, 1000, false)).toBe(99.9);
    expect(progressPct(5000, 1000, false)).toBe(99.9);
    expect(progressPct(10, 0, false)).toBe(0);
    expect(progressPct(10, null, false)).toBe(0);
    expect(progressPct(1000, 1000, true)).toBe(100);
    expect(progressPct(0, 0, true)).toBe(100);
  });

  it("names GitLab's status values", () => {
    expect(MIGRATION_STATUS).toEqual({ paused: 0, active: 1, finished: 2, failed: 3, running: 4 });
    expect([0, 1, 2, 3, 4, 9].map(statusName)).toEqual(['paused', 'active', 'finished', 'failed', 'running', 'unknown']);
  });

  it('turns an unfinished run into the error an upgrade step throws, with the command that finishes it', () => {
    const base = { name: 'm', progressPct: 40, failureError: null } as RunSummary['migrations'][number];
    const cmd = 'mgr -f /etc/backend.ai/manager.toml background-migrate run m';
    expect(unfinishedError({ outcome: 'finished', migrations: [{ ...base, status: 'finished' }] }, cmd)).toBeUndefined();
    const paused = unfinishedError({ outcome: 'paused', migrations: [{ ...base, status: 'paused' }] }, cmd)!;
    expect([paused.code, paused.exitCode, paused.hint]).toEqual(['pending', 10, `finish it with: ${cmd}`]);
    const failed = unfinishedError({ outcome: 'failed', migrations: [{ ...base, status: 'failed', failureError: 'boom' }] }, cmd)!;
    expect([failed.code, failed.exitCode]).toEqual(['stepFailed', 7]);
    expect(failed.message).toMatch(/m is failed at 40% \(boom\)/);
    expect(unfinishedError({ outcome: 'interrupted', migrations: [{ ...base, status: 'running' }] }, cmd)!.code).toBe('interrupted');
  });
});
