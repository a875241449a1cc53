import { Command, Option } from 'commander';
import { describeHolder } from '../errors.js';
import { LOCK_BACKENDS } from '../config/manager-toml.js';
import { lockBackendFor } from '../locks/index.js';
import { action, jsonOption, logger, out, printJson, withStores } from './common.js';

export function registerLock(program: Command): void {
  const lock = program.command('lock').description("mgr's distributed locks (filelock, etcd or pg_advisory, as manager.toml's distributed-lock says)");

  lock
    .command('status')
    .description('who holds the named locks now, e.g. mgr.upgrade (taken with pg_advisory) or mgr.clear-history')
    .argument('<names...>', 'lock names')
    .addOption(
      new Option('--backend <kind>', 'lock backend to look in (default: [manager] distributed-lock, else pg_advisory)').choices([...LOCK_BACKENDS]),
    )
    .addOption(jsonOption())
    .action(
      action(async (names: string[], flags: { backend?: string; json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores) => {
          const backend = lockBackendFor(stores, flags.backend, { log: logger(cmd) });
          const locks = await Promise.all(names.map(async (name) => ({ name, holder: (await backend.holder(name)) ?? null })));
          if (flags.json) {
            printJson({ ok: true, backend: backend.kind, locks: locks.map((l) => ({ ...l, held: l.holder !== null })) });
            return;
          }
          for (const l of locks) out(`${l.name} (${backend.kind}): ${l.holder ? `held by ${describeHolder(l.holder)}` : 'free'}`);
        }),
      ),
    );
}
