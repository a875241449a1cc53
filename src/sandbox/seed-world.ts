import type pg from 'pg';
import { copyLine, copyRows, pgArray, pgBytea } from './seed-copy.js';
import { ALNUM, UPPER_ALNUM, type Rng } from './seed-random.js';

/**
 * The small tables of a 21.03 installation: domains, groups, users, keypairs and their policy,
 * scaling groups, agents, presets, templates, vfolders and error logs. Shaped after Backend.AI's
 * example fixtures (backend-ai.md §9); every NOT NULL column and app-side default of
 * backend-ai-schema.md §1 is written explicitly, as SQLAlchemy would.
 */

/** msgpack of an empty list: the app-side default of every `dotfiles` column. */
export const EMPTY_DOTFILES = pgBytea(Uint8Array.of(0x90));

export interface SeedUser {
  uuid: string;
  email: string;
  domain: string;
  groupIds: string[];
}

export interface SeedKeypair {
  accessKey: string;
  user: SeedUser;
}

export interface SeedAgent {
  id: string;
  status: 'ALIVE' | 'LOST' | 'TERMINATED';
  scalingGroup: string;
  addr: string;
  host: string;
  gpu: boolean;
  /** Filled in while kernels are generated (AGENT_RESOURCE_OCCUPYING statuses). */
  occupiedCpu: number;
  occupiedMem: number;
}

export interface SeedVfolder {
  id: string;
  name: string;
}

export interface SeedWorld {
  users: SeedUser[];
  keypairs: SeedKeypair[];
  agents: SeedAgent[];
  vfolders: SeedVfolder[];
  counts: Record<string, number>;
}

export interface WorldSizes {
  users: number;
  keypairs: number;
  agents: number;
}

const DOMAINS = ['default', 'research', 'education'] as const;
/** Backend.AI's example fixture group id for default/default (backend-ai.md §9.1). */
const DEFAULT_GROUP_ID = '2de2b969-1d04-48a6-af16-0bc8adb3c831';
const EXTRA_GROUPS: Record<(typeof DOMAINS)[number], string[]> = {
  default: ['team-a', 'team-b'],
  research: ['ml-lab'],
  education: ['class-2021'],
};

/** The fixture users and keypairs every dev install has (example-keypairs.json). */
const FIXTURE_USERS = [
  { email: 'admin@lablup.com', role: 'superadmin', uuid: 'f38dea23-50fa-42a0-b5ae-338f5f4693f4', ak: 'AKIAIOSFODNN7EXAMPLE', sk: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', admin: true },
  { email: 'domain-admin@lablup.com', role: 'admin', uuid: '4f13d193-f646-425a-a340-270c4d2b9860', ak: 'AKIAHUKCHDEZGEXAMPLE', sk: 'cWbsM_vBB4CzTW7JdORRMx8SjGI3-wEXAMPLEKEY', admin: true },
  { email: 'user@lablup.com', role: 'user', uuid: 'dfa9da54-4b28-432f-be29-c0d680c7a412', ak: 'AKIANABBDUSEREXAMPLE', sk: 'C8qnIo29EZvXkPK_MXcuAakYTy4NYrxwmCEyNPlf', admin: false },
  { email: 'monitor@lablup.com', role: 'monitor', uuid: '2e10157d-20ca-4bd0-9806-3f909cbcd0e6', ak: 'AKIANAMONITOREXAMPLE', sk: '7tuEwF1J7FfK41vOM4uSSyWCUWjPBolpVwvgkSBu', admin: false },
] as const;

/** A string shaped like a passlib bcrypt hash (rounds=12). Not the hash of anything. */
function bcryptLooking(rng: Rng): string {
  return '$2b$12$' + rng.chars(53, './' + ALNUM);
}

const ts = (ms: number) => new Date(ms).toISOString();
const DAY = 86_400_000;

export async function insertWorld(client: pg.ClientBase, rng: Rng, sizes: WorldSizes, nowMs: number): Promise<SeedWorld> {
  const counts: Record<string, number> = {};
  const copy = async (table: string, columns: string[], rows: string[]) => {
    counts[table] = (counts[table] ?? 0) + (await copyRows(client, table, columns, rows));
  };
  const createdLongAgo = () => ts(nowMs - rng.int(400, 1500) * DAY);

  await copy(
    'domains',
    ['name', 'description', 'is_active', 'created_at', 'modified_at', 'total_resource_slots', 'allowed_vfolder_hosts', 'allowed_docker_registries', 'integration_id', 'dotfiles'],
    DOMAINS.map((d) =>
      copyLine([d, d === 'default' ? 'The default domain' : `${d} domain`, true, createdLongAgo(), createdLongAgo(), '{}', pgArray(['local:volume1']), pgArray(['cr.backend.ai']), null, EMPTY_DOTFILES]),
    ),
  );

  const groups: { id: string; name: string; domain: string }[] = [];
  for (const d of DOMAINS) {
    groups.push({ id: d === 'default' ? DEFAULT_GROUP_ID : rng.uuid(), name: 'default', domain: d });
    for (const g of EXTRA_GROUPS[d]) groups.push({ id: rng.uuid(), name: g, domain: d });
  }
  await copy(
    'groups',
    ['id', 'name', 'description', 'is_active', 'created_at', 'modified_at', 'integration_id', 'domain_name', 'total_resource_slots', 'allowed_vfolder_hosts', 'dotfiles'],
    groups.map((g) => copyLine([g.id, g.name, `${g.name} group of ${g.domain}`, true, createdLongAgo(), createdLongAgo(), null, g.domain, '{}', pgArray(['local:volume1']), EMPTY_DOTFILES])),
  );

  const userCount = Math.max(sizes.users, FIXTURE_USERS.length);
  const users: (SeedUser & { role: string; status: string; name: string })[] = [];
  for (let i = 0; i < userCount; i++) {
    const fx = FIXTURE_USERS[i];
    const domain = fx ? 'default' : rng.weighted([['default', 70], ['research', 20], ['education', 10]] as const);
    const domainGroups = groups.filter((g) => g.domain === domain);
    const groupIds = [domainGroups[0]!.id];
    if (domainGroups.length > 1 && rng.chance(0.5)) groupIds.push(rng.pick(domainGroups.slice(1)).id);
    const name = fx ? fx.email.split('@')[0]! : `user${String(i).padStart(4, '0')}`;
    users.push({
      uuid: fx ? fx.uuid : rng.uuid(),
      email: fx ? fx.email : `${name}@${domain}.example.com`,
      domain,
      groupIds,
      role: fx ? fx.role : rng.weighted([['user', 95], ['admin', 5]] as const),
      status: fx ? 'active' : rng.weighted([['active', 94], ['inactive', 4], ['before-verification', 2]] as const),
      name,
    });
  }
  await copy(
    'users',
    ['uuid', 'username', 'email', 'password', 'need_password_change', 'full_name', 'description', 'status', 'status_info', 'created_at', 'modified_at', 'integration_id', 'domain_name', 'role'],
    users.map((u) =>
      copyLine([u.uuid, u.name, u.email, bcryptLooking(rng), false, u.name.replace(/^./, (c) => c.toUpperCase()), null, u.status, u.status === 'active' ? null : 'admin-requested', createdLongAgo(), createdLongAgo(), null, u.domain, u.role]),
    ),
  );
  await copy(
    'association_groups_users',
    ['user_id', 'group_id'],
    users.flatMap((u) => u.groupIds.map((g) => copyLine([u.uuid, g]))),
  );

  // 21.03's example fixture values (backend-ai.md §9.1): 30 concurrent sessions, idle 600 s.
  await copy(
    'keypair_resource_policies',
    ['name', 'created_at', 'default_for_unspecified', 'total_resource_slots', 'max_concurrent_sessions', 'max_containers_per_session', 'max_vfolder_count', 'max_vfolder_size', 'idle_timeout', 'allowed_vfolder_hosts'],
    [
      copyLine(['default', createdLongAgo(), 'UNLIMITED', '{}', 30, 1, 10, 0, 600, pgArray(['local:volume1'])]),
      copyLine(['gpu-users', createdLongAgo(), 'LIMITED', '{"cpu":"64","mem":"274877906944","cuda.shares":"8"}', 10, 4, 20, 0, 3600, pgArray(['local:volume1'])]),
    ],
  );

  const keypairCount = Math.max(sizes.keypairs, FIXTURE_USERS.length);
  const keypairs: SeedKeypair[] = [];
  const keypairLines: string[] = [];
  const usedKeys = new Set<string>();
  for (let i = 0; i < keypairCount; i++) {
    const fx = FIXTURE_USERS[i];
    const user = users[i % users.length]!;
    let accessKey: string = fx ? fx.ak : '';
    while (!accessKey || usedKeys.has(accessKey)) accessKey = 'AKIA' + rng.chars(16, UPPER_ALNUM);
    usedKeys.add(accessKey);
    keypairs.push({ accessKey, user });
    keypairLines.push(
      copyLine([
        user.email,
        accessKey,
        fx ? fx.sk : rng.chars(40, ALNUM),
        fx ? true : rng.chance(0.95),
        fx ? fx.admin : user.role !== 'user',
        createdLongAgo(),
        createdLongAgo(),
        rng.chance(0.8) ? ts(nowMs - rng.int(0, 90) * DAY) : null,
        0, // concurrency_used: set to the recount once kernels exist
        30000,
        rng.int(0, 50_000),
        null,
        null,
        user.uuid,
        rng.chance(0.2) ? 'gpu-users' : 'default',
        EMPTY_DOTFILES,
        '',
      ]),
    );
  }
  await copy(
    'keypairs',
    ['user_id', 'access_key', 'secret_key', 'is_active', 'is_admin', 'created_at', 'modified_at', 'last_used', 'concurrency_used', 'rate_limit', 'num_queries', 'ssh_public_key', 'ssh_private_key', 'user', 'resource_policy', 'dotfiles', 'bootstrap_script'],
    keypairLines,
  );

  const sgroups = [
    { name: 'default', description: 'The default scaling group' },
    { name: 'gpu', description: 'GPU nodes' },
  ];
  await copy(
    'scaling_groups',
    ['name', 'description', 'is_active', 'created_at', 'driver', 'driver_opts', 'scheduler', 'scheduler_opts'],
    sgroups.map((s) => copyLine([s.name, s.description, true, createdLongAgo(), 'static', '{}', 'fifo', '{}'])),
  );
  await copy(
    'sgroups_for_domains',
    ['scaling_group', 'domain'],
    sgroups.flatMap((s) => DOMAINS.map((d) => copyLine([s.name, d]))),
  );

  const agents: SeedAgent[] = [];
  for (let i = 0; i < Math.max(1, sizes.agents); i++) {
    const gpu = i % 4 === 3;
    const host = `10.0.${1 + Math.floor(i / 250)}.${10 + (i % 250)}`;
    agents.push({
      id: `i-node${String(i + 1).padStart(3, '0')}`,
      status: i === 0 ? 'ALIVE' : rng.weighted([['ALIVE', 60], ['LOST', 20], ['TERMINATED', 20]] as const),
      scalingGroup: gpu ? 'gpu' : 'default',
      addr: `tcp://${host}:6001`,
      host,
      gpu,
      occupiedCpu: 0,
      occupiedMem: 0,
    });
  }
  counts.agents = await insertAgents(client, rng, agents, nowMs);

  await copy(
    'resource_presets',
    ['name', 'resource_slots', 'shared_memory'],
    [
      copyLine(['01-small', '{"cpu":"8","mem":"34359738368","cuda.device":"1","cuda.shares":"0.5"}', null]),
      copyLine(['02-medium', '{"cpu":"24","mem":"171798691840","cuda.device":"2","cuda.shares":"2.0"}', 1073741824]),
      copyLine(['03-large', '{"cpu":"64","mem":"343597383680","cuda.device":"4","cuda.shares":"4.0"}', 2147483648]),
    ],
  );

  const admin = users[0]!;
  const template = (name: string, image: string) =>
    JSON.stringify({
      api_version: '6',
      kind: 'task_template',
      metadata: { name, tag: null },
      spec: {
        session_type: 'interactive',
        kernel: { image, environ: {}, run: null, git: null },
        scaling_group: 'default',
        mounts: {},
        resources: { cpu: '2', mem: '4g' },
      },
    });
  await copy(
    'session_templates',
    ['id', 'created_at', 'is_active', 'domain_name', 'group_id', 'user_uuid', 'type', 'name', 'template'],
    [
      copyLine([rng.uuid(), createdLongAgo(), true, 'default', DEFAULT_GROUP_ID, admin.uuid, 'TASK', 'jupyter', template('jupyter', 'cr.backend.ai/testing/ngc-tensorflow:20.11-tf2-py3')]),
      copyLine([rng.uuid(), createdLongAgo(), true, 'default', DEFAULT_GROUP_ID, admin.uuid, 'TASK', 'rstudio', template('rstudio', 'cr.backend.ai/cloud/r-base:4.0')]),
    ],
  );

  const vfolders: SeedVfolder[] = [];
  const vfolderLines: string[] = [];
  for (const u of users.slice(0, Math.min(users.length, 8))) {
    const v = { id: rng.uuid(), name: `${u.email.split('@')[0]}-data` };
    vfolders.push(v);
    vfolderLines.push(copyLine([v.id, 'local:volume1', v.name, 'general', 'rw', 1000, null, rng.int(0, 900), rng.int(0, 1_000_000), createdLongAgo(), null, u.email, null, 'user', u.uuid, null, false]));
  }
  const shared = { id: rng.uuid(), name: 'shared-datasets' };
  vfolders.push(shared);
  vfolderLines.push(copyLine([shared.id, 'local:volume1', shared.name, 'data', 'ro', 1000, null, 120, 2_000_000, createdLongAgo(), null, admin.email, null, 'group', null, DEFAULT_GROUP_ID, true]));
  await copy(
    'vfolders',
    ['id', 'host', 'name', 'usage_mode', 'permission', 'max_files', 'max_size', 'num_files', 'cur_size', 'created_at', 'last_used', 'creator', 'unmanaged_path', 'ownership_type', 'user', 'group', 'cloneable'],
    vfolderLines,
  );

  const severities = ['critical', 'error', 'warning'] as const;
  await copy(
    'error_logs',
    ['id', 'created_at', 'severity', 'source', 'user', 'is_read', 'is_cleared', 'message', 'context_lang', 'context_env', 'request_url', 'request_status', 'traceback'],
    Array.from({ length: 5 }, (_, i) =>
      copyLine([rng.uuid(), ts(nowMs - rng.int(1, 200) * DAY), severities[i % 3], 'manager', i % 2 ? admin.uuid : null, i < 2, false, `Kernel creation failed (attempt ${i + 1})`, 'python', '{"version":"21.03.9"}', '/session', 500, 'Traceback (most recent call last):\n  File "registry.py", line 1077\nRuntimeError: no available agent']),
    ),
  );

  return { users, keypairs, agents, vfolders, counts };
}

async function insertAgents(client: pg.ClientBase, rng: Rng, agents: SeedAgent[], nowMs: number): Promise<number> {
  return copyRows(
    client,
    'agents',
    ['id', 'status', 'status_changed', 'region', 'scaling_group', 'schedulable', 'available_slots', 'occupied_slots', 'addr', 'first_contact', 'lost_at', 'version', 'compute_plugins'],
    agents.map((a) => {
      const lost = a.status !== 'ALIVE';
      const available = a.gpu
        ? { cpu: '64', mem: '274877906944', 'cuda.shares': '8', 'cuda.device': '4' }
        : { cpu: '32', mem: '137438953472' };
      const changed = nowMs - rng.int(1, 60) * DAY;
      return copyLine([
        a.id,
        a.status,
        new Date(changed).toISOString(),
        'local',
        a.scalingGroup,
        true,
        JSON.stringify(available),
        '{"cpu":"0","mem":"0"}', // set by updateAgentOccupancy once kernels exist
        a.addr,
        new Date(nowMs - rng.int(200, 700) * DAY).toISOString(),
        lost ? new Date(changed).toISOString() : null,
        rng.pick(['21.03.7', '21.03.9', '21.03.12']),
        JSON.stringify(a.gpu ? { cuda: { version: '11.3', devices: 4 } } : {}),
      ]);
    }),
  );
}

/** Sets agents.occupied_slots to the sum over their kernels in the agent-occupying statuses. */
export async function updateAgentOccupancy(client: pg.ClientBase, agents: SeedAgent[]): Promise<void> {
  for (const a of agents) {
    await client.query('UPDATE agents SET occupied_slots = $2 WHERE id = $1', [a.id, JSON.stringify({ cpu: String(a.occupiedCpu), mem: String(a.occupiedMem) })]);
  }
}
