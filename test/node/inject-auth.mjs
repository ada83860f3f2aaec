// Preload (node --import) that adds "Authorization: Bearer <token>" to every
// HTTP request sent to one origin.
//
// Why: the MCP conformance tool's server scenarios accept only --url; it has
// no option for request headers (modelcontextprotocol/conformance#453), so
// a server behind an authorizing gateway cannot be tested directly. The
// tool sends with the global fetch and with undici's request(); both go
// through undici's global dispatcher, so one interceptor there covers both.
//
// Environment (kept out of argv so the token never shows in process lists):
//   MCP_INJECT_AUTH_ORIGIN  origin to add the header for, e.g. http://127.0.0.1:8443
//   MCP_INJECT_AUTH_TOKEN   the bearer token (never printed)
import { Agent, setGlobalDispatcher } from 'undici';

const origin = process.env.MCP_INJECT_AUTH_ORIGIN;
const token = process.env.MCP_INJECT_AUTH_TOKEN;
if (!origin || !token) {
  throw new Error('inject-auth: MCP_INJECT_AUTH_ORIGIN and MCP_INJECT_AUTH_TOKEN must be set');
}
const want = new URL(origin).origin;
const value = `Bearer ${token}`;

// headersWithAuth returns opts.headers plus Authorization, in the same shape
// undici accepts (flat array, object, or iterable of pairs), unless the
// request already carries an Authorization header.
function headersWithAuth(headers) {
  if (headers == null) return { authorization: value };
  if (Array.isArray(headers)) {
    const flat = headers.length > 0 && Array.isArray(headers[0]) ? headers.flat() : headers;
    for (let i = 0; i < flat.length; i += 2) {
      if (String(flat[i]).toLowerCase() === 'authorization') return headers;
    }
    return [...flat, 'authorization', value];
  }
  if (typeof headers[Symbol.iterator] === 'function') {
    return headersWithAuth([...headers]);
  }
  for (const k of Object.keys(headers)) {
    if (k.toLowerCase() === 'authorization') return headers;
  }
  return { ...headers, authorization: value };
}

const addAuth = (dispatch) => (opts, handler) => {
  let reqOrigin;
  try {
    reqOrigin = new URL(String(opts.origin)).origin;
  } catch {
    reqOrigin = undefined;
  }
  if (reqOrigin === want) {
    opts = { ...opts, headers: headersWithAuth(opts.headers) };
  }
  return dispatch(opts, handler);
};

setGlobalDispatcher(new Agent().compose(addAuth));
