/**
 * mgr's model of Backend.AI's manager tables per release (drizzle pg-core) and the catalog
 * reader/differ that proves a database equals a release. Typed queries against an upgraded
 * database use `schema2203`, e.g. `schema2203.images`, `schema2203.kernels`.
 */
export { schema2103 } from './baseline-21.03.js';
export { schema2109 } from './release-21.09.js';
export { schema2203, type ImageResources } from './release-22.03.js';
export type { ResourceSlots } from './conventions.js';
export {
  readCatalog,
  diffCatalogs,
  CONSTRAINT_TYPES,
  type Catalog,
  type TableInfo,
  type ColumnInfo,
  type ConstraintInfo,
  type ConstraintType,
} from './catalog.js';

/** Extensions every release needs in the database; drizzle cannot declare them. */
export const REQUIRED_EXTENSIONS = ['uuid-ossp'] as const;
