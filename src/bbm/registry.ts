import { MgrError } from '../errors.js';
import type { BackgroundMigrationDefinition } from './types.js';

/** Work functions by job_signature_name. A row naming one this process lacks fails with code 3. */
const definitions = new Map<string, BackgroundMigrationDefinition>();

/**
 * Registers a work function. Registering the same definition object again is a no-op (modules
 * may be imported twice); a different definition under a taken name is rejected.
 */
export function registerBackgroundMigration(def: BackgroundMigrationDefinition): void {
  const existing = definitions.get(def.name);
  if (existing === def) return;
  if (existing) throw new MgrError('internal', `a background migration named "${def.name}" is already registered`);
  definitions.set(def.name, def);
}

export function backgroundMigrationDefinition(name: string): BackgroundMigrationDefinition | undefined {
  return definitions.get(name);
}

export function registeredBackgroundMigrations(): string[] {
  return [...definitions.keys()].sort();
}
