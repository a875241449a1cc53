import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';

/**
 * COPY … FROM STDIN in PostgreSQL's text format, streamed: rows are produced lazily and sent in
 * chunks with back-pressure, so a million rows never sit in memory at once.
 */

/** A value of one column as COPY sends it (null/undefined → \N); JSON, arrays and bytea are pre-formatted strings. */
export type CopyValue = string | number | boolean | null | undefined;

/** One field in COPY text format: backslash, tab, newline and CR escaped; null/undefined is \N. */
export function copyField(v: CopyValue): string {
  if (v === null || v === undefined) return '\\N';
  const s = typeof v === 'string' ? v : String(v);
  return /[\\\t\n\r]/.test(s) ? s.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r')) : s;
}

export function copyLine(values: CopyValue[]): string {
  return values.map(copyField).join('\t') + '\n';
}

/** A PostgreSQL array literal of text elements: {"a","b"} (quotes and backslashes escaped). */
export function pgArray(items: readonly (string | number)[]): string {
  return `{${items.map((i) => (typeof i === 'number' ? String(i) : `"${i.replace(/["\\]/g, (c) => '\\' + c)}"`)).join(',')}}`;
}

/** bytea in hex input format. */
export function pgBytea(bytes: Uint8Array): string {
  return '\\x' + Buffer.from(bytes).toString('hex');
}

/** Identifier quoting for the column lists of COPY. */
export function ident(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Streams rows (each already a copyLine) into `table`. `chunkRows` lines are joined per write.
 * Returns the number of rows PostgreSQL reports.
 */
export async function copyRows(
  client: pg.ClientBase,
  table: string,
  columns: readonly string[],
  rows: Iterable<string> | AsyncIterable<string>,
  chunkRows = 2_000,
): Promise<number> {
  const stream = client.query(copyFrom(`COPY ${table} (${columns.map(ident).join(', ')}) FROM STDIN`));
  async function* chunks() {
    let buf: string[] = [];
    for await (const line of rows) {
      buf.push(line);
      if (buf.length >= chunkRows) {
        yield buf.join('');
        buf = [];
      }
    }
    if (buf.length) yield buf.join('');
  }
  await pipeline(Readable.from(chunks()), stream);
  return stream.rowCount;
}
