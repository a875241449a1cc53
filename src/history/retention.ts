import { MgrError } from '../errors.js';

/**
 * Backend.AI's retention grammar (`TimeDuration` in common/validators.py, backend-ai.md §4.3):
 * a bare number is seconds; s m h d w take decimals; mo and yr take whole numbers and are
 * calendar months/years (relativedelta). Unlike Backend.AI, the cutoff is taken from an aware
 * UTC "now", never naive local time.
 */
export type RetentionUnit = 's' | 'm' | 'h' | 'd' | 'w' | 'mo' | 'yr';

export interface Retention {
  /** The text as given (trimmed), for logs and cron lines. */
  text: string;
  amount: number;
  unit: RetentionUnit;
}

export const RETENTION_FORMS =
  'a number of seconds (3600, 1.5), or a number with a unit: s, m, h, d, w (decimals allowed: 30m, 1.5d, 2w) or mo, yr (whole numbers only: 3mo, 1yr)';

const SECONDS_PER: Record<'s' | 'm' | 'h' | 'd' | 'w', number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };

// Python float() literals without inf/nan: digits with an optional fraction and exponent.
const DECIMAL = /^\+?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const WHOLE = /^\+?\d+$/;

/** Python and PostgreSQL have no year 0: the earliest cutoff mgr will compute is 0001-01-01. */
const EARLIEST_CUTOFF_MS = Date.parse('0001-01-01T00:00:00Z');

export function parseRetention(input: string): Retention {
  const text = input.trim();
  const fail = (why: string): never => {
    throw new MgrError('usage', `invalid retention ${JSON.stringify(input)}: ${why}; expected ${RETENTION_FORMS}`, {
      hint: 'e.g. -r 30d (30 days), -r 6h, -r 3mo, -r 1yr',
    });
  };
  if (text === '') fail('it is empty');
  if (text.startsWith('-')) fail('negative durations are not allowed');
  const last = text.at(-1)!;
  if (/\d/.test(last)) {
    return { text, amount: decimal(text, fail), unit: 's' };
  }
  if (/^[A-Za-z]{2}$/.test(text.slice(-2))) {
    const unit = text.slice(-2);
    if (unit !== 'mo' && unit !== 'yr') fail(`unknown unit "${unit}"`);
    const num = text.slice(0, -2).trim();
    if (!WHOLE.test(num)) fail(DECIMAL.test(num) ? `"${unit}" takes a whole number` : `"${num}" is not a number`);
    const amount = Number(num);
    if (!Number.isSafeInteger(amount)) fail('the number is too large');
    return { text, amount, unit: unit as 'mo' | 'yr' };
  }
  if (!(last in SECONDS_PER)) fail(`unknown unit "${last}"`);
  return { text, amount: decimal(text.slice(0, -1), fail), unit: last as keyof typeof SECONDS_PER };
}

function decimal(raw: string, fail: (why: string) => never): number {
  const num = raw.trim();
  if (!DECIMAL.test(num)) fail(`"${num}" is not a number`);
  const n = Number(num);
  if (!Number.isFinite(n)) fail('the number is too large');
  return n;
}

/** The instant before which history goes: `now` minus the retention, in UTC. */
export function cutoffFor(retention: Retention, now: Date): Date {
  let ms: number;
  if (retention.unit === 'mo' || retention.unit === 'yr') {
    ms = minusMonths(now, retention.unit === 'yr' ? retention.amount * 12 : retention.amount);
  } else {
    ms = now.getTime() - Math.round(retention.amount * SECONDS_PER[retention.unit] * 1000);
  }
  if (!Number.isFinite(ms) || ms < EARLIEST_CUTOFF_MS) {
    throw new MgrError('usage', `invalid retention ${JSON.stringify(retention.text)}: the cutoff would fall before the year 1; expected ${RETENTION_FORMS}`);
  }
  return new Date(ms);
}

/** relativedelta(months=-n): same day and time of day, the day clamped to the target month's length. */
function minusMonths(now: Date, months: number): number {
  const total = now.getUTCFullYear() * 12 + now.getUTCMonth() - months;
  if (!Number.isSafeInteger(total)) return NaN;
  const year = Math.floor(total / 12);
  const month = total - year * 12;
  const d = new Date(0);
  // setUTCFullYear, unlike Date.UTC, does not map years 0-99 to 1900-1999.
  d.setUTCFullYear(year, month + 1, 0);
  const day = Math.min(now.getUTCDate(), d.getUTCDate());
  d.setUTCFullYear(year, month, day);
  d.setUTCHours(now.getUTCHours(), now.getUTCMinutes(), now.getUTCSeconds(), now.getUTCMilliseconds());
  return d.getTime();
}

export function describeRetention(r: Retention): string {
  const names: Record<RetentionUnit, string> = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week', mo: 'month', yr: 'year' };
  return `${r.amount} ${names[r.unit]}${r.amount === 1 ? '' : 's'}`;
}
