import { describe, expect, it } from 'vitest';
import { MgrError } from '../../src/errors.js';
import { cutoffFor, describeRetention, parseRetention } from '../../src/history/retention.js';

// The grammar is Backend.AI's TimeDuration (backend-ai.md §4.3): bare number = seconds; s m h d w
// with decimals; mo yr whole numbers, calendar arithmetic like dateutil's relativedelta.

const NOW = new Date('2025-06-15T12:00:00.250Z');
const cut = (text: string, now = NOW) => cutoffFor(parseRetention(text), now).toISOString();
const minus = (ms: number, now = NOW) => new Date(now.getTime() - ms).toISOString();

describe('parseRetention: accepted forms', () => {
  it.each([
    ['3600', 3600, 's'],
    ['1.5', 1.5, 's'],
    ['.5', 0.5, 's'],
    ['1e3', 1000, 's'],
    ['0', 0, 's'],
    ['30s', 30, 's'],
    ['30m', 30, 'm'],
    ['6h', 6, 'h'],
    ['3d', 3, 'd'],
    ['1.5d', 1.5, 'd'],
    ['2w', 2, 'w'],
    ['3mo', 3, 'mo'],
    ['1yr', 1, 'yr'],
    ['+2d', 2, 'd'],
    [' 30d ', 30, 'd'],
  ])('%j → %d %s', (text, amount, unit) => {
    const r = parseRetention(text);
    expect(r).toEqual({ text: text.trim(), amount, unit });
  });

  it('describes a retention in words', () => {
    expect(describeRetention(parseRetention('1yr'))).toBe('1 year');
    expect(describeRetention(parseRetention('1.5d'))).toBe('1.5 days');
  });
});

describe('cutoffFor: fixed-length units subtract exact durations from UTC now', () => {
  it.each([
    ['3600', 3_600_000],
    ['1.5', 1_500],
    ['30s', 30_000],
    ['30m', 1_800_000],
    ['6h', 21_600_000],
    ['1.5d', 129_600_000],
    ['2w', 1_209_600_000],
    ['0', 0],
  ])('%s', (text, ms) => {
    expect(cut(text)).toBe(minus(ms));
  });

  it('365d across a leap day is 365 × 24 h, not a calendar year', () => {
    expect(cut('365d', new Date('2024-03-01T00:00:00Z'))).toBe('2023-03-02T00:00:00.000Z');
    expect(cut('1yr', new Date('2024-03-01T00:00:00Z'))).toBe('2023-03-01T00:00:00.000Z');
  });
});

describe('cutoffFor: mo and yr are calendar months/years with the day clamped (relativedelta)', () => {
  it.each([
    ['1mo', '2024-03-31T10:20:30.456Z', '2024-02-29T10:20:30.456Z'], // leap February
    ['1mo', '2023-03-31T10:20:30.456Z', '2023-02-28T10:20:30.456Z'],
    ['3mo', '2024-05-31T00:00:00.000Z', '2024-02-29T00:00:00.000Z'],
    ['1mo', '2024-01-15T23:59:59.999Z', '2023-12-15T23:59:59.999Z'], // year wrap
    ['13mo', '2024-01-31T08:00:00.000Z', '2022-12-31T08:00:00.000Z'],
    ['1yr', '2024-02-29T12:00:00.000Z', '2023-02-28T12:00:00.000Z'],
    ['4yr', '2024-02-29T12:00:00.000Z', '2020-02-29T12:00:00.000Z'],
    ['1yr', '2025-06-15T12:00:00.250Z', '2024-06-15T12:00:00.250Z'],
    ['12mo', '2025-06-15T12:00:00.250Z', '2024-06-15T12:00:00.250Z'],
    ['0mo', '2025-06-15T12:00:00.250Z', '2025-06-15T12:00:00.250Z'],
    ['2024yr', '2025-06-15T12:00:00.000Z', '0001-06-15T12:00:00.000Z'], // years below 100 are not read as 19xx
  ])('%s before %s → %s', (text, now, expected) => {
    expect(cut(text, new Date(now))).toBe(expected);
  });
});

describe('parseRetention / cutoffFor: rejected forms are usage errors (exit 2) naming the accepted forms', () => {
  const rejects = (text: string, why: RegExp) => {
    let err: unknown;
    try {
      cut(text);
    } catch (e) {
      err = e;
    }
    expect(err, text).toBeInstanceOf(MgrError);
    const e = err as MgrError;
    expect(e.code).toBe('usage');
    expect(e.exitCode).toBe(2);
    expect(e.message).toMatch(why);
    expect(e.message).toContain('s, m, h, d, w');
    expect(e.message).toContain('mo, yr');
  };

  it.each([
    ['', /empty/],
    ['   ', /empty/],
    ['-1', /negative/],
    ['-1d', /negative/],
    ['-1yr', /negative/],
    ['1ms', /unknown unit "ms"/],
    ['1hr', /unknown unit "hr"/],
    ['1x', /unknown unit "x"/],
    ['5D', /unknown unit "D"/],
    ['1YR', /unknown unit "YR"/],
    ['1.5yr', /"yr" takes a whole number/],
    ['1.5mo', /"mo" takes a whole number/],
    ['abc', /unknown unit "bc"/],
    ['d', /"" is not a number/],
    ['yr', /"" is not a number/],
    ['1,5d', /"1,5" is not a number/],
    ['5.', /unknown unit "."/], // Python's TimeDuration rejects it too: the last character is not a digit
    ['1e3yr', /"yr" takes a whole number/],
    ['NaN', /unknown unit "aN"/],
    ['Infinity', /unknown unit "ty"/],
    ['inf', /unknown unit "nf"/],
    ['1e400', /too large/],
    ['1e400d', /too large/],
    ['99999999999999999999yr', /too large/],
  ])('%j', (text, why) => rejects(text, why));

  it.each(['2026yr', '99999999yr', '1e15d', '1e308', '30000mo'])('%s: a cutoff before the year 1 is an overflow', (text) => {
    rejects(text, /before the year 1/);
  });
});
