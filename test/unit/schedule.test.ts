import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MgrError } from '../../src/errors.js';
import {
  CRON_FILE_HEADER,
  cronFileText,
  crontabLine,
  installSchedule,
  parseCronEntry,
  removeSchedule,
  scheduleStatus,
  validateCronExpression,
  type ScheduleSpec,
} from '../../src/history/schedule.js';

const spec: ScheduleSpec = {
  at: '0 4 * * *',
  retention: '30d',
  mgrCommand: '/usr/bin/node /opt/mgr/bin/mgr.js',
  configPath: '/etc/backend.ai/manager.toml',
  logFile: '/var/log/mgr-clear-history.log',
};

function usageError(fn: () => unknown): MgrError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(MgrError);
    expect((e as MgrError).code).toBe('usage');
    return e as MgrError;
  }
  throw new Error('expected a usage error');
}

describe('validateCronExpression', () => {
  it.each([
    ['0 4 * * *', '0 4 * * *'],
    ['  0   4 * *  * ', '0 4 * * *'],
    ['*/15 2-5 * * mon-fri', '*/15 2-5 * * mon-fri'],
    ['30 1 1,15 * *', '30 1 1,15 * *'],
    ['@daily', '@daily'],
  ])('cron files accept %j', (expr, normalised) => {
    expect(validateCronExpression(expr, { seconds: false })).toBe(normalised);
  });

  it.each([
    ['0 4 * *', /4 fields/],
    ['* * * * * *', /6 fields/], // system cron has no seconds field
    ['61 4 * * *', /out of range/],
    ['0 25 * * *', /out of range/],
    ['bogus', /1 field/],
    ['', /1 field/],
    ['@reboot', /unknown preset/],
    ['0 0 31 2 *', /No execution date/], // February 31st never comes
  ])('cron files reject %j with the accepted forms', (expr, why) => {
    const e = usageError(() => validateCronExpression(expr, { seconds: false }));
    expect(e.message).toMatch(why);
    expect(e.message).toContain('five fields');
    expect(e.exitCode).toBe(2);
  });

  it('the in-process scheduler also takes six fields (seconds first)', () => {
    expect(validateCronExpression('* * * * * *', { seconds: true })).toBe('* * * * * *');
    expect(usageError(() => validateCronExpression('* * * * * * *', { seconds: true })).message).toMatch(/7 fields.*six with seconds/);
  });
});

describe('cron file and crontab line', () => {
  it('writes the header, SHELL, PATH and one root line calling mgr with -f, -r and --wait-lock', () => {
    expect(cronFileText(spec)).toBe(
      [
        CRON_FILE_HEADER,
        '# Deletes kernel history (PostgreSQL kernels rows and their Redis stat keys) older than the retention.',
        '# Change it with `mgr clear-history schedule install`, remove it with `mgr clear-history schedule remove`;',
        '# edits by hand are replaced by the next install.',
        'SHELL=/bin/sh',
        'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        '0 4 * * * root /usr/bin/node /opt/mgr/bin/mgr.js -f /etc/backend.ai/manager.toml clear-history -r 30d --wait-lock 600 >> /var/log/mgr-clear-history.log 2>&1',
        '',
      ].join('\n'),
    );
  });

  it('the crontab line has no user field', () => {
    expect(crontabLine(spec)).toBe(
      '0 4 * * * /usr/bin/node /opt/mgr/bin/mgr.js -f /etc/backend.ai/manager.toml clear-history -r 30d --wait-lock 600 >> /var/log/mgr-clear-history.log 2>&1',
    );
  });

  it("quotes paths for /bin/sh, escapes cron's % and makes the config path absolute", () => {
    const line = crontabLine({ ...spec, configPath: 'conf dir/manager.toml', logFile: "/var/log/it's 100%.log" });
    expect(line).toBe(
      `0 4 * * * /usr/bin/node /opt/mgr/bin/mgr.js -f '${path.resolve('conf dir/manager.toml')}' clear-history -r 30d --wait-lock 600 >> '/var/log/it'\\''s 100\\%.log' 2>&1`,
    );
  });

  it('refuses a bad retention or expression before writing anything', () => {
    expect(usageError(() => cronFileText({ ...spec, retention: '1.5yr' })).message).toMatch(/whole number/);
    expect(usageError(() => cronFileText({ ...spec, at: '0 4 * *' })).message).toMatch(/4 fields/);
  });

  it('parses its own line back', () => {
    const entry = parseCronEntry(cronFileText({ ...spec, at: '@daily', configPath: '/etc/my conf/manager.toml' }), true);
    expect(entry).toMatchObject({ at: '@daily', user: 'root', retention: '30d', configPath: '/etc/my conf/manager.toml' });
    expect(parseCronEntry(crontabLine(spec), false)).toMatchObject({ at: '0 4 * * *', user: undefined, retention: '30d', configPath: spec.configPath });
  });
});

describe('installSchedule / scheduleStatus / removeSchedule on a real directory', () => {
  let dir: string;
  let file: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'mgr-unit-cron-'));
    file = path.join(dir, 'mgr-clear-history');
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('installs (0644, exact text), is idempotent, replaces its own file, reports status and removes it', async () => {
    expect(await scheduleStatus(file)).toEqual({ path: file, installed: false, writtenByMgr: false, entry: undefined });

    const first = await installSchedule(spec, file);
    expect(first.changed).toBe(true);
    expect(await readFile(file, 'utf8')).toBe(cronFileText(spec));
    expect((await stat(file)).mode & 0o777).toBe(0o644);
    const mtime = (await stat(file)).mtimeMs;

    const again = await installSchedule(spec, file);
    expect(again.changed).toBe(false);
    expect((await stat(file)).mtimeMs).toBe(mtime);

    const changed = await installSchedule({ ...spec, retention: '90d', at: '15 3 * * *' }, file);
    expect(changed.changed).toBe(true);
    const st = await scheduleStatus(file);
    expect(st).toMatchObject({ installed: true, writtenByMgr: true, entry: { at: '15 3 * * *', user: 'root', retention: '90d', configPath: spec.configPath } });
    expect(await readdir(dir)).toEqual(['mgr-clear-history']); // no temp file left behind

    expect(await removeSchedule(file)).toEqual({ path: file, removed: true });
    expect(await readdir(dir)).toEqual([]);
    expect(await removeSchedule(file)).toEqual({ path: file, removed: false });
  });

  it('never replaces or removes a file mgr did not write', async () => {
    const foreign = '# my own job\n0 1 * * * root /usr/local/bin/backup\n';
    await writeFile(file, foreign);
    await expect(installSchedule(spec, file)).rejects.toMatchObject({ code: 'refused', message: expect.stringContaining('not written by mgr') });
    await expect(removeSchedule(file)).rejects.toMatchObject({ code: 'refused' });
    expect(await readFile(file, 'utf8')).toBe(foreign);
    expect(await scheduleStatus(file)).toMatchObject({ installed: true, writtenByMgr: false, entry: { at: '0 1 * * *', user: 'root', retention: undefined } });
  });

  it('refuses when the cron directory does not exist', async () => {
    await expect(installSchedule(spec, path.join(dir, 'no-cron.d', 'mgr-clear-history'))).rejects.toMatchObject({
      code: 'refused',
      message: expect.stringContaining('does not exist'),
    });
  });
});
