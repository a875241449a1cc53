// A separate process that takes an mgr lock, for the multi-process lock tests. It runs the
// compiled library (dist/, built by `npm test` or `npx tsc -p .`), as a second mgr would.
//
//   node test/helpers/lock-contender.mjs '<json>'
//   json: { toml, kind, name, mode: "contend" | "hold", iterations?, holdMs?, waitMs?, ttlMs?, logFile?, startAt? }
//
// contend: `iterations` times acquire, hold `holdMs`, release; appends one JSON line per hold to
//          logFile with the acquire and release instants on the monotonic clock (process.hrtime,
//          CLOCK_MONOTONIC: comparable across processes on one host).
// hold:    acquire once, print {"event":"acquired",...} on stdout and hold until killed;
//          prints {"event":"lost"} if the lock is lost.
import { appendFileSync, readFileSync } from 'node:fs';
import { localConfigFromText } from '../../dist/src/config/manager-toml.js';
import { openStores } from '../../dist/src/stores/index.js';
import { lockBackendFor } from '../../dist/src/locks/index.js';

const args = JSON.parse(process.argv[2]);
const config = localConfigFromText(readFileSync(args.toml, 'utf8'), args.toml);
const stores = await openStores(config);
const backend = lockBackendFor(stores, args.kind);
const request = { name: args.name, waitMs: args.waitMs ?? 60_000, ttlMs: args.ttlMs, purpose: `contender ${process.pid}` };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (args.mode === 'hold') {
  const held = await backend.acquire(request);
  held.lost.addEventListener('abort', () => process.stdout.write(JSON.stringify({ event: 'lost' }) + '\n'));
  process.stdout.write(JSON.stringify({ event: 'acquired', pid: process.pid, holder: held.holder }) + '\n');
  setInterval(() => undefined, 60_000); // hold until killed
} else {
  // Contenders start together at `startAt` (epoch ms), so without exclusion their holds overlap.
  if (args.startAt) await sleep(Math.max(0, args.startAt - Date.now()));
  for (let i = 0; i < args.iterations; i++) {
    const held = await backend.acquire(request);
    const acquired = process.hrtime.bigint();
    await sleep(args.holdMs);
    const released = process.hrtime.bigint();
    await held.release();
    appendFileSync(args.logFile, JSON.stringify({ pid: process.pid, acquired: String(acquired), released: String(released) }) + '\n');
  }
  await stores.close();
}
