import { Command } from 'commander';
import { EXIT } from '../errors.js';
import { installationStatusFromConfig, type StatusReport } from '../status/index.js';
import { action, jsonOption, loadConfig, out, printJson } from './common.js';

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description(
      'show the installed release (from alembic_version), whether PostgreSQL, etcd and Redis answer, whether managers and agents look alive and how that was decided, maintenance mode, and the upgrades still to apply',
    )
    .addOption(jsonOption())
    .addHelpText('after', '\nExit codes: 0 all stores answered; 4 a store is unreachable (the report still shows the rest); 3 bad manager.toml or etcd shared config.')
    .action(
      action(async (flags: { json?: boolean }, cmd: Command) => {
        const report = await installationStatusFromConfig(loadConfig(cmd));
        if (flags.json) printJson({ ok: report.allReachable, ...report });
        else printReport(report);
        if (report.configError) return EXIT.config;
        return report.allReachable ? EXIT.ok : EXIT.storeUnreachable;
      }),
    );
}

function releaseLine(r: StatusReport['release']): string {
  switch (r.kind) {
    case 'known':
      return r.versions
        ? `${r.release} (Backend.AI ${r.versions}; alembic ${r.revision})`
        : `${r.release} reached, upgrade interrupted at alembic ${r.rows.join(' + ')}`;
    case 'unknown':
      return `unknown: alembic_version holds ${r.rows.length ? r.rows.join(', ') : 'no rows'}, which mgr does not know (not guessing)`;
    case 'empty':
      return 'none: no alembic_version table (not a Backend.AI manager database)';
    case 'unavailable':
      return `not read: ${r.reason}`;
  }
}

function printReport(r: StatusReport): void {
  out(`config:      ${r.configFile} (etcd namespace "${r.namespace}")`);
  out(`release:     ${releaseLine(r.release)}`);
  out(`pending:     ${r.pending.length ? r.pending.join(' → ') : r.release.kind === 'known' ? 'nothing: up to date' : '-'}`);
  for (const s of r.unfinishedSteps) out(`  unfinished step ${s.stepId} (${s.module}): ${s.status}`);
  out('stores:');
  for (const s of r.stores) {
    out(`  ${s.store.padEnd(10)} ${s.reachable ? `ok, version ${s.version}` : `UNREACHABLE: ${s.error}`}  [${s.endpoint}]`);
  }
  const l = r.liveness;
  const verdict = l.anyLive === undefined ? 'not decided' : l.anyLive ? 'YES' : 'no';
  out(`live nodes:  ${verdict}`);
  for (const n of l.live) out(`  ${n.kind} ${n.id}: ${n.evidence}`);
  const nodes = l.managers.nodes;
  out(`  managers: ${nodes.length ? nodes.map((n) => `${n.id}=${n.value}`).join(', ') : 'no nodes/manager/* keys'}; manager/status ${l.managers.managerStatus ?? 'absent'}`);
  const byStatus = Object.entries(l.agents.byStatus).map(([s, n]) => `${n} ${s}`);
  out(`  agents: ${byStatus.length ? byStatus.join(', ') : 'none'}; heartbeat-timeout ${l.agents.heartbeatTimeoutSec}s`);
  for (const a of l.agents.alive.slice(0, 10)) {
    out(`    ${a.id} ALIVE in PostgreSQL, last seen ${a.lastSeen ? `${a.lastSeen} (${a.ageSec}s ago)` : 'never (not in agent.last_seen)'}${a.live ? ' → live' : ''}`);
  }
  if (l.agents.alive.length > 10) out(`    … and ${l.agents.alive.length - 10} more ALIVE agents (see --json)`);
  for (const d of l.decidedBy) out(`  checked: ${d}`);
  out(`maintenance: ${r.maintenance ? `ON: ${r.maintenance.reason}, by ${r.maintenance.by} on ${r.maintenance.host} since ${r.maintenance.since}` : 'off'}`);
  for (const w of r.warnings) out(`warning: ${w}`);
}
