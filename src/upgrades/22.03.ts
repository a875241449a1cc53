import type { UpgradeModule } from '../engine/types.js';
import { ensureImageMigrationFinishedStep, imagesFromEtcdStep } from '../images/etcd-migration.js';
import { lockBackendStep } from '../config/manager-toml-edit.js';
import { redisAofStep } from '../stores/redis-aof.js';
import { clearHistoryScheduleStep } from '../history/schedule.js';
import { keypairConcurrencyStep } from './keypair-concurrency.js';
import { schemaStep } from './schema-step.js';

/**
 * 21.09 → 22.03, in the order of Backend.AI's MIGRATION.md "21.09 to 22.03".
 */
export const release2203: UpgradeModule = {
  release: '22.03',
  fromHeads: ['60a1effa77d2'],
  head: '81c264528f20',
  steps: [
    // "The image metadata database is migrated from etcd to PostgreSQL while the registry
    // configuration is still inside the etcd." Backend.AI creates empty tables; mgr copies.
    schemaStep('015d84d5a5ef'),
    imagesFromEtcdStep(),
    // Agents and kernels record their architecture (multi-arch images).
    schemaStep('911023380bc9'),
    schemaStep('7dd1d81c3204'),
    schemaStep('0f7a4b643940'),
    schemaStep('11146ba02235'),
    // "The Redis container used with the manager should be reconfigured to use a persistent
    // database ... enable AOF by appendonly yes": before Redis becomes the only home of the
    // concurrency counters.
    redisAofStep(),
    // "The keypairs.concurrency_used column is dropped and it will use Redis to keep track of it."
    keypairConcurrencyStep(),
    schemaStep('d59ff89e7514'),
    schemaStep('a7ca9f175d5f'),
    schemaStep('d727b5da20e6'),
    schemaStep('81c264528f20'),
    // "The manager now has replacible distributed lock backend, configured by the key
    // manager.distributed-lock in manager.toml."
    lockBackendStep(),
    // "Configure an explicit cron job to execute backend.ai mgr clear-history -r {retention}."
    clearHistoryScheduleStep(),
    // With --background the image copy runs in workers; 22.03 is done only when it finished.
    ensureImageMigrationFinishedStep(),
  ],
};
