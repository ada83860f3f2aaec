// Preload (node --import) that adds "Authorization: Bearer <token>" to every
// HTTP request sent to one origin.
//
// Why: the MCP conformance tool's server scenarios accept only --url; it has
// no option for request headers (modelcontextprotocol/conformance#453), so
// a server behind an authorizing gateway cannot be tested directly. The
// tool sends with the global fetch and undici's request(), which both go
// through undici's global dispatcher (one interceptor there covers both),
// and with node:http's request() for raw header tests, which is wrapped.
//
// Environment (kept out of argv so the token never shows in process lists):
//   MCP_INJECT_AUTH_ORIGIN  origin to add the header for, e.g. http://127.0.0.1:8443
//   MCP_INJECT_AUTH_TOKEN   the bearer token (never printed)
import http from 'node:http';
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

// node:http: request(options[, cb]) or request(url[, options][, cb]).
const httpRequest = http.request;
http.request = function request(...args) {
  let target;
  let optIndex;
  if (typeof args[0] === 'string' || args[0] instanceof URL) {
    target = new URL(String(args[0]));
    optIndex = typeof args[1] === 'object' && args[1] !== null ? 1 : -1;
  } else {
    const o = args[0] ?? {};
    const host = o.hostname ?? String(o.host ?? 'localhost').replace(/:\d+$/, '');
    target = new URL(`${o.protocol ?? 'http:'}//${host.includes(':') ? `[${host}]` : host}:${o.port ?? 80}`);
    optIndex = 0;
  }
  if (target.origin === want) {
    if (optIndex < 0) {
      args.splice(1, 0, { headers: { authorization: value } });
    } else {
      const o = args[optIndex];
      args[optIndex] = { ...o, headers: headersWithAuth(o.headers) };
    }
  }
  return httpRequest.apply(this, args);
};
