// Store checksums for tests: compare the stores before and after a job that must keep data as it was.
export { pgChecksums, etcdChecksum, redisChecksums, redisTtls, type TableSum, type TtlMode } from '../../src/backup/checksums.js';
