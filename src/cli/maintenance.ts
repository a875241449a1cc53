import { Command } from 'commander';
import { enterMaintenance, getMaintenance, leaveMaintenance } from '../maintenance/index.js';
import { action, jsonOption, out, printJson, withStores } from './common.js';

export function registerMaintenance(program: Command): void {
  const m = program
    .command('maintenance')
    .description("maintenance mode: mgr's marker in etcd that every mgr job honours, plus manager/status = frozen");

  m.command('on')
    .description('turn maintenance mode on (clear-history and other deleting jobs refuse while it is on)')
    .option('--reason <text>', 'why (shown to whoever finds it on)', 'operator maintenance')
    .addOption(jsonOption())
    .action(
      action(async (flags: { reason: string; json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores) => {
          const { marker, created } = await enterMaintenance(stores.etcd, { reason: flags.reason, by: 'operator' });
          if (flags.json) printJson({ ok: true, created, maintenance: marker });
          else out(created ? `maintenance mode on (manager/status was ${marker.previousManagerStatus ?? 'unset'}, now frozen)` : `maintenance mode was already on: ${marker.reason}, by ${marker.by} since ${marker.since}`);
        }),
      ),
    );

  m.command('off')
    .description('turn maintenance mode off and restore manager/status as it was before')
    .addOption(jsonOption())
    .action(
      action(async (flags: { json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores) => {
          const marker = await leaveMaintenance(stores.etcd);
          if (flags.json) printJson({ ok: true, was: marker ?? null });
          else out(marker ? `maintenance mode off (was: ${marker.reason}, by ${marker.by}); manager/status restored to ${marker.previousManagerStatus ?? 'unset'}` : 'maintenance mode was not on');
        }),
      ),
    );

  m.command('status')
    .description('whether maintenance mode is on, who set it and why')
    .addOption(jsonOption())
    .action(
      action(async (flags: { json?: boolean }, cmd: Command) =>
        withStores(cmd, async (stores) => {
          const marker = await getMaintenance(stores.etcd);
          if (flags.json) printJson({ ok: true, on: Boolean(marker), maintenance: marker ?? null });
          else out(marker ? `on: ${marker.reason}, by ${marker.by} on ${marker.host} pid ${marker.pid} since ${marker.since}` : 'off');
        }),
      ),
    );
}
