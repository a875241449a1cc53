import { existsSync } from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { EXIT, MgrError } from '../errors.js';
import { loadLocalConfig } from '../config/manager-toml.js';
import { EtcdStore, openStores } from '../stores/index.js';
import { readSandboxState, startSandbox, stopSandboxFromState, STATE_FILE, type SandboxState } from '../sandbox/index.js';
import { BASELINE_HEADS, existingInstallation, seedInstallation, type BaselineHead } from '../sandbox/seed.js';
import type { Progress } from '../engine/types.js';
import { action, dryRunOption, globalOptions, jsonOption, logger, out, positiveInt, printJson, progressReporter } from './common.js';

/** The name the sandbox's own docker registry has in etcd config/docker/registry. */
export const SANDBOX_REGISTRY_NAME = 'sandbox';

const dirOption = () =>
  new Option('--dir <dir>', 'state directory of the sandbox (data, logs, manager.toml, sandbox.json)').default(process.env.MGR_SANDBOX_DIR ?? '.sandbox', '$MGR_SANDBOX_DIR or .sandbox');

function nonNegativeInt(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new InvalidArgumentError(`${name} must be a whole number ≥ 0, got ${JSON.stringify(v)}`);
    return Number(v);
  };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function runningState(dir: string): Promise<SandboxState | undefined> {
  if (!existsSync(path.join(dir, STATE_FILE))) return undefined;
  const state = await readSandboxState(dir);
  return Object.values(state.pids).some(pidAlive) ? state : undefined;
}

export function registerSandbox(program: Command): void {
  const sb = program
    .command('sandbox')
    .description('throwaway real stores (PostgreSQL 15, etcd 3.4, Redis 7, docker registry 2.8) on loopback ports, and a seeded Backend.AI 21.03 installation in them');

  sb.command('start')
    .description('start detached stores under --dir, write their shared config into etcd, and print the manager.toml that points at them')
    .addOption(dirOption())
    .option('--with-registry', 'also start a docker registry, configured in etcd as registry "sandbox" (type docker)')
    .option('--namespace <ns>', 'etcd namespace ([etcd] namespace in manager.toml)', 'local')
    .addOption(jsonOption())
    .action(
      action(async (flags: { dir: string; withRegistry?: boolean; namespace: string; json?: boolean }) => {
        const dir = path.resolve(flags.dir);
        const running = await runningState(dir);
        if (running) {
          throw new MgrError('refused', `a sandbox is already running in ${dir} (pids ${Object.values(running.pids).join(', ')})`, {
            hint: `use it with -f ${running.managerToml}, or stop it first: mgr sandbox stop --dir ${flags.dir}`,
          });
        }
        const sandbox = await startSandbox({ dir, namespace: flags.namespace, withRegistry: Boolean(flags.withRegistry), detached: true });
        const etcd = new EtcdStore(sandbox.etcd.endpoint, sandbox.namespace);
        try {
          if (sandbox.registry) {
            await etcd.put(`config/docker/registry/${SANDBOX_REGISTRY_NAME}`, sandbox.registry.url);
            await etcd.put(`config/docker/registry/${SANDBOX_REGISTRY_NAME}/type`, 'docker');
          }
        } finally {
          etcd.close();
        }
        const state = await readSandboxState(dir);
        if (flags.json) printJson({ ok: true, ...state });
        else {
          out(`sandbox running in ${dir}`);
          for (const [name, port] of Object.entries(state.ports)) out(`  ${name.padEnd(9)} 127.0.0.1:${port} (pid ${state.pids[name]})`);
          out(`manager.toml: ${state.managerToml}`);
          out(`next: mgr sandbox seed --dir ${flags.dir}   then: mgr -f ${state.managerToml} status`);
        }
      }),
    );

  sb.command('seed')
    .description('build a realistic Backend.AI 21.03 installation in the sandbox: schema, users, keypairs, agents, kernels (PostgreSQL), image metadata (etcd), stat keys (Redis)')
    .addOption(dirOption())
    .option('--kernels <n>', 'kernel rows', nonNegativeInt('--kernels'), 2_000)
    .option('--images <n>', 'image tags in etcd', positiveInt('--images'), 200)
    .option('--keypairs <n>', 'keypairs', positiveInt('--keypairs'), 50)
    .option('--users <n>', 'users (default: 80% of keypairs)', positiveInt('--users'))
    .option('--agents <n>', 'agents', positiveInt('--agents'), 8)
    .addOption(new Option('--head <revision>', 'alembic head to build: 8679d0a7e22b (21.03.3+) or 518ecf41f567 (21.03.0-21.03.2)').choices(BASELINE_HEADS).default('8679d0a7e22b'))
    .option('--seed <n>', 'PRNG seed: the same seed gives the same installation', nonNegativeInt('--seed'), 1)
    .addOption(new Option('--stat-keys <which>', 'kernel stat keys in Redis: for recent (60 days) and live kernels, or all').choices(['recent', 'all']).default('recent'))
    .option('--reset', 'wipe PostgreSQL, the etcd namespace and Redis DBs 0-4 first (needs --yes)')
    .option('--yes', 'confirm --reset')
    .addOption(dryRunOption())
    .addOption(jsonOption())
    .addHelpText('after', '\nUses -f manager.toml if given, else DIR/manager.toml. Refuses (exit 5) to seed over existing tables or image keys unless --reset --yes.')
    .action(
      action(
        async (
          flags: {
            dir: string; kernels: number; images: number; keypairs: number; users?: number; agents: number; head: BaselineHead;
            seed: number; statKeys: 'recent' | 'all'; reset?: boolean; yes?: boolean; dryRun?: boolean; json?: boolean;
          },
          cmd: Command,
        ) => {
          if (flags.reset && !flags.yes && !flags.dryRun) {
            throw new MgrError('usage', '--reset deletes everything in the target PostgreSQL database, etcd namespace and Redis DBs 0-4; add --yes to confirm', {
              hint: 'only ever point this at a sandbox',
            });
          }
          const tomlPath = globalOptions(cmd).config ?? path.join(path.resolve(flags.dir), 'manager.toml');
          const stores = await openStores(loadLocalConfig(tomlPath));
          try {
            const sizes = { kernels: flags.kernels, images: flags.images, keypairs: flags.keypairs, users: flags.users, agents: flags.agents, head: flags.head, seed: flags.seed };
            if (flags.dryRun) {
              const found = await existingInstallation(stores);
              const wouldRefuse = !flags.reset && (found.tables > 0 || found.imageKeys > 0);
              if (flags.json) printJson({ ok: true, dryRun: true, target: tomlPath, existing: found, reset: Boolean(flags.reset), wouldRefuse, ...sizes });
              else {
                out(`would seed ${tomlPath}: ${flags.kernels} kernels, ${flags.images} image tags, ${flags.keypairs} keypairs, ${flags.agents} agents at ${flags.head}`);
                out(`target now has ${found.tables} tables and ${found.imageKeys} image keys${flags.reset ? '; --reset would wipe them first' : wouldRefuse ? '; seeding would be refused' : ''}`);
              }
              return;
            }
            const bars = new Map<string, ReturnType<typeof progressReporter>>();
            const onProgress = (phase: string, p: Progress) => {
              let bar = bars.get(phase);
              if (!bar) {
                for (const b of bars.values()) b.stop();
                bar = progressReporter(`seed ${phase}`, { json: flags.json });
                bars.set(phase, bar);
              }
              bar.update(p);
            };
            const summary = await seedInstallation(stores, {
              ...sizes,
              statKeysFor: flags.statKeys,
              reset: Boolean(flags.reset),
              log: logger(cmd),
              onProgress,
            });
            for (const b of bars.values()) b.stop();
            if (flags.json) printJson({ ok: true, target: tomlPath, ...summary });
            else {
              out(`seeded a 21.03 installation (alembic ${summary.head}) in ${(summary.durationMs / 1000).toFixed(1)} s`);
              out(`  PostgreSQL: ${Object.entries(summary.counts).map(([t, n]) => `${t} ${n}`).join(', ')}`);
              out(`  etcd: ${summary.etcdKeys} keys (${summary.imageTags} image tags, ${summary.aliases} aliases)`);
              out(`  Redis: ${summary.redisKeys} keys`);
            }
          } finally {
            await stores.close();
          }
        },
      ),
    );

  sb.command('stop')
    .description('stop the detached stores of the sandbox in --dir (data stays until the directory is removed)')
    .addOption(dirOption())
    .addOption(jsonOption())
    .action(
      action(async (flags: { dir: string; json?: boolean }) => {
        const state = await stopSandboxFromState(flags.dir);
        if (flags.json) printJson({ ok: true, stopped: state.pids, dir: state.dir });
        else out(`sandbox in ${state.dir} stopped (${Object.keys(state.pids).join(', ')})`);
      }),
    );

  sb.command('push-images')
    .description('push a few Backend.AI kernel images (one multi-arch, one without the kernelspec label) into the sandbox registry, for `mgr image rescan sandbox`')
    .addOption(dirOption())
    .addOption(jsonOption())
    .action(
      action(async (flags: { dir: string; json?: boolean }) => {
        const state = await readSandboxState(flags.dir);
        if (!state.registryUrl) throw new MgrError('usage', `the sandbox in ${state.dir} has no registry`, { hint: 'start it with --with-registry' });
        const { pushDemoImages } = await import('../sandbox/demo-images.js');
        const report = await pushDemoImages(state.registryUrl);
        if (flags.json) printJson({ ok: true, registry: state.registryUrl, ...report });
        else for (const p of report.pushed) out(`pushed ${state.registryUrl}/${p.ref} (${p.architectures.join(', ')})`);
      }),
    );

  sb.command('status')
    .description('whether the sandbox in --dir is running: each server, its pid and port')
    .addOption(dirOption())
    .addOption(jsonOption())
    .action(
      action(async (flags: { dir: string; json?: boolean }) => {
        const state = await readSandboxState(flags.dir);
        const services = Object.entries(state.pids).map(([name, pid]) => ({ name, pid, port: state.ports[name], running: pidAlive(pid) }));
        const allRunning = services.every((s) => s.running);
        if (flags.json) printJson({ ok: allRunning, dir: state.dir, namespace: state.namespace, managerToml: state.managerToml, createdAt: state.createdAt, services });
        else {
          out(`sandbox in ${state.dir} (started ${state.createdAt}, namespace "${state.namespace}")`);
          for (const s of services) out(`  ${s.name.padEnd(9)} ${s.running ? 'running' : 'NOT RUNNING'}  pid ${s.pid}  127.0.0.1:${s.port}`);
          out(`manager.toml: ${state.managerToml}`);
        }
        return allRunning ? EXIT.ok : EXIT.storeUnreachable;
      }),
    );
}
