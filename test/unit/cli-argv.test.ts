import { describe, expect, it } from 'vitest';
import { commandName } from '../../src/cli/argv.js';

describe('commandName: which command group to load', () => {
  it.each([
    [['status'], 'status'],
    [['-f', 'x.toml', 'upgrade', 'plan'], 'upgrade'],
    [['--config', 'status', 'upgrade'], 'upgrade'], // a config file literally named "status"
    [['--config=x.toml', 'backup', 'list'], 'backup'],
    [['--log-level', 'debug', 'clear-history', '-r', '30d'], 'clear-history'],
    [['help', 'image'], 'image'],
    [['--help'], undefined],
    [['-V'], undefined],
    [[], undefined],
  ])('%j → %s', (argv, expected) => {
    expect(commandName(argv)).toBe(expected);
  });
});
