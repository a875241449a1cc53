import type { UpgradeModule } from '../engine/types.js';
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
    // "The image metadata database is migrated from etcd to PostgreSQL."
    schemaStep('015d84d5a5ef'),
    // Agents and kernels record their architecture (multi-arch images).
    schemaStep('911023380bc9'),
    schemaStep('7dd1d81c3204'),
    schemaStep('0f7a4b643940'),
    schemaStep('11146ba02235'),
    // "The keypairs.concurrency_used column is dropped and it will use Redis to keep track of it."
    keypairConcurrencyStep(),
    schemaStep('d59ff89e7514'),
    schemaStep('a7ca9f175d5f'),
    schemaStep('d727b5da20e6'),
    schemaStep('81c264528f20'),
  ],
};
