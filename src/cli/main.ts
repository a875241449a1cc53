import { Command, CommanderError } from 'commander';
import { EXIT } from '../errors.js';
import { registerStatus } from './status.js';
import { registerSandbox } from './sandbox.js';
import { registerImage } from './image.js';
import { registerUpgrade } from './upgrade.js';
import { registerMaintenance } from './maintenance.js';
import { registerClearHistory } from './clear-history.js';
import { registerBackup } from './backup.js';
import { registerLock } from './lock.js';
import { registerBackgroundMigrate } from './background-migrate.js';

const program = new Command('mgr')
  .description('Upgrade and keep healthy a Backend.AI-style manager: PostgreSQL, etcd and Redis, 21.03 → 21.09 → 22.03.')
  .version('0.1.0')
  .option('-f, --config <path>', 'manager.toml (default: ./manager.toml, ~/.config/backend.ai/manager.toml, /etc/backend.ai/manager.toml)')
  .option('--log-level <level>', 'structured (JSON) log level on stderr: debug, info, warn, error (default: warn, or $MGR_LOG_LEVEL)')
  .showHelpAfterError()
  .exitOverride();

// Each capability registers its command group here; the logic lives in src/<capability>/.
registerStatus(program);
registerSandbox(program);
registerImage(program);
registerUpgrade(program);
registerMaintenance(program);
registerClearHistory(program);
registerBackup(program);
registerLock(program);
registerBackgroundMigrate(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // --help and --version end here with code 0; bad usage with exit code 2.
    process.exitCode = e.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else throw e;
}
