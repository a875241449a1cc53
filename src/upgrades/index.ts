import type { UpgradeModule } from '../engine/types.js';
import { release2109 } from './21.09.js';
import { release2203 } from './22.03.js';

/** Every upgrade module mgr has, oldest first. */
export const MODULES: UpgradeModule[] = [release2109, release2203];
