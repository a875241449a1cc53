// Backup and restore of PostgreSQL, etcd and Redis together, and upgrade rehearsals on a copy.
export {
  BUNDLE_FORMAT,
  DEFAULT_BACKUP_DIR,
  MANIFEST_FILE,
  RESTORE_STATE_FILE,
  bundleName,
  readManifest,
  type BackupManifest,
  type BackupPart,
  type BundleFile,
} from './bundle.js';
export { createBackup, CLEAR_HISTORY_LOCK, type BackupProgress, type CreateBackupOptions, type CreatedBackup } from './create.js';
export { verifyBackup, assertBackupValid, listBackups, type VerifyResult, type BundleSummary } from './verify.js';
export { restoreBackup, targetOccupancy, RESTORE_ORDER, type RestoreOptions, type RestoreReport, type RestoreProgress } from './restore.js';
export { pgChecksums, etcdChecksum, redisChecksums, redisTtls, type TableSum, type TtlMode } from './checksums.js';
export { rehearseUpgrade, type RehearsalOptions, type RehearsalReport, type RehearsalEvent } from './rehearse.js';
