/**
 * Backend.AI manager tables at alembic head 8679d0a7e22b (21.03.3–21.03.32, 21.09.0–21.09.2):
 * 20 tables plus `alembic_version`, column for column as backend-ai-schema.md §1 and the dump
 * drizzle/baseline/21.03-8679d0a7e22b.sql have them. Declaration order of columns is
 * the dump's attnum order, so a generated CREATE TABLE lays columns out the way Backend.AI does.
 *
 * Tables a later release changes (agents, kernels, keypairs, keypair_resource_policies,
 * scaling_groups) export their column map as a factory and their constraints as a function, so
 * release-21.09.ts / release-22.03.ts extend them instead of copying them.
 *
 * Server defaults are written the way `pg_get_expr` prints them; app-side defaults (Python
 * `default=`) are not in the database and so not here.
 */
import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  text,
  timestamp,
  unique,
  uniqueIndex,
  index,
  uuid,
  varchar,
} from 'drizzle-orm/pg-core';
import { bytea, fk, ix, pk, type ResourceSlots, type TableColumns } from './conventions.js';

// ── enum types (§0.2): names and labels in enumsortorder ──────────────────────────────────
export const agentStatus = pgEnum('agentstatus', ['ALIVE', 'LOST', 'RESTARTING', 'TERMINATED']);
export const kernelStatus = pgEnum('kernelstatus', [
  'PENDING',
  'SCHEDULED',
  'PREPARING',
  'BUILDING',
  'PULLING',
  'RUNNING',
  'RESTARTING',
  'RESIZING',
  'SUSPENDED',
  'TERMINATING',
  'TERMINATED',
  'ERROR',
  'CANCELLED',
]);
export const sessionTypes = pgEnum('sessiontypes', ['INTERACTIVE', 'BATCH']);
export const sessionResult = pgEnum('sessionresult', ['UNDEFINED', 'SUCCESS', 'FAILURE']);
export const defaultForUnspecified = pgEnum('defaultforunspecified', ['LIMITED', 'UNLIMITED']);
export const templateType = pgEnum('templatetype', ['TASK', 'CLUSTER']);
export const userRole = pgEnum('userrole', ['superadmin', 'admin', 'user', 'monitor']);
export const userStatus = pgEnum('userstatus', ['active', 'inactive', 'deleted', 'before-verification']);
export const vfolderPermission = pgEnum('vfolderpermission', ['ro', 'rw', 'wd']);
export const vfolderInvitationState = pgEnum('vfolderinvitationstate', ['pending', 'canceled', 'accepted', 'rejected']);
export const vfolderOwnershipType = pgEnum('vfolderownershiptype', ['user', 'group']);
export const vfolderUsageMode = pgEnum('vfolderusagemode', ['general', 'model', 'data']);
export const errorlogSeverity = pgEnum('errorlog_severity', ['critical', 'error', 'warning']);

// ── column helpers shared by every table ──────────────────────────────────────────────────
/** `IDColumn`: uuid with server default uuid_generate_v4() (the PK is declared per table). */
const idColumn = (name: string) =>
  uuid(name)
    .notNull()
    .default(sql`uuid_generate_v4()`);
const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });
const createdAt = (name = 'created_at') => timestamptz(name).defaultNow();
const varcharArray = (name: string) => varchar(name).array();

// ── alembic ───────────────────────────────────────────────────────────────────────────────
/** Alembic's own table; its PK is named by alembic (`_pkc`), not by Backend.AI's convention. */
export const alembicVersion = pgTable(
  'alembic_version',
  { versionNum: varchar('version_num', { length: 32 }).notNull() },
  (t) => [primaryKey({ name: 'alembic_version_pkc', columns: [t.versionNum] })],
);

// ── domains, users, groups ────────────────────────────────────────────────────────────────
export const domains = pgTable(
  'domains',
  {
    name: varchar('name', { length: 64 }).notNull(),
    description: varchar('description', { length: 512 }),
    isActive: boolean('is_active'),
    createdAt: createdAt(),
    modifiedAt: timestamptz('modified_at').defaultNow(),
    totalResourceSlots: jsonb('total_resource_slots').$type<ResourceSlots>(),
    allowedVfolderHosts: varcharArray('allowed_vfolder_hosts').notNull(),
    allowedDockerRegistries: varcharArray('allowed_docker_registries').notNull(),
    integrationId: varchar('integration_id', { length: 512 }),
    dotfiles: bytea('dotfiles').notNull(),
  },
  (t) => [pk(t.name)],
);

export const users = pgTable(
  'users',
  {
    uuid: idColumn('uuid'),
    username: varchar('username', { length: 64 }),
    email: varchar('email', { length: 64 }).notNull(),
    password: varchar('password'),
    needPasswordChange: boolean('need_password_change'),
    fullName: varchar('full_name', { length: 64 }),
    description: varchar('description', { length: 500 }),
    status: userStatus('status').notNull(),
    statusInfo: varchar('status_info'),
    createdAt: createdAt(),
    modifiedAt: timestamptz('modified_at').defaultNow(),
    integrationId: varchar('integration_id', { length: 512 }),
    domainName: varchar('domain_name', { length: 64 }),
    role: userRole('role'),
  },
  (t) => [
    pk(t.uuid),
    fk(t.domainName, domains.name),
    // email is unique through a unique *index*, username through a *constraint* (§1 quirks)
    uniqueIndex('ix_users_email').on(t.email),
    unique('uq_users_username').on(t.username),
    ix(t.domainName),
  ],
);

export const groups = pgTable(
  'groups',
  {
    id: idColumn('id'),
    name: varchar('name', { length: 64 }).notNull(),
    description: varchar('description', { length: 512 }),
    isActive: boolean('is_active'),
    createdAt: createdAt(),
    modifiedAt: timestamptz('modified_at').defaultNow(),
    integrationId: varchar('integration_id', { length: 512 }),
    domainName: varchar('domain_name', { length: 64 }).notNull(),
    totalResourceSlots: jsonb('total_resource_slots').$type<ResourceSlots>(),
    allowedVfolderHosts: varcharArray('allowed_vfolder_hosts').notNull(),
    dotfiles: bytea('dotfiles').notNull(),
  },
  (t) => [
    pk(t.id),
    fk(t.domainName, domains.name, { cascade: true }),
    unique('uq_groups_name_domain_name').on(t.name, t.domainName),
    ix(t.domainName),
  ],
);

export const associationGroupsUsers = pgTable(
  'association_groups_users',
  {
    userId: uuid('user_id').notNull(),
    groupId: uuid('group_id').notNull(),
  },
  (t) => [
    fk(t.userId, users.uuid, { cascade: true }),
    fk(t.groupId, groups.id, { cascade: true }),
    unique('uq_association_user_id_group_id').on(t.userId, t.groupId),
  ],
);

// ── resource policies, keypairs ───────────────────────────────────────────────────────────
export const keypairResourcePoliciesColumns = () => ({
  name: varchar('name', { length: 256 }).notNull(),
  createdAt: createdAt(),
  defaultForUnspecified: defaultForUnspecified('default_for_unspecified').notNull(),
  totalResourceSlots: jsonb('total_resource_slots').$type<ResourceSlots>().notNull(),
  maxConcurrentSessions: integer('max_concurrent_sessions').notNull(),
  maxContainersPerSession: integer('max_containers_per_session').notNull(),
  maxVfolderCount: integer('max_vfolder_count').notNull(),
  maxVfolderSize: bigint('max_vfolder_size', { mode: 'number' }).notNull(),
  idleTimeout: bigint('idle_timeout', { mode: 'number' }).notNull(),
  allowedVfolderHosts: varcharArray('allowed_vfolder_hosts').notNull(),
});
export const keypairResourcePoliciesConstraints = (t: TableColumns<ReturnType<typeof keypairResourcePoliciesColumns>>) => [
  pk(t.name),
];
export const keypairResourcePolicies = pgTable(
  'keypair_resource_policies',
  keypairResourcePoliciesColumns(),
  keypairResourcePoliciesConstraints,
);

export const keypairsColumns = () => ({
  userId: varchar('user_id', { length: 256 }),
  accessKey: varchar('access_key', { length: 20 }).notNull(),
  secretKey: varchar('secret_key', { length: 40 }),
  isActive: boolean('is_active'),
  isAdmin: boolean('is_admin').default(false),
  createdAt: createdAt(),
  modifiedAt: timestamptz('modified_at').defaultNow(),
  lastUsed: timestamptz('last_used'),
  /** Dropped in 22.03 (d59ff89e7514): concurrency moves to Redis. */
  concurrencyUsed: integer('concurrency_used'),
  rateLimit: integer('rate_limit'),
  numQueries: integer('num_queries').default(0),
  sshPublicKey: varchar('ssh_public_key', { length: 750 }),
  sshPrivateKey: varchar('ssh_private_key', { length: 2000 }),
  user: uuid('user').notNull(),
  resourcePolicy: varchar('resource_policy', { length: 256 }).notNull(),
  dotfiles: bytea('dotfiles').notNull(),
  bootstrapScript: varchar('bootstrap_script', { length: 65536 }).notNull(),
});
// Typed without concurrency_used so the 22.03 table, which drops it, shares these constraints.
export const keypairsConstraints = (t: TableColumns<Omit<ReturnType<typeof keypairsColumns>, 'concurrencyUsed'>>) => [
  pk(t.accessKey),
  fk(t.resourcePolicy, keypairResourcePolicies.name),
  fk(t.user, users.uuid),
  ix(t.isActive),
  ix(t.isAdmin),
  ix(t.userId),
];
export const keypairs = pgTable('keypairs', keypairsColumns(), keypairsConstraints);

export const resourcePresets = pgTable(
  'resource_presets',
  {
    name: varchar('name', { length: 256 }).notNull(),
    resourceSlots: jsonb('resource_slots').$type<ResourceSlots>().notNull(),
    sharedMemory: bigint('shared_memory', { mode: 'number' }),
  },
  (t) => [pk(t.name)],
);

// ── scaling groups, agents ────────────────────────────────────────────────────────────────
export const scalingGroupsColumns = () => ({
  name: varchar('name', { length: 64 }).notNull(),
  description: varchar('description', { length: 512 }),
  isActive: boolean('is_active'),
  createdAt: createdAt(),
  driver: varchar('driver', { length: 64 }).notNull(),
  driverOpts: jsonb('driver_opts').notNull(),
  scheduler: varchar('scheduler', { length: 64 }).notNull(),
  schedulerOpts: jsonb('scheduler_opts').notNull(),
});
export const scalingGroupsConstraints = (t: TableColumns<ReturnType<typeof scalingGroupsColumns>>) => [
  pk(t.name),
  ix(t.isActive),
];
export const scalingGroups = pgTable('scaling_groups', scalingGroupsColumns(), scalingGroupsConstraints);

export const sgroupsForDomains = pgTable(
  'sgroups_for_domains',
  {
    scalingGroup: varchar('scaling_group', { length: 64 }).notNull(),
    domain: varchar('domain', { length: 64 }).notNull(),
  },
  (t) => [
    fk(t.domain, domains.name, { cascade: true }),
    fk(t.scalingGroup, scalingGroups.name, { cascade: true }),
    unique('uq_sgroup_domain').on(t.scalingGroup, t.domain),
    ix(t.domain),
    ix(t.scalingGroup),
  ],
);

export const sgroupsForGroups = pgTable(
  'sgroups_for_groups',
  {
    scalingGroup: varchar('scaling_group', { length: 64 }).notNull(),
    group: uuid('group').notNull(),
  },
  (t) => [
    fk(t.group, groups.id, { cascade: true }),
    fk(t.scalingGroup, scalingGroups.name, { cascade: true }),
    unique('uq_sgroup_ugroup').on(t.scalingGroup, t.group),
    ix(t.group),
    ix(t.scalingGroup),
  ],
);

export const sgroupsForKeypairs = pgTable(
  'sgroups_for_keypairs',
  {
    scalingGroup: varchar('scaling_group', { length: 64 }).notNull(),
    accessKey: varchar('access_key', { length: 20 }).notNull(),
  },
  (t) => [
    fk(t.accessKey, keypairs.accessKey, { cascade: true }),
    fk(t.scalingGroup, scalingGroups.name, { cascade: true }),
    unique('uq_sgroup_akey').on(t.scalingGroup, t.accessKey),
    ix(t.accessKey),
    ix(t.scalingGroup),
  ],
);

export const agentsColumns = () => ({
  id: varchar('id', { length: 64 }).notNull(),
  status: agentStatus('status').notNull(),
  statusChanged: timestamptz('status_changed'),
  region: varchar('region', { length: 64 }).notNull(),
  scalingGroup: varchar('scaling_group', { length: 64 }).notNull().default('default'),
  schedulable: boolean('schedulable').notNull().default(true),
  availableSlots: jsonb('available_slots').$type<ResourceSlots>().notNull(),
  occupiedSlots: jsonb('occupied_slots').$type<ResourceSlots>().notNull(),
  addr: varchar('addr', { length: 128 }).notNull(),
  firstContact: createdAt('first_contact'),
  lostAt: timestamptz('lost_at'),
  version: varchar('version', { length: 64 }).notNull(),
  computePlugins: jsonb('compute_plugins').notNull(),
});
export const agentsConstraints = (t: TableColumns<ReturnType<typeof agentsColumns>>) => [
  pk(t.id),
  fk(t.scalingGroup, scalingGroups.name),
  ix(t.region),
  ix(t.scalingGroup),
  ix(t.status),
];
export const agents = pgTable('agents', agentsColumns(), agentsConstraints);

// ── kernels ───────────────────────────────────────────────────────────────────────────────
export const kernelsColumns = () => ({
  id: idColumn('id'),
  sessionId: uuid('session_id').notNull(),
  sessionCreationId: varchar('session_creation_id', { length: 32 }),
  sessionName: varchar('session_name', { length: 64 }),
  sessionType: sessionTypes('session_type').notNull().default('INTERACTIVE'),
  // The DB default is the enum *name*; registry.py writes the value ('single-node') explicitly.
  clusterMode: varchar('cluster_mode', { length: 16 }).notNull().default('SINGLE_NODE'),
  clusterSize: integer('cluster_size').notNull(),
  clusterRole: varchar('cluster_role', { length: 16 }).notNull(),
  clusterIdx: integer('cluster_idx').notNull(),
  clusterHostname: varchar('cluster_hostname', { length: 64 }).notNull(),
  scalingGroup: varchar('scaling_group', { length: 64 }),
  agent: varchar('agent', { length: 64 }),
  agentAddr: varchar('agent_addr', { length: 128 }),
  domainName: varchar('domain_name', { length: 64 }).notNull(),
  groupId: uuid('group_id').notNull(),
  userUuid: uuid('user_uuid').notNull(),
  accessKey: varchar('access_key', { length: 20 }),
  image: varchar('image', { length: 512 }),
  registry: varchar('registry', { length: 512 }),
  tag: varchar('tag', { length: 64 }),
  containerId: varchar('container_id', { length: 64 }),
  occupiedSlots: jsonb('occupied_slots').$type<ResourceSlots>().notNull(),
  occupiedShares: jsonb('occupied_shares').notNull(),
  environ: varcharArray('environ'),
  mounts: varcharArray('mounts'),
  mountMap: jsonb('mount_map'),
  attachedDevices: jsonb('attached_devices'),
  resourceOpts: jsonb('resource_opts'),
  bootstrapScript: varchar('bootstrap_script', { length: 16384 }),
  kernelHost: varchar('kernel_host', { length: 128 }),
  replInPort: integer('repl_in_port').notNull(),
  replOutPort: integer('repl_out_port').notNull(),
  stdinPort: integer('stdin_port').notNull(),
  stdoutPort: integer('stdout_port').notNull(),
  servicePorts: jsonb('service_ports'),
  preopenPorts: integer('preopen_ports').array(),
  createdAt: createdAt(),
  terminatedAt: timestamptz('terminated_at'),
  startsAt: timestamptz('starts_at'),
  status: kernelStatus('status').notNull().default('PENDING'),
  statusChanged: timestamptz('status_changed'),
  statusInfo: varchar('status_info'),
  statusData: jsonb('status_data'),
  startupCommand: text('startup_command'),
  result: sessionResult('result').notNull().default('UNDEFINED'),
  internalData: jsonb('internal_data'),
  containerLog: bytea('container_log'),
  numQueries: bigint('num_queries', { mode: 'number' }),
  lastStat: jsonb('last_stat'),
});

export const kernelsConstraints = (t: TableColumns<ReturnType<typeof kernelsColumns>>) => [
  pk(t.id),
  fk(t.accessKey, keypairs.accessKey),
  fk(t.agent, agents.id),
  fk(t.domainName, domains.name),
  fk(t.groupId, groups.id),
  fk(t.scalingGroup, scalingGroups.name),
  fk(t.userUuid, users.uuid),
  ix(t.clusterRole),
  ix(t.createdAt),
  ix(t.result),
  ix(t.scalingGroup),
  index('ix_kernels_sess_id_role').on(t.sessionId, t.clusterRole),
  ix(t.sessionId),
  ix(t.sessionName),
  ix(t.sessionType),
  ix(t.status),
  ix(t.statusChanged),
  index('ix_kernels_status_role').on(t.status, t.clusterRole),
  ix(t.terminatedAt),
  // The predicate is written as PostgreSQL deparses it, so catalogs compare textually.
  uniqueIndex('ix_kernels_unique_sess_token')
    .on(t.accessKey, t.sessionName)
    .where(
      sql`(status <> ALL (ARRAY['TERMINATED'::kernelstatus, 'CANCELLED'::kernelstatus])) AND ((cluster_role)::text = 'main'::text)`,
    ),
  // Backend.AI passes quoted *string constants*, not columns: a useless index kept as-is (§1).
  index('ix_kernels_updated_order').on(
    sql`GREATEST('created_at'::text, 'terminated_at'::text, 'status_changed'::text)`,
  ),
];
export const kernels = pgTable('kernels', kernelsColumns(), kernelsConstraints);

export const sessionDependencies = pgTable(
  'session_dependencies',
  {
    sessionId: uuid('session_id').notNull(),
    dependsOn: uuid('depends_on').notNull(),
  },
  (t) => [
    pk(t.sessionId, t.dependsOn),
    fk(t.dependsOn, kernels.id, { cascade: true }),
    fk(t.sessionId, kernels.id, { cascade: true }),
    ix(t.dependsOn),
    ix(t.sessionId),
  ],
);

export const sessionTemplates = pgTable(
  'session_templates',
  {
    id: idColumn('id'),
    // No server default at this head; the 21.09.3+ model adds now() but no migration does (§2.3).
    createdAt: timestamptz('created_at'),
    isActive: boolean('is_active'),
    domainName: varchar('domain_name', { length: 64 }).notNull(),
    groupId: uuid('group_id'),
    userUuid: uuid('user_uuid').notNull(),
    type: templateType('type').notNull().default('TASK'),
    name: varchar('name', { length: 128 }),
    template: jsonb('template').notNull(),
  },
  (t) => [
    pk(t.id),
    fk(t.domainName, domains.name),
    fk(t.groupId, groups.id),
    fk(t.userUuid, users.uuid),
    ix(t.createdAt),
    ix(t.type),
    ix(t.userUuid),
  ],
);

// ── error logs ────────────────────────────────────────────────────────────────────────────
export const errorLogs = pgTable(
  'error_logs',
  {
    id: idColumn('id'),
    createdAt: createdAt(),
    severity: errorlogSeverity('severity'),
    source: varchar('source'),
    user: uuid('user'),
    isRead: boolean('is_read'),
    isCleared: boolean('is_cleared'),
    message: text('message'),
    contextLang: varchar('context_lang'),
    contextEnv: jsonb('context_env'),
    requestUrl: varchar('request_url'),
    requestStatus: integer('request_status'),
    traceback: text('traceback'),
  },
  (t) => [
    pk(t.id),
    fk(t.user, users.uuid),
    ix(t.createdAt),
    ix(t.isCleared),
    ix(t.isRead),
    ix(t.severity),
    ix(t.user),
  ],
);

// ── vfolders ──────────────────────────────────────────────────────────────────────────────
export const vfolders = pgTable(
  'vfolders',
  {
    id: idColumn('id'),
    host: varchar('host', { length: 128 }).notNull(),
    name: varchar('name', { length: 64 }).notNull(),
    usageMode: vfolderUsageMode('usage_mode').notNull(),
    permission: vfolderPermission('permission'),
    maxFiles: integer('max_files'),
    maxSize: integer('max_size'),
    numFiles: integer('num_files'),
    curSize: integer('cur_size'),
    createdAt: createdAt(),
    lastUsed: timestamptz('last_used'),
    creator: varchar('creator', { length: 128 }),
    unmanagedPath: varchar('unmanaged_path', { length: 512 }),
    ownershipType: vfolderOwnershipType('ownership_type').notNull(),
    user: uuid('user'),
    group: uuid('group'),
    cloneable: boolean('cloneable').notNull(),
  },
  (t) => [
    pk(t.id),
    fk(t.group, groups.id),
    fk(t.user, users.uuid),
    // Expressions as PostgreSQL deparses them (pg_get_constraintdef minus the outer CHECK (…)).
    check(
      'ck_vfolders_either_one_of_user_or_group',
      sql`((("user" IS NULL) AND ("group" IS NOT NULL)) OR (("user" IS NOT NULL) AND ("group" IS NULL)))`,
    ),
    check(
      'ck_vfolders_ownership_type_match_with_user_or_group',
      sql`(((ownership_type = 'user'::vfolderownershiptype) AND ("user" IS NOT NULL)) OR ((ownership_type = 'group'::vfolderownershiptype) AND ("group" IS NOT NULL)))`,
    ),
    ix(t.name),
  ],
);

export const vfolderAttachment = pgTable(
  'vfolder_attachment',
  {
    vfolder: uuid('vfolder').notNull(),
    kernel: uuid('kernel').notNull(),
  },
  (t) => [
    pk(t.vfolder, t.kernel),
    fk(t.kernel, kernels.id, { cascade: true }),
    fk(t.vfolder, vfolders.id, { cascade: true }),
  ],
);

export const vfolderInvitations = pgTable(
  'vfolder_invitations',
  {
    id: idColumn('id'),
    permission: vfolderPermission('permission'),
    inviter: varchar('inviter', { length: 256 }),
    invitee: varchar('invitee', { length: 256 }).notNull(),
    state: vfolderInvitationState('state'),
    createdAt: createdAt(),
    modifiedAt: timestamptz('modified_at'),
    vfolder: uuid('vfolder').notNull(),
  },
  (t) => [pk(t.id), fk(t.vfolder, vfolders.id, { cascade: true })],
);

/** No primary key and no unique constraint, as in Backend.AI. */
export const vfolderPermissions = pgTable(
  'vfolder_permissions',
  {
    permission: vfolderPermission('permission'),
    vfolder: uuid('vfolder').notNull(),
    user: uuid('user').notNull(),
  },
  (t) => [fk(t.user, users.uuid), fk(t.vfolder, vfolders.id, { cascade: true })],
);

/** Every table at 8679d0a7e22b, keyed by drizzle name: pass to `drizzle(pool, { schema })`. */
export const schema2103 = {
  agents,
  alembicVersion,
  associationGroupsUsers,
  domains,
  errorLogs,
  groups,
  kernels,
  keypairResourcePolicies,
  keypairs,
  resourcePresets,
  scalingGroups,
  sessionDependencies,
  sessionTemplates,
  sgroupsForDomains,
  sgroupsForGroups,
  sgroupsForKeypairs,
  users,
  vfolderAttachment,
  vfolderInvitations,
  vfolderPermissions,
  vfolders,
};
