import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { keepsEveryKey, resultAnswerId, swapId } from './raw-id.js';

/** Parses the swapped text and checks it is the original message with only the id changed. */
function assertSwapped(text: string, id: string | number, options?: { uniqueKeys?: boolean }): string {
  const out = swapId(text, id, options);
  assert.ok(out !== undefined, `no swap for ${text}`);
  assert.deepEqual(JSON.parse(out), { ...(JSON.parse(text) as object), id });
  return out;
}

describe('swapId', () => {
  it('replaces a numeric id with a string and a string id with a number, leaving the rest of the text as it was', () => {
    assert.equal(swapId('{"jsonrpc":"2.0","id":7,"method":"ping"}', 'client-1'), '{"jsonrpc":"2.0","id":"client-1","method":"ping"}');
    assert.equal(swapId('{"jsonrpc":"2.0","id":"abc","result":{}}', 42), '{"jsonrpc":"2.0","id":42,"result":{}}');
    assert.equal(swapId('{"result":{"content":[]},"jsonrpc":"2.0","id":3}', 0), '{"result":{"content":[]},"jsonrpc":"2.0","id":0}');
  });

  it('leaves "id" keys nested inside params and result untouched', () => {
    const request = '{"jsonrpc":"2.0","method":"tools/call","params":{"id":1,"name":"x","arguments":{"id":"inner","list":[{"id":2}]}},"id":5}';
    assert.equal(
      swapId(request, 99),
      '{"jsonrpc":"2.0","method":"tools/call","params":{"id":1,"name":"x","arguments":{"id":"inner","list":[{"id":2}]}},"id":99}',
    );
    const answer = '{"jsonrpc":"2.0","result":{"id":"r","items":[[{"id":1}],{"nested":{"id":{"id":3}}}]},"id":12}';
    assert.equal(swapId(answer, 'c'), '{"jsonrpc":"2.0","result":{"id":"r","items":[[{"id":1}],{"nested":{"id":{"id":3}}}]},"id":"c"}');
  });

  it('is not fooled by strings that contain "id": or escaped quotes and backslashes', () => {
    const text = String.raw`{"jsonrpc":"2.0","result":{"text":"\"id\":1, \\\"id\\\": {\"id\": [","other":"\\","b":"}]{["},"id":8}`;
    const out = assertSwapped(text, 'x');
    assert.ok(out.endsWith('"id":"x"}'));
    // A string value at the top level that looks like a member.
    assertSwapped(String.raw`{"note":"\",\"id\":3,\"x\":\"","id":1,"jsonrpc":"2.0","method":"m"}`, 2);
  });

  it('skips long strings dense with escaped quotes and backslashes, JSON quoted inside JSON included', () => {
    const quoted = JSON.stringify({ id: 1, list: Array.from({ length: 50 }, (_, i) => ({ id: i, s: 'a"b\\' })) });
    assertSwapped(JSON.stringify({ jsonrpc: '2.0', result: { content: [{ type: 'text', text: quoted }] }, id: 3 }), 'c');
    assertSwapped(JSON.stringify({ jsonrpc: '2.0', params: { a: '"'.repeat(100) + '\\', b: '\\"'.repeat(40) }, id: 3, method: 'm' }), 4);
    // Ends in an even run of backslashes after many escaped quotes: the string closes there.
    const text = `{"jsonrpc":"2.0","result":"${'\\"'.repeat(30)}\\\\","id":1}`;
    assert.equal(JSON.parse(text).result, '"'.repeat(30) + '\\');
    assertSwapped(text, 2);
  });

  it('keeps whitespace and pretty-printing exactly, newlines included', () => {
    const text = '\n {\n  "jsonrpc" : "2.0",\r\n\t"id"\t:\t 17 ,\n  "result": { "id" : 1 }\n}\n ';
    assert.equal(swapId(text, 'a'), '\n {\n  "jsonrpc" : "2.0",\r\n\t"id"\t:\t "a" ,\n  "result": { "id" : 1 }\n}\n ');
    assertSwapped(JSON.stringify({ jsonrpc: '2.0', id: 1, params: { a: [1, { b: 'c' }] }, method: 'x' }, null, 2), 'pretty');
  });

  it('handles unicode around the id and in the new id', () => {
    const text = '{"jsonrpc":"2.0","params":{"text":"héllo 🌍 \\u00e9 \\ud83d\\ude00 ∑"},"id":"ça-va","method":"m"}';
    const out = assertSwapped(text, 'ü-🌍-"quoted"\\');
    assert.ok(out.includes('"text":"héllo 🌍 \\u00e9 \\ud83d\\ude00 ∑"'));
  });

  it('replaces a string id that contains escapes, and an id key written with escapes', () => {
    assert.equal(swapId(String.raw`{"id":"a\"b\\","jsonrpc":"2.0","result":1}`, 3), '{"id":3,"jsonrpc":"2.0","result":1}');
    assert.equal(swapId(String.raw`{"\u0069d":"x","jsonrpc":"2.0","result":1}`, 4), String.raw`{"\u0069d":4,"jsonrpc":"2.0","result":1}`);
    assertSwapped(String.raw`{"jsonrpc":"2.0","i\u0064":"\u0041\n\t","method":"m"}`, 'z');
  });

  it('replaces ids that are negative, fractional or in exponent form', () => {
    for (const raw of ['-1', '1.5', '1e3', '-0', '12345678901234567890']) {
      assert.equal(swapId(`{"id":${raw},"jsonrpc":"2.0","result":null}`, 1), '{"id":1,"jsonrpc":"2.0","result":null}');
    }
  });

  it('gives up when the message has no top-level id, only nested ones', () => {
    assert.equal(swapId('{"jsonrpc":"2.0","method":"notifications/progress","params":{"id":1}}', 1), undefined);
    assert.equal(swapId('{}', 1), undefined);
    assert.equal(swapId('{ }', 1), undefined);
  });

  it('gives up on anything that is not a single JSON object', () => {
    assert.equal(swapId('[{"jsonrpc":"2.0","id":1,"method":"ping"}]', 2), undefined);
    assert.equal(swapId('"id"', 2), undefined);
    assert.equal(swapId('42', 2), undefined);
    assert.equal(swapId('null', 2), undefined);
    assert.equal(swapId('', 2), undefined);
    assert.equal(swapId('{"id":1}{"id":2}', 3), undefined);
    assert.equal(swapId('{"id":1} x', 3), undefined);
  });

  it('gives up on truncated or malformed text instead of throwing', () => {
    const whole = '{"jsonrpc":"2.0","result":{"a":[1,"x\\"y",{"b":null}]},"id":1}';
    for (let n = 0; n < whole.length; n++) {
      assert.equal(swapId(whole.slice(0, n), 2), undefined, `prefix of length ${n}`);
    }
    assert.equal(swapId('{"id" 1}', 2), undefined);
    assert.equal(swapId('{"id":1 "x":2}', 2), undefined);
    assert.equal(swapId('{id:1}', 2), undefined);
    assert.equal(swapId('{"\\u00zz":1,"id":1}', 2), undefined);
  });

  it('gives up on a repeated top-level key, because parsers disagree on which one wins', () => {
    assert.equal(swapId('{"jsonrpc":"2.0","id":1,"id":2,"result":{}}', 3), undefined);
    assert.equal(swapId('{"jsonrpc":"2.0","id":1,"\\u0069d":2,"result":{}}', 3), undefined);
    assert.equal(swapId('{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}', 3), undefined);
  });

  it('with uniqueKeys, gives up on a repeated key at any depth and swaps as usual otherwise', () => {
    const dup = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"safe","arguments":{"x":[{"a":1,"a":2}]}}}';
    assert.ok(swapId(dup, 3) !== undefined);
    assert.equal(swapId(dup, 3, { uniqueKeys: true }), undefined);
    assert.equal(swapId('{"id":1,"method":"m","params":{"name":"a","na\\u006de":"b"}}', 3, { uniqueKeys: true }), undefined);
    // The same key in sibling objects, or as a value, is not a repetition.
    assertSwapped('{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":{"k":1},"b":{"k":2},"k":"k","l":[{"k":1},{"k":1}],"e":{},"f":[]}}', 9, {
      uniqueKeys: true,
    });
  });

  it('gives up on an object with more than 64 members rather than compare every pair of keys', () => {
    const members = (n: number) => Array.from({ length: n }, (_, i) => `"k${i}":${i}`).join(',');
    assertSwapped(`{"jsonrpc":"2.0","id":1,${members(62)}}`, 2);
    assert.equal(swapId(`{"jsonrpc":"2.0","id":1,${members(63)}}`, 2), undefined);
    assertSwapped(`{"jsonrpc":"2.0","id":1,"result":{${members(64)}}}`, 2, { uniqueKeys: true });
    assert.equal(swapId(`{"jsonrpc":"2.0","id":1,"result":{${members(65)}}}`, 2, { uniqueKeys: true }), undefined);
    // Without uniqueKeys nested objects are skipped, not read: their size does not matter.
    assertSwapped(`{"jsonrpc":"2.0","id":1,"result":{${members(5000)}}}`, 2);
  });

  it('with uniqueKeys, walks very deep nesting without exhausting the stack', () => {
    const depth = 100_000;
    const text = `{"jsonrpc":"2.0","id":1,"result":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    assert.equal(swapId(text, 2, { uniqueKeys: true }), `{"jsonrpc":"2.0","id":2,"result":${'['.repeat(depth)}${']'.repeat(depth)}}`);
    assert.equal(swapId(text, 2), `{"jsonrpc":"2.0","id":2,"result":${'['.repeat(depth)}${']'.repeat(depth)}}`);
  });

  it('refuses a non-finite number as the new id', () => {
    assert.equal(swapId('{"id":1}', Number.NaN), undefined);
    assert.equal(swapId('{"id":1}', Number.POSITIVE_INFINITY), undefined);
  });
});

/** A small seeded generator (mulberry32) so that a failing case can be replayed from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Characters that stress the scanner: quotes, backslashes, brackets, separators, "id", controls, unicode.
const PIECES = ['"', '\\', '\\"', '{', '}', '[', ']', ',', ':', 'id', '"id":', ' ', '\n', '\t', '\u0000', '\u001f', 'é', '🌍', '\u2028', 'a', 'Z', '0'];
const KEYS = ['id', 'jsonrpc', 'method', 'params', 'result', 'error', '_meta', 'progressToken', 'a', '"', '\\', 'i d', 'ïd', ''];

function generator(random: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const str = (): string => {
    let s = '';
    // Now and then a long one, so that strings dense with escaped quotes take the regex path.
    const n = Math.floor(random() < 0.05 ? 40 + random() * 80 : random() * 6);
    for (let i = 0; i < n; i++) s += pick(PIECES);
    return s;
  };
  const num = (): number => pick([0, -1, 1.5, 1e21, -2.5e-7, 123456789, Math.floor(random() * 1000)]);
  const value = (depth: number): unknown => {
    const r = random();
    if (depth > 4 || r < 0.35) return pick([() => str(), () => num(), () => true, () => false, () => null])();
    if (r < 0.65) return Array.from({ length: Math.floor(random() * 4) }, () => value(depth + 1));
    const o: Record<string, unknown> = {};
    const n = Math.floor(random() * 5);
    for (let i = 0; i < n; i++) o[random() < 0.5 ? pick(KEYS) : str()] = value(depth + 1);
    return o;
  };
  const id = (): string | number => (random() < 0.5 ? num() : str());

  /** A JSON-RPC message with members in random order and random extra members. */
  const message = (): Record<string, unknown> => {
    const members: Array<[string, unknown]> = [['jsonrpc', '2.0'], ['id', id()]];
    const shape = random();
    if (shape < 0.4) members.push(['method', str() || 'm'], ['params', value(1)]);
    else if (shape < 0.8) members.push(['result', value(1)]);
    else members.push(['error', { code: -32000, message: str(), data: value(2) }]);
    if (random() < 0.3) members.push([`x-${str()}`, value(1)]);
    for (let i = members.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [members[i], members[j]] = [members[j]!, members[i]!];
    }
    return Object.fromEntries(members);
  };

  /** JSON text of `v` with random whitespace and randomly \u-escaped characters in strings and keys. */
  const serialise = (v: unknown): string => {
    const ws = () => (random() < 0.7 ? '' : pick([' ', '\n', '\r\n', '\t', '  \n ']));
    const quote = (s: string): string => {
      let out = '"';
      for (const ch of s) {
        const plain = JSON.stringify(ch).slice(1, -1);
        if (random() < 0.15) {
          for (let i = 0; i < ch.length; i++) out += '\\u' + ch.charCodeAt(i).toString(16).padStart(4, '0');
        } else out += plain;
      }
      return out + '"';
    };
    if (typeof v === 'string') return quote(v);
    if (Array.isArray(v)) return `[${ws()}${v.map((x) => serialise(x)).join(`${ws()},${ws()}`)}${ws()}]`;
    if (v !== null && typeof v === 'object') {
      const parts = Object.entries(v).map(([k, x]) => `${quote(k)}${ws()}:${ws()}${serialise(x)}`);
      return `{${ws()}${parts.join(`${ws()},${ws()}`)}${ws()}}`;
    }
    return JSON.stringify(v);
  };
  return { message, serialise, id };
}

describe('swapId on generated messages', () => {
  it('gives, for thousands of random JSON-RPC messages, text that parses to the original with only the id replaced', () => {
    const seed = Number(process.env.RAW_ID_SEED ?? 20260101);
    const random = rng(seed);
    const gen = generator(random);
    for (let n = 0; n < 5000; n++) {
      const msg = gen.message();
      const text = gen.serialise(msg);
      const newId = gen.id();
      const context = `seed ${seed}, case ${n}: ${text}`;
      const out = swapId(text, newId);
      assert.ok(out !== undefined, context);
      assert.deepEqual(JSON.parse(out), { ...(JSON.parse(text) as object), id: newId }, context);
      // Messages from the generator repeat no key, so the strict walk agrees with the fast one.
      assert.equal(swapId(text, newId, { uniqueKeys: true }), out, context);
      // Without a top-level id there is nothing to swap.
      const { id: _dropped, ...rest } = msg;
      assert.equal(swapId(gen.serialise(rest), newId), undefined, context);
    }
  });
});

describe('resultAnswerId', () => {
  /** Each text gives no id: it is left to a parser. */
  const leftToAParser = (texts: string[]) => {
    for (const text of texts) assert.equal(resultAnswerId(text), undefined, text);
  };

  it('reads the id of a success answer, whatever the order of its members and the whitespace around them', () => {
    assert.equal(resultAnswerId('{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"hi"}]}}'), 7);
    assert.equal(resultAnswerId('{"result":[1,{"id":2}],"id":"call-1","jsonrpc":"2.0"}'), 'call-1');
    assert.equal(resultAnswerId(' {\n  "id" : -3 ,\r\n "jsonrpc":\t"2.0", "result" : null }\n'), -3);
    assert.equal(resultAnswerId('{"jsonrpc":"2.0","id":9007199254740991,"result":{}}'), Number.MAX_SAFE_INTEGER);
    assert.equal(resultAnswerId('{"jsonrpc":"2.0","id":0,"result":"a \\"quoted\\" } ] text"}'), 0);
  });

  it('does not validate the result it skips: that is for whoever reads it', () => {
    assert.equal(resultAnswerId('{"jsonrpc":"2.0","id":1,"result":{"a":tru}}'), 1);
  });

  it('leaves every other message to a parser: errors, requests, notifications and members JSON-RPC does not have', () => {
    leftToAParser([
      '{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}',
      '{"jsonrpc":"2.0","id":1,"method":"ping"}',
      '{"jsonrpc":"2.0","method":"notifications/progress","params":{}}',
      '{"jsonrpc":"2.0","id":1,"result":{},"extra":true}',
      '{"jsonrpc":"2.0","id":1}',
      '{"id":1,"result":{}}',
    ]);
  });

  it('leaves to a parser what it could misread: repeated members, escapes in keys, escapes or control characters in a string id, ids that are not integers, another version', () => {
    leftToAParser([
      '{"jsonrpc":"2.0","id":1,"id":2,"result":{}}',
      '{"jsonrpc":"2.0","id":1,"result":{},"result":{}}',
      '{"jsonrpc":"2.0","\\u0069d":1,"result":{}}',
      '{"jsonrpc":"2.0","id":"a\\"b","result":{}}',
      '{"jsonrpc":"2.0","id":1.5,"result":{}}',
      '{"jsonrpc":"2.0","id":01,"result":{}}',
      '{"jsonrpc":"2.0","id":-,"result":{}}',
      '{"jsonrpc":"2.0","id":1 2,"result":{}}',
      '{"jsonrpc":"2.0","id":1e3,"result":{}}',
      '{"jsonrpc":"2.0","id":12345678901234567890,"result":{}}',
      '{"jsonrpc":"2.0","id":null,"result":{}}',
      '{"jsonrpc":"2.0","id":true,"result":{}}',
      '{"jsonrpc":"2.0","id":"a\u0001b","result":{}}',
      '{"jsonrpc":"1.0","id":1,"result":{}}',
    ]);
  });

  it('gives up on anything that is not one whole object, without throwing', () => {
    leftToAParser(['', 'Server started on stdio', '[{"jsonrpc":"2.0","id":1,"result":{}}]', '{"jsonrpc":"2.0","id":1,"result":{}', '{"jsonrpc":"2.0","id":1,"result":{}} {}', '{"jsonrpc":"2.0","id":1,"result":"open']);
  });

  it('agrees with JSON.parse on thousands of random messages: an id only for a plain success answer, and the right one', () => {
    const seed = Number(process.env.RAW_ID_SEED ?? 20260101);
    const gen = generator(rng(seed));
    let read = 0;
    for (let n = 0; n < 5000; n++) {
      const msg = gen.message();
      for (const text of [gen.serialise(msg), JSON.stringify(msg)]) {
        const parsed = JSON.parse(text) as Record<string, unknown>;
        const plain = Object.keys(parsed).sort().join() === 'id,jsonrpc,result';
        const id = resultAnswerId(text);
        if (id !== undefined) {
          read++;
          assert.ok(plain, `seed ${seed}, case ${n}: ${text}`);
          assert.equal(id, parsed.id, `seed ${seed}, case ${n}: ${text}`);
        } else if (text === JSON.stringify(msg) && plain) {
          // What a server writes with JSON.stringify is read, unless its id is one left to the parser.
          const ok = typeof msg.id === 'string' ? JSON.stringify(msg.id).includes('\\') : !Number.isSafeInteger(msg.id);
          assert.ok(ok, `seed ${seed}, case ${n}: ${text}`);
        }
      }
    }
    assert.ok(read > 500, `only ${read} answers read`);
  });
});

describe('keepsEveryKey', () => {
  const kept = (text: string) => keepsEveryKey(text, JSON.parse(text));

  it('tells a text whose objects repeat a key, at any depth, from one that does not', () => {
    assert.equal(kept('{"a":1,"b":{"c":[{"d":1,"e":2}]}}'), true);
    assert.equal(kept('{"a":1,"a":2}'), false);
    assert.equal(kept('{"a":{"b":1,"b":2}}'), false);
    assert.equal(kept('{"a":[{"k":1},{"k":2}]}'), true);
    assert.equal(kept('{"a":[{"k":1,"k":2}]}'), false);
  });

  it('sees a key repeated under another spelling (an escape) and is not misled by quotes and colons inside strings', () => {
    assert.equal(kept('{"na\\u006de":1,"name":2}'), false);
    assert.equal(kept('  {"a":"}{\\"a\\":1"}  '), true);
    assert.equal(kept('{"a":"b\\\\","c":":"}'), true);
    assert.equal(kept('{"__proto__":1,"__proto__":2}'), false);
  });

  it('checks objects of any size, where comparing every pair of keys would not pay', () => {
    const wide = Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, i]));
    assert.equal(kept(JSON.stringify(wide)), true);
    assert.equal(kept(`${JSON.stringify(wide).slice(0, -1)},"k4999":0}`), false);
  });

  it('walks a value nested far deeper than the call stack allows recursion', () => {
    const deep = `${'{"a":['.repeat(20_000)}1${']}'.repeat(20_000)}`;
    assert.equal(kept(deep), true);
    assert.equal(kept(`{"b":0,${deep.slice(1, -1)},"b":1}`), false);
  });

  it('holds for every JSON value as JSON.stringify writes it, and fails once a key is written twice', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.string(), (value, key) => {
        const text = JSON.stringify(value);
        assert.equal(keepsEveryKey(text, JSON.parse(text)), true);
        const twice = `{${JSON.stringify(key)}:1,"x":${text},${JSON.stringify(key)}:2}`;
        assert.equal(keepsEveryKey(twice, JSON.parse(twice)), false);
      }),
    );
  });
});
