export * from './types.js';
export { ensureBbmTables, bbmTablesExist } from './schema.js';
export { registerBackgroundMigration, backgroundMigrationDefinition, registeredBackgroundMigrations } from './registry.js';
export {
  enqueueBackgroundMigration,
  backgroundMigrationStatus,
  pauseBackgroundMigration,
  resumeBackgroundMigration,
  setBatchSize,
  findMigration,
  getMigration,
  listMigrations,
  progressPct,
  DEFAULT_MAX_ATTEMPTS,
  DEFAULT_STALE_AFTER_MS,
} from './admin.js';
export type { EnqueueOptions, MigrationStatus, StatusChange } from './admin.js';
export { runBackgroundMigrations, unfinishedError } from './worker.js';
export type { RunOptions, RunSummary, RunOutcome, BatchEvent } from './worker.js';
export { pgKeysetCursor, pgKeysetBounds } from './pg-keyset.js';
