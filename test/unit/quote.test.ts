import { describe, expect, it } from 'vitest';
import { quote, unquote } from '../../src/stores/index.js';

/**
 * Expected values produced by CPython 3.11 `urllib.parse.quote(s, safe="")` and
 * `urllib.parse.unquote(s)`, which Backend.AI uses for etcd keys (backend-ai.md §2.1).
 */
const PYTHON_QUOTE: Record<string, string> = {
  'cr.backend.ai': 'cr.backend.ai',
  'stable/python': 'stable%2Fpython',
  'localhost:5000': 'localhost%3A5000',
  'user@host': 'user%40host',
  "!'()*": '%21%27%28%29%2A',
  'a b+c': 'a%20b%2Bc',
  '한국어': '%ED%95%9C%EA%B5%AD%EC%96%B4',
  '~_.-': '~_.-',
  'a%2Fb': 'a%252Fb',
  'emoji😀': 'emoji%F0%9F%98%80',
  'semi;colon,comma=eq&amp?q#h': 'semi%3Bcolon%2Ccomma%3Deq%26amp%3Fq%23h',
  'Ä': '%C3%84',
};

const PYTHON_UNQUOTE: Record<string, string> = {
  '%2F': '/',
  'a+b': 'a+b',
  '%E1%84%92': 'ᄒ',
  '%ZZ': '%ZZ',
  '100%': '100%',
  '%41%42': 'AB',
  '%ed%95%9c': '한',
  '%C3%A4%2': 'ä%2',
};

describe('quote/unquote as Python urllib with safe=""', () => {
  it.each(Object.entries(PYTHON_QUOTE))('quote(%j) = %j', (input, expected) => {
    expect(quote(input)).toBe(expected);
  });

  it.each(Object.entries(PYTHON_UNQUOTE))('unquote(%j) = %j', (input, expected) => {
    expect(unquote(input)).toBe(expected);
  });

  it('escapes what encodeURIComponent leaves alone, with uppercase hex, and keeps "+" literal', () => {
    expect(encodeURIComponent("!'()*")).toBe("!'()*"); // the difference quote() must make up for
    expect(quote("!'()*")).toBe('%21%27%28%29%2A');
    expect(quote('ü')).toMatch(/^%C3%BC$/);
    expect(unquote('a+b%20c')).toBe('a+b c');
  });

  it('round-trips every string it quotes', () => {
    for (const s of [...Object.keys(PYTHON_QUOTE), 'images/_aliases', 'a:b/c@d', '%', '']) expect(unquote(quote(s))).toBe(s);
  });
});
