// Reads request bodies as a server of the official TypeScript SDK does
// (WebStandardStreamableHTTPServerTransport: a non-fatal TextDecoder, which
// drops a leading BOM and turns bad UTF-8 into U+FFFD, then JSON.parse and
// JSONRPCMessageSchema; a server's request handler then parses the message
// again with its method's schema, ClientRequestSchema's member), for the
// parser differential of test/interop (TestParseDifferential).
//
//   node jsonparse.mjs < bodies.json
//
// Input: a JSON array of base64 bodies. Output: a JSON array with, per
// body, {ok, tree, sdk}: tree is the parsed value as a tagged tree (see
// tag), sdk per message (the body itself, or each element of an array)
// {ok, tree, request: {ok, tree}}: the transport's reading and the request
// handler's; tooDeep instead of tree and sdk for a value nested too deep
// to tag.
import { JSONRPCMessageSchema, ClientRequestSchema } from '@modelcontextprotocol/sdk/types.js';

// tag writes a value so that a reader in another language sees exactly what
// JSON.parse made of it: ["o", [[name, value], ...]] in JavaScript's key
// order, ["a", [...]], ["s", string, wellFormed], ["n", String(number)],
// ["t"], ["f"], ["z"] (null).
function tag(v) {
  if (v === null) return ['z'];
  if (v === true) return ['t'];
  if (v === false) return ['f'];
  if (typeof v === 'number') return ['n', Object.is(v, -0) ? '-0' : String(v)];
  if (typeof v === 'string') return ['s', v, v.isWellFormed()];
  if (Array.isArray(v)) return ['a', v.map(tag)];
  return ['o', Object.keys(v).map(k => [k, tag(v[k])])];
}

function sdk(msg) {
  const m = JSONRPCMessageSchema.safeParse(msg);
  if (!m.success) return { ok: false };
  const out = { ok: true, tree: tag(m.data) };
  if ('method' in m.data && 'id' in m.data) {
    const r = ClientRequestSchema.safeParse(m.data);
    out.request = r.success ? { ok: true, tree: tag(r.data) } : { ok: false };
  }
  return out;
}

let input = '';
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map(b64 => {
  const text = new TextDecoder().decode(Buffer.from(b64, 'base64'));
  let v;
  try {
    v = JSON.parse(text);
  } catch {
    return { ok: false };
  }
  const msgs = Array.isArray(v) ? v : [v];
  try {
    return { ok: true, tree: tag(v), sdk: msgs.map(sdk) };
  } catch {
    return { ok: true, tooDeep: true }; // more nesting than tag's stack holds
  }
});
process.stdout.write(JSON.stringify(out));
