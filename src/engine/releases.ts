/**
 * Backend.AI's alembic revisions in the order mgr (and alembic 1.8) applies them, and which
 * release each head means (backend-ai.md §1.7). The release is read from `alembic_version`,
 * never guessed: a revision not listed here is reported as unknown.
 */
export const REVISION_CHAIN = [
  '518ecf41f567', // add_index_for_cluster_role: head of 21.03.0-21.03.2
  '8679d0a7e22b', // add_scheduled_to_kernelstatus: head of 21.03.3+ and 21.09.0-21.09.2
  '60a1effa77d2', // add wsproxy_addr: head of 21.09.3+
  '015d84d5a5ef', // add_image_table
  '911023380bc9', // add_architecture_column_on_agents
  '7dd1d81c3204', // add_vfolder_mounts_to_kernels (second branch)
  '0f7a4b643940', // merge: head of 22.03.0a1
  '11146ba02235', // change_char_col_to_str
  'd59ff89e7514', // remove_keypair_concurrency_used (second branch)
  'a7ca9f175d5f', // merge
  'd727b5da20e6', // add_callback_url_to_kernels
  '81c264528f20', // add_max_session_lifetime: head of 22.03
] as const;

export type Revision = (typeof REVISION_CHAIN)[number];

/**
 * The rows `alembic_version` holds after each revision. While two branches are open alembic
 * keeps one row per branch head (backend-ai-schema.md §2.2); mgr writes exactly the same.
 */
export const ALEMBIC_ROWS_AFTER: Record<Revision, string[]> = {
  '518ecf41f567': ['518ecf41f567'],
  '8679d0a7e22b': ['8679d0a7e22b'],
  '60a1effa77d2': ['60a1effa77d2'],
  '015d84d5a5ef': ['015d84d5a5ef'],
  '911023380bc9': ['911023380bc9'],
  '7dd1d81c3204': ['7dd1d81c3204', '911023380bc9'],
  '0f7a4b643940': ['0f7a4b643940'],
  '11146ba02235': ['11146ba02235'],
  'd59ff89e7514': ['11146ba02235', 'd59ff89e7514'],
  'a7ca9f175d5f': ['a7ca9f175d5f'],
  'd727b5da20e6': ['d727b5da20e6'],
  '81c264528f20': ['81c264528f20'],
};

export interface ReleaseInfo {
  /** mgr's release name: a string, so "22.10" is never "22.1". */
  release: string;
  /** Which Backend.AI versions have this head. */
  versions: string;
  head: Revision;
}

export const RELEASE_HEADS: ReleaseInfo[] = [
  { release: '21.03', versions: '21.03.0-21.03.2', head: '518ecf41f567' },
  { release: '21.03', versions: '21.03.3-21.03.32 (also 21.09.0-21.09.2)', head: '8679d0a7e22b' },
  { release: '21.09', versions: '21.09.3-21.09.9', head: '60a1effa77d2' },
  { release: '22.03', versions: '22.03.0-22.03.14', head: '81c264528f20' },
];

/** The upgrade modules mgr has, in order, with the head each one ends at. */
export const MODULE_TARGETS: { release: string; head: Revision }[] = [
  { release: '21.09', head: '60a1effa77d2' },
  { release: '22.03', head: '81c264528f20' },
];

export type Detected =
  | { kind: 'empty' } // no alembic_version table: not a Backend.AI database
  | { kind: 'unknown'; rows: string[] }
  | {
      kind: 'known';
      rows: string[];
      /** Position in REVISION_CHAIN of the newest applied revision. */
      position: number;
      revision: Revision;
      /** The release whose head this is, or undefined while between heads (an interrupted upgrade). */
      release: ReleaseInfo | undefined;
      /** The last release fully reached. */
      reached: string;
      /** Modules still to apply, in order. */
      pending: string[];
    };

export function revisionIndex(rev: string): number {
  return (REVISION_CHAIN as readonly string[]).indexOf(rev);
}

export function detectFromRows(rows: string[]): Detected {
  if (rows.length === 0) return { kind: 'unknown', rows };
  const idx = rows.map(revisionIndex);
  if (idx.some((i) => i < 0)) return { kind: 'unknown', rows };
  const position = Math.max(...idx);
  const revision = REVISION_CHAIN[position]!;
  const expected = ALEMBIC_ROWS_AFTER[revision];
  if ([...rows].sort().join() !== [...expected].sort().join()) return { kind: 'unknown', rows };
  const release = RELEASE_HEADS.find((r) => r.head === revision);
  const reachedHead = [...RELEASE_HEADS].reverse().find((r) => revisionIndex(r.head) <= position)!;
  const pending = MODULE_TARGETS.filter((m) => revisionIndex(m.head) > position).map((m) => m.release);
  return { kind: 'known', rows, position, revision, release, reached: reachedHead.release, pending };
}

/** Orders release names numerically by part: "21.09" < "22.03" < "22.10". */
export function compareReleases(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
