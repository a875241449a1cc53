import type { UpgradeModule } from '../engine/types.js';
import { schemaStep } from './schema-step.js';

/**
 * 21.03 → 21.09 (Backend.AI MIGRATION.md: "alembic upgrade head is required to migrate the
 * PostgreSQL database schema"). Nothing else changes in etcd or Redis.
 */
export const release2109: UpgradeModule = {
  release: '21.09',
  fromHeads: ['518ecf41f567', '8679d0a7e22b'],
  head: '60a1effa77d2',
  steps: [
    // 21.03.0-21.03.2 stop one revision short: kernelstatus gains SCHEDULED.
    schemaStep('8679d0a7e22b'),
    // 21.09.3: scaling groups get a wsproxy address.
    schemaStep('60a1effa77d2'),
  ],
};
