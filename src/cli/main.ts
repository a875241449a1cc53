import { Command, CommanderError } from 'commander';
import { EXIT } from '../errors.js';
import { commandName } from './argv.js';

type Register = (program: Command) => void;

/**
 * Command groups, loaded on demand: a command imports only its own group (and so only the store
 * drivers it needs), and `mgr --help` imports none — start-up stays close to bare node. Each
 * capability's logic lives in src/<capability>/; src/cli/<group>.ts parses flags and prints.
 */
const GROUPS: Record<string, { summary: string; load: () => Promise<Register> }> = {
  status: { summary: 'installed release, stores, live nodes, maintenance, pending upgrades', load: async () => (await import('./status.js')).registerStatus },
  upgrade: { summary: 'upgrade 21.03 → 21.09 → 22.03 (plan, status, rehearse, rollback)', load: async () => (await import('./upgrade.js')).registerUpgrade },
  image: { summary: 'rescan the images table from the container registries', load: async () => (await import('./image.js')).registerImage },
  'clear-history': { summary: 'trim old kernel history from PostgreSQL and Redis; its cron schedule', load: async () => (await import('./clear-history.js')).registerClearHistory },
  scheduler: { summary: 'run clear-history on a cron expression in-process (hosts without cron)', load: async () => (await import('./clear-history.js')).registerClearHistory },
  backup: { summary: 'back up, verify, list and restore PostgreSQL, etcd and Redis together', load: async () => (await import('./backup.js')).registerBackup },
  'background-migrate': { summary: 'batched background migrations: status, run, pause, resume, set-batch-size', load: async () => (await import('./background-migrate.js')).registerBackgroundMigrate },
  maintenance: { summary: "maintenance mode: mgr's marker plus manager/status = frozen", load: async () => (await import('./maintenance.js')).registerMaintenance },
  lock: { summary: "who holds mgr's distributed locks", load: async () => (await import('./lock.js')).registerLock },
  sandbox: { summary: 'throwaway real stores and a seeded 21.03 installation (demo, tests, rehearsal)', load: async () => (await import('./sandbox.js')).registerSandbox },
};

const program = new Command('mgr')
  .description('Upgrade and keep healthy a Backend.AI-style manager: PostgreSQL, etcd and Redis, 21.03 → 21.09 → 22.03.')
  .version('0.1.0')
  .option('-f, --config <path>', 'manager.toml (default: ./manager.toml, ~/.config/backend.ai/manager.toml, /etc/backend.ai/manager.toml)')
  .option('--log-level <level>', 'structured (JSON) log level on stderr: debug, info, warn, error (default: warn, or $MGR_LOG_LEVEL)')
  .addHelpText('after', '\nExit codes: 0 done, 1 internal error, 2 usage, 3 configuration, 4 store unreachable, 5 refused,\n6 lock busy, 7 step failed, 8 partly done, 9 integrity, 10 pending, 130 interrupted (README.md).')
  .showHelpAfterError()
  .exitOverride();

const name = commandName(process.argv.slice(2));
const group = name !== undefined ? GROUPS[name] : undefined;
if (group) (await group.load())(program);
else for (const [cmd, g] of Object.entries(GROUPS)) program.command(cmd).description(g.summary);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // --help and --version end here with code 0; bad usage with exit code 2.
    process.exitCode = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else throw e;
}
