import { describe, expect, it } from 'vitest';
import { ALEMBIC_ROWS_AFTER, compareReleases, detectFromRows, REVISION_CHAIN } from '../../src/engine/releases.js';

/** Heads per release from backend-ai.md §1.7 / backend-ai-schema.md §2.1 (shared/reference). */
describe('release detection from alembic_version', () => {
  it.each([
    ['518ecf41f567', '21.03', '21.03.0-21.03.2', ['21.09', '22.03']],
    ['8679d0a7e22b', '21.03', '21.03.3-21.03.32 (also 21.09.0-21.09.2)', ['21.09', '22.03']],
    ['60a1effa77d2', '21.09', '21.09.3-21.09.9', ['22.03']],
    ['81c264528f20', '22.03', '22.03.0-22.03.14', []],
  ])('head %s is %s (%s), pending %j', (head, release, versions, pending) => {
    const d = detectFromRows([head]);
    expect(d.kind).toBe('known');
    if (d.kind !== 'known') return;
    expect(d.reached).toBe(release);
    expect(d.release?.versions).toBe(versions);
    expect(d.pending).toEqual(pending);
    expect(d.revision).toBe(head);
  });

  it('an intermediate revision of the 22.03 chain has reached 21.09 with 22.03 pending and no release of its own', () => {
    for (const rev of ['015d84d5a5ef', '911023380bc9', '0f7a4b643940', '11146ba02235', 'a7ca9f175d5f', 'd727b5da20e6']) {
      const d = detectFromRows([rev]);
      expect(d.kind, rev).toBe('known');
      if (d.kind !== 'known') continue;
      expect(d.release, rev).toBeUndefined();
      expect(d.reached).toBe('21.09');
      expect(d.pending).toEqual(['22.03']);
    }
  });

  it('the two rows alembic keeps while a branch is open are recognised, in either order', () => {
    for (const rows of [['7dd1d81c3204', '911023380bc9'], ['911023380bc9', '7dd1d81c3204']]) {
      const d = detectFromRows(rows);
      expect(d).toMatchObject({ kind: 'known', revision: '7dd1d81c3204', reached: '21.09', pending: ['22.03'] });
    }
    const d = detectFromRows(['d59ff89e7514', '11146ba02235']);
    expect(d).toMatchObject({ kind: 'known', revision: 'd59ff89e7514' });
  });

  it('a second row that alembic would never leave is unknown, not guessed', () => {
    expect(detectFromRows(['8679d0a7e22b', '60a1effa77d2'])).toEqual({ kind: 'unknown', rows: ['8679d0a7e22b', '60a1effa77d2'] });
    expect(detectFromRows(['7dd1d81c3204'])).toMatchObject({ kind: 'unknown' }); // the branch row alone
  });

  it('unknown revisions and an empty table are unknown', () => {
    expect(detectFromRows(['dc9b66466e43'])).toEqual({ kind: 'unknown', rows: ['dc9b66466e43'] }); // 21.03.0's predecessor
    expect(detectFromRows(['0123456789ab'])).toEqual({ kind: 'unknown', rows: ['0123456789ab'] });
    expect(detectFromRows(['8679d0a7e22b', 'cafebabe0000'])).toMatchObject({ kind: 'unknown' });
    expect(detectFromRows([])).toEqual({ kind: 'unknown', rows: [] });
  });

  it('every revision of the chain has its alembic rows listed, ending with itself', () => {
    for (const rev of REVISION_CHAIN) expect(ALEMBIC_ROWS_AFTER[rev]).toContain(rev);
    expect(REVISION_CHAIN.at(-1)).toBe('81c264528f20');
  });
});

describe('compareReleases', () => {
  it('orders by number per part, so 22.10 comes after 22.1 and 22.03', () => {
    expect(compareReleases('22.10', '22.1')).toBeGreaterThan(0);
    expect(compareReleases('22.1', '22.10')).toBeLessThan(0);
    expect(compareReleases('22.10', '22.03')).toBeGreaterThan(0);
    expect(compareReleases('21.09', '22.03')).toBeLessThan(0);
    expect(compareReleases('22.03', '22.03')).toBe(0);
    expect(compareReleases('22.03', '22.03.0')).toBe(0);
    expect(['22.03', '21.09', '22.10', '21.03'].sort(compareReleases)).toEqual(['21.03', '21.09', '22.03', '22.10']);
  });
});
