import { defineConfig } from 'drizzle-kit';

/**
 * drizzle-kit over mgr's model of Backend.AI's tables (src/schema/). Each release file exports
 * every table of that release, and the releases share table names, so drizzle-kit reads ONE
 * release at a time: 22.03 by default, another with MGR_SCHEMA_RELEASE=21.03 or 21.09.
 * Backend.AI's schema is changed by mgr's own upgrade steps, not by drizzle-kit migrations;
 * `drizzle-kit generate` here is for inspecting the DDL drizzle would emit.
 */
const RELEASE_FILES: Record<string, string> = {
  '21.03': './src/schema/baseline-21.03.ts',
  '21.09': './src/schema/release-21.09.ts',
  '22.03': './src/schema/release-22.03.ts',
};
const release = process.env.MGR_SCHEMA_RELEASE ?? '22.03';
const schema = RELEASE_FILES[release];
if (!schema) throw new Error(`MGR_SCHEMA_RELEASE=${release}: allowed are ${Object.keys(RELEASE_FILES).join(', ')}`);

export default defineConfig({
  dialect: 'postgresql',
  schema,
  out: 'drizzle/generated',
});
