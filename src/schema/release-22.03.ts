/**
 * Backend.AI 22.03 (head 81c264528f20) as the *migrations* leave it (backend-ai-schema.md
 * §2.2, §2.3, §3), which is what mgr must produce and what `schema2203` types queries against:
 * - new enum `image_type` and tables `images`, `image_aliases` (015d84d5a5ef);
 * - `agents.architecture` varchar(32) NOT NULL, `kernels.architecture` unbounded varchar NOT
 *   NULL, both without a server default (911023380bc9, 11146ba02235);
 * - `kernels.vfolder_mounts` json (not jsonb) and index `ix_keypairs_resource_policy`
 *   (7dd1d81c3204);
 * - `keypairs.concurrency_used` dropped (d59ff89e7514);
 * - `kernels.callback_url` text (d727b5da20e6);
 * - `keypair_resource_policies.max_session_lifetime` integer NOT NULL DEFAULT 0 (81c264528f20).
 * Added columns are appended, as ALTER TABLE ADD COLUMN does.
 */
import { sql } from 'drizzle-orm';
import { bigint, char, index, integer, json, jsonb, pgEnum, pgTable, text, timestamp, uniqueIndex, uuid, varchar } from 'drizzle-orm/pg-core';
import {
  agentsColumns,
  agentsConstraints,
  kernelsColumns,
  kernelsConstraints,
  keypairResourcePoliciesColumns,
  keypairResourcePoliciesConstraints,
  keypairsColumns,
  keypairsConstraints,
} from './baseline-21.03.js';
import { schema2109 } from './release-21.09.js';
import { fk, ix, pk } from './conventions.js';

export {
  agentStatus,
  kernelStatus,
  sessionTypes,
  sessionResult,
  defaultForUnspecified,
  templateType,
  userRole,
  userStatus,
  vfolderPermission,
  vfolderInvitationState,
  vfolderOwnershipType,
  vfolderUsageMode,
  errorlogSeverity,
  alembicVersion,
  associationGroupsUsers,
  domains,
  errorLogs,
  groups,
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
} from './release-21.09.js';

/** `sa.Enum(ImageType, name="image_type")`: member names; the rescan always writes COMPUTE. */
export const imageType = pgEnum('image_type', ['COMPUTE', 'SYSTEM', 'SERVICE']);

/** Resource limits an image declares: slot → {min, max} as decimal strings (§3.2). */
export type ImageResources = Record<string, { min: string; max: string | null }>;

export const images = pgTable(
  'images',
  {
    id: uuid('id')
      .notNull()
      .default(sql`uuid_generate_v4()`),
    /** Canonical ref `{registry}/{image}:{tag}`. */
    name: varchar('name').notNull(),
    /** Repository path, e.g. `stable/python`. */
    image: varchar('image').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).defaultNow(),
    tag: varchar('tag').notNull(),
    /** Registry *name* as in etcd. */
    registry: varchar('registry').notNull(),
    architecture: varchar('architecture').notNull().default('x86_64'),
    /** `sha256:<64 hex>`; char(72) blank-pads. */
    configDigest: char('config_digest', { length: 72 }).notNull(),
    sizeBytes: bigint('size_bytes', { mode: 'number' }).notNull(),
    type: imageType('type').notNull(),
    accelerators: varchar('accelerators'),
    labels: jsonb('labels').$type<Record<string, string>>().notNull(),
    resources: jsonb('resources').$type<ImageResources>().notNull(),
  },
  (t) => [
    pk(t.id),
    index('ix_image_image_tag_registry').on(t.image, t.tag, t.registry),
    // (name, architecture) is the rescan's upsert key: a unique index, not a constraint.
    uniqueIndex('ix_image_name_architecture').on(t.name, t.architecture),
    ix(t.architecture),
    ix(t.createdAt),
    ix(t.image),
    ix(t.name),
    ix(t.registry),
    ix(t.tag),
  ],
);

export const imageAliases = pgTable(
  'image_aliases',
  {
    id: uuid('id')
      .notNull()
      .default(sql`uuid_generate_v4()`),
    alias: varchar('alias'),
    image: uuid('image').notNull(),
  },
  (t) => [
    pk(t.id),
    // NO ACTION: aliases must be deleted before their image.
    fk(t.image, images.id),
    uniqueIndex('ix_image_alias_unique_ref').on(t.image, t.alias),
    uniqueIndex('ix_image_aliases_alias').on(t.alias),
  ],
);

export const agents = pgTable(
  'agents',
  { ...agentsColumns(), architecture: varchar('architecture', { length: 32 }).notNull() },
  agentsConstraints,
);

export const kernels = pgTable(
  'kernels',
  {
    ...kernelsColumns(),
    architecture: varchar('architecture').notNull(),
    vfolderMounts: json('vfolder_mounts'),
    callbackUrl: text('callback_url'),
  },
  kernelsConstraints,
);

const { concurrencyUsed: _droppedIn2203, ...keypairsColumns2203 } = keypairsColumns();
export const keypairs = pgTable('keypairs', keypairsColumns2203, (t) => [
  ...keypairsConstraints(t),
  ix(t.resourcePolicy),
]);

export const keypairResourcePolicies = pgTable(
  'keypair_resource_policies',
  { ...keypairResourcePoliciesColumns(), maxSessionLifetime: integer('max_session_lifetime').notNull().default(0) },
  keypairResourcePoliciesConstraints,
);

/** Every table at 81c264528f20, keyed by drizzle name: pass to `drizzle(pool, { schema })`. */
export const schema2203 = {
  ...schema2109,
  agents,
  kernels,
  keypairs,
  keypairResourcePolicies,
  images,
  imageAliases,
};
