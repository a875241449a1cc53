/**
 * What 21.09.3+ (head 60a1effa77d2) changes: `scaling_groups.wsproxy_addr` varchar(1024) NULL,
 * appended after the 21.03 columns. Every other table is the baseline's.
 */
import { pgTable, varchar } from 'drizzle-orm/pg-core';
import { scalingGroupsColumns, scalingGroupsConstraints, schema2103 } from './baseline-21.03.js';

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
} from './baseline-21.03.js';

export const scalingGroups = pgTable(
  'scaling_groups',
  { ...scalingGroupsColumns(), wsproxyAddr: varchar('wsproxy_addr', { length: 1024 }) },
  scalingGroupsConstraints,
);

/** Every table at 60a1effa77d2. */
export const schema2109 = { ...schema2103, scalingGroups };
