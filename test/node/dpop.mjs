// DPoP (RFC 9449) end to end with an independent client library,
// oauth4webapi: discovery, an access token bound to a fresh key (ES256,
// or of --alg: Ed25519 is a WebCrypto Ed25519 key, whose proofs name
// Ed25519) (nonce round trip included when the server asks), refresh-free MCP
// calls through the gateway with a proof per request, then the same token
// without its key: as Bearer, and with another key's proofs.
// Prints one JSON report (challenges and claims, never tokens).
//
// The token comes from the client_credentials grant, or, with --callback,
// by redeeming the authorization code of that redirect (signed in by the
// caller) with its PKCE verifier, state and ID token nonce.
//
//   node dpop.mjs --issuer URL --resource URL --client-id ID --client-secret S --tool NAME
//     [--alg ES256|Ed25519|...] [--scope S] [--callback URL --redirect-uri URL --state S --code-verifier V --nonce N]
import * as oauth from 'oauth4webapi';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    resource: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    scope: { type: 'string', default: '' },
    tool: { type: 'string' },
    alg: { type: 'string', default: 'ES256' },
    callback: { type: 'string' },
    'redirect-uri': { type: 'string' },
    state: { type: 'string' },
    'code-verifier': { type: 'string' },
    nonce: { type: 'string' },
  },
});

const report = { ok: false, token_requests: [], token_type: '', cnf_jkt: '', calls: [], proof_algs: [] };
// recordingFetch notes the alg of each DPoP proof sent (the key's, as the
// library names it).
async function recordingFetch(url, init) {
  const proof = new Headers(init?.headers).get('dpop');
  if (proof) {
    const { alg } = JSON.parse(Buffer.from(proof.split('.')[0], 'base64url').toString());
    if (!report.proof_algs.includes(alg)) report.proof_algs.push(alg);
  }
  return fetch(url, init);
}
// Loopback http in tests.
const insecure = { [oauth.allowInsecureRequests]: true, [oauth.customFetch]: recordingFetch };

// withNonce retries once when the server asks for a (fresh) DPoP nonce;
// the DPoP handle has remembered it from the answer.
async function withNonce(label, fn) {
  try {
    return await fn();
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err;
    report.nonce_retries = (report.nonce_retries || 0) + 1;
    report[`${label}_nonce_challenge`] = true;
    return await fn();
  }
}

function claims(jwt) {
  return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
}

// mcp sends one JSON-RPC message with the token and a proof of dpop (with
// dpop null: as a Bearer token), and records the answer.
async function mcp(label, token, dpop, body, session) {
  const headers = new Headers({
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': '2025-06-18',
  });
  if (session) headers.set('mcp-session-id', session);
  const entry = { label };
  report.calls.push(entry);
  let resp;
  try {
    const opts = dpop ? { DPoP: dpop, ...insecure } : insecure;
    resp = await withNonce(label, () =>
      oauth.protectedResourceRequest(token, 'POST', new URL(args.resource), headers, JSON.stringify(body), opts),
    );
  } catch (err) {
    if (err instanceof oauth.WWWAuthenticateChallengeError) {
      entry.status = err.response.status;
      entry.challenges = err.cause.map((c) => ({ scheme: c.scheme, error: c.parameters.error || '', algs: c.parameters.algs || '' }));
      return null;
    }
    throw err;
  }
  entry.status = resp.status;
  entry.challenges = [];
  const text = await resp.text();
  entry.ok = resp.ok;
  const m = text.match(/^data: (.*)$/m);
  try {
    entry.result = JSON.parse(m ? m[1] : text);
  } catch {
    entry.body = text.slice(0, 200);
  }
  return { session: resp.headers.get('mcp-session-id'), result: entry.result };
}

try {
  const issuer = new URL(args.issuer);
  const as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, insecure));
  report.dpop_signing_alg_values_supported = as.dpop_signing_alg_values_supported;
  const client = { client_id: args['client-id'] };
  const auth = oauth.ClientSecretBasic(args['client-secret']);

  const keys = await oauth.generateKeyPair(args.alg);
  const dpop = oauth.DPoP(client, keys);
  const tok = await withNonce('token', async () => {
    const record = (resp) => {
      report.token_requests.push({ status: resp.status, dpop_nonce: resp.headers.has('dpop-nonce') });
      return resp;
    };
    if (args.callback) {
      const params = oauth.validateAuthResponse(as, client, new URL(args.callback), args.state);
      const resp = record(await oauth.authorizationCodeGrantRequest(as, client, auth, params,
        args['redirect-uri'], args['code-verifier'], { DPoP: dpop, ...insecure }));
      return oauth.processAuthorizationCodeResponse(as, client, resp, { expectedNonce: args.nonce });
    }
    const params = new URLSearchParams({ resource: args.resource });
    if (args.scope) params.set('scope', args.scope);
    const resp = record(await oauth.clientCredentialsGrantRequest(as, client, auth, params, { DPoP: dpop, ...insecure }));
    return oauth.processClientCredentialsResponse(as, client, resp);
  });
  report.token_type = tok.token_type;
  // An opaque token's binding is for its issuer to tell (introspection).
  report.opaque = tok.access_token.split('.').length !== 3;
  if (!report.opaque) {
    const c = claims(tok.access_token);
    report.cnf_jkt = c.cnf?.jkt || '';
    report.aud = c.aud;
  }
  // The thumbprint the client computes of its own key (RFC 7638).
  const jwk = await crypto.subtle.exportKey('jwk', keys.publicKey);
  const canon = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  report.own_jkt = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(canon))).toString('base64url');

  const init = await mcp('initialize', tok.access_token, dpop, {
    jsonrpc: '2.0', id: 1, method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'dpop.mjs', version: '1' } },
  });
  const session = init?.session;
  await mcp('initialized', tok.access_token, dpop, { jsonrpc: '2.0', method: 'notifications/initialized' }, session);
  await mcp('tools/list', tok.access_token, dpop, { jsonrpc: '2.0', id: 2, method: 'tools/list' }, session);
  await mcp('tools/call', tok.access_token, dpop, {
    jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: args.tool, arguments: { text: 'dpop' } },
  }, session);

  // The token without its key.
  await mcp('as Bearer', tok.access_token, null, { jsonrpc: '2.0', id: 4, method: 'tools/list' }, session);
  const thief = oauth.DPoP(client, await oauth.generateKeyPair(args.alg));
  await mcp('with another key', tok.access_token, thief, { jsonrpc: '2.0', id: 5, method: 'tools/list' }, session);
  report.ok = true;
} catch (err) {
  // An OAuth error answer's code and description say what the server
  // refused.
  report.error = [err?.error, err?.error_description, String(err?.stack || err)].filter(Boolean).join(': ');
}
console.log(JSON.stringify(report));
