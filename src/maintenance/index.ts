import os from 'node:os';
import { z } from 'zod';
import { MgrError } from '../errors.js';
import type { EtcdStore } from '../stores/etcd.js';

/**
 * Maintenance mode: mgr's own marker in etcd that every mgr job honours (jobs that delete data
 * refuse while it is set), plus the manager's own `manager/status` key set to "frozen" so a
 * manager started by mistake schedules nothing. The previous status is kept in the marker and
 * put back when maintenance ends.
 */
export const MAINTENANCE_KEY = 'mgr/maintenance';
export const MANAGER_STATUS_KEY = 'manager/status';

const markerSchema = z.object({
  reason: z.string(),
  by: z.string(),
  host: z.string(),
  pid: z.number(),
  since: z.string(),
  /** manager/status before maintenance began (null: the key did not exist). */
  previousManagerStatus: z.string().nullable(),
});
export type MaintenanceMarker = z.infer<typeof markerSchema>;

export async function getMaintenance(etcd: EtcdStore): Promise<MaintenanceMarker | undefined> {
  const raw = await etcd.get(MAINTENANCE_KEY);
  if (raw === null) return undefined;
  try {
    return markerSchema.parse(JSON.parse(raw));
  } catch {
    throw new MgrError('integrity', `etcd key ${etcd.abs(MAINTENANCE_KEY)} holds an unreadable maintenance marker: ${raw.slice(0, 200)}`, {
      hint: 'inspect it, then clear it with: mgr maintenance off --force',
    });
  }
}

/**
 * Turns maintenance on. Returns the marker and whether this call created it (an upgrade resumed
 * after a crash finds its own earlier marker and keeps it).
 */
export async function enterMaintenance(
  etcd: EtcdStore,
  opts: { reason: string; by: string },
): Promise<{ marker: MaintenanceMarker; created: boolean }> {
  const existing = await getMaintenance(etcd);
  if (existing) return { marker: existing, created: false };
  const marker: MaintenanceMarker = {
    reason: opts.reason,
    by: opts.by,
    host: os.hostname(),
    pid: process.pid,
    since: new Date().toISOString(),
    previousManagerStatus: await etcd.get(MANAGER_STATUS_KEY),
  };
  // Only create if absent, so two callers cannot both believe they own it.
  const res = await etcd.client
    .if(etcd.abs(MAINTENANCE_KEY), 'Create', '==', 0)
    .then(etcd.client.put(etcd.abs(MAINTENANCE_KEY)).value(JSON.stringify(marker)), etcd.client.put(etcd.abs(MANAGER_STATUS_KEY)).value('frozen'))
    .commit();
  if (!res.succeeded) return { marker: (await getMaintenance(etcd))!, created: false };
  return { marker, created: true };
}

/** Turns maintenance off and restores manager/status as it was before. */
export async function leaveMaintenance(etcd: EtcdStore): Promise<MaintenanceMarker | undefined> {
  const marker = await getMaintenance(etcd).catch(() => undefined);
  if (marker?.previousManagerStatus === null || marker === undefined) {
    if (marker) await etcd.delete(MANAGER_STATUS_KEY);
  } else {
    await etcd.put(MANAGER_STATUS_KEY, marker.previousManagerStatus);
  }
  await etcd.delete(MAINTENANCE_KEY);
  return marker;
}

/** For jobs that must not run during maintenance (clear-history, rescan --prune). */
export async function refuseDuringMaintenance(etcd: EtcdStore, job: string): Promise<void> {
  const m = await getMaintenance(etcd);
  if (m) {
    throw new MgrError('refused', `${job} refused: maintenance mode is on (${m.reason}, by ${m.by} on ${m.host} pid ${m.pid} since ${m.since})`, {
      hint: 'wait until the upgrade or backup finishes; if nothing is running, check `mgr maintenance status` and turn it off with `mgr maintenance off`',
      details: { maintenance: m },
    });
  }
}
