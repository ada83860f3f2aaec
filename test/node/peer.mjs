// Our authorization server and gateway driven by strict, independent
// peers: oauth4webapi (panva's OAuth 2 / OpenID Connect client, which
// validates every answer against the RFCs) for the flows, and jose for
// the tokens (RFC 9068 access tokens and ID tokens against the JWKS).
// Each step is recorded as passed or failed with the peer's own error
// code, so a departure from a standard names itself.
//
//   node peer.mjs --issuer URL --resource URL --username U --password P
//     --client-id ID --client-secret S --scope S --write-scope S --write-tool NAME
//     --agent-id ID --agent-secret S --jwt-client-id ID --jwt-client-key FILE
//
// The client (--client-id) is confidential, allowed to introspect, with
// the grant types client_credentials, authorization_code, refresh_token
// and token exchange; the user may consent to --scope and --write-scope;
// the gateway lets --scope call tools/list, and --write-tool needs
// --write-scope.
// The agent (--agent-id) may act for the user through the client, with
// --scope. The second client (--jwt-client-id) authenticates with private_key_jwt
// (its private JWK, kid jose-idp-1, in FILE: idjag.mjs keys writes one),
// may introspect and has the client_credentials grant.
// Prints one JSON report {"steps": [{"name", "ok", "error"}]}, never a
// token.
import * as oauth from 'oauth4webapi';
import * as jose from 'jose';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { authorize } from './robot.mjs';

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    resource: { type: 'string' },
    username: { type: 'string' },
    password: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    scope: { type: 'string' },
    'write-scope': { type: 'string' },
    'write-tool': { type: 'string' },
    'agent-id': { type: 'string' },
    'agent-secret': { type: 'string' },
    'jwt-client-id': { type: 'string' },
    'jwt-client-key': { type: 'string' },
  },
});

const insecure = { [oauth.allowInsecureRequests]: true }; // loopback http in tests
const callback = 'http://127.0.0.1/peer-callback';
const steps = [];

// step runs one check; a failure is recorded and the steps that need its
// result are skipped (their fn gets undefined and throws).
async function step(name, fn) {
  const entry = { name, ok: false };
  steps.push(entry);
  try {
    const out = await fn();
    entry.ok = true;
    return out;
  } catch (err) {
    entry.error = describe(err);
    return undefined;
  }
}

function describe(err) {
  const parts = [err?.code, err?.error, err?.error_description, err?.message];
  if (err?.status) parts.push(`status ${err.status}`);
  if (err?.cause && typeof err.cause === 'object' && !Array.isArray(err.cause)) {
    parts.push(`cause ${JSON.stringify(err.cause).slice(0, 300)}`);
  }
  return parts.filter(Boolean).join(': ');
}

function need(...values) {
  if (values.some((v) => v === undefined)) throw new Error('skipped: an earlier step failed');
}

function expect(cond, what) {
  if (!cond) throw new Error(what);
}

// refused runs a request that must fail with an OAuth error answer and
// returns that error (oauth4webapi's ResponseBodyError or
// WWWAuthenticateChallengeError).
async function refused(fn) {
  try {
    await fn();
  } catch (err) {
    if (err instanceof oauth.ResponseBodyError || err instanceof oauth.WWWAuthenticateChallengeError) return err;
    throw err;
  }
  throw new Error('accepted, want an error answer');
}

// bodyError checks an RFC 6749 section 5.2 error answer: the status, the
// code, a string error_description when there is one.
function bodyError(err, status, code) {
  expect(err instanceof oauth.ResponseBodyError, `want an error body, got ${describe(err)}`);
  expect(err.status === status && err.error === code, `got ${err.status} ${err.error}, want ${status} ${code}`);
  expect(err.error_description === undefined || typeof err.error_description === 'string', 'error_description is not a string');
  return err;
}

const issuer = new URL(args.issuer);
const resource = new URL(args.resource);
const client = { client_id: args['client-id'] };
const auth = oauth.ClientSecretBasic(args['client-secret']);
const scopes = `openid offline_access ${args.scope} ${args['write-scope']}`;

// Discovery: RFC 8414 and OpenID Connect Discovery, both checked for the
// issuer they name (oauth4webapi refuses another).
const as = await step('discovery rfc8414', async () =>
  oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure })));
await step('discovery oidc', async () => {
  const oidc = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure }));
  need(as);
  expect(JSON.stringify(oidc) === JSON.stringify(as), 'the two documents differ');
});
const jwks = as && jose.createRemoteJWKSet(new URL(as.jwks_uri));

// RFC 9728: the gateway's protected resource metadata.
await step('resource discovery rfc9728', async () => {
  const rs = await oauth.processResourceDiscoveryResponse(resource,
    await oauth.resourceDiscoveryRequest(resource, insecure));
  expect(rs.authorization_servers?.includes(issuer.href.replace(/\/$/, '')) || rs.authorization_servers?.includes(issuer.href),
    `authorization_servers ${JSON.stringify(rs.authorization_servers)}`);
});

// The gateway's challenges (RFC 6750 section 3, RFC 9728 section 5.1):
// 401, Bearer with resource_metadata; no error without a token,
// invalid_token with a bad one.
const ping = '{"jsonrpc":"2.0","id":1,"method":"ping"}';
const mcpHeaders = () => new Headers({ 'content-type': 'application/json', accept: 'application/json, text/event-stream' });
await step('gateway 401 without a token', async () => {
  const resp = await fetch(resource, { method: 'POST', headers: mcpHeaders(), body: ping });
  const challenge = resp.headers.get('www-authenticate') || '';
  expect(resp.status === 401 && /^Bearer /.test(challenge) && /resource_metadata="/.test(challenge) && !/error=/.test(challenge),
    `${resp.status} ${challenge}`);
});
// The resource metadata URL of the challenge is the one RFC 9728 section
// 3.1 builds from the resource (what oauth4webapi fetched above).
const metadataURL = new URL(`/.well-known/oauth-protected-resource${resource.pathname}`, resource).href;
await step('gateway 401 invalid_token', async () => {
  const err = await refused(() => oauth.protectedResourceRequest('not-a-token', 'POST', resource, mcpHeaders(), ping, insecure));
  expect(err instanceof oauth.WWWAuthenticateChallengeError && err.response.status === 401, describe(err));
  const bearer = err.cause.find((c) => c.scheme === 'bearer');
  expect(bearer?.parameters.resource_metadata === metadataURL && bearer.parameters.error === 'invalid_token', JSON.stringify(err.cause));
});

// RFC 9068: an access token checked by jose against the JWKS, and by
// oauth4webapi as a resource server would.
async function checkAccessToken(token, wantSub, dpopJkt) {
  const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
    typ: 'at+jwt', issuer: as.issuer, audience: resource.href,
    requiredClaims: ['iss', 'exp', 'aud', 'sub', 'client_id', 'iat', 'jti'],
  });
  expect(protectedHeader.alg !== 'none' && !protectedHeader.alg.startsWith('HS'), `alg ${protectedHeader.alg}`);
  expect(payload.sub === wantSub, `sub ${payload.sub}, want ${wantSub}`);
  expect(payload.client_id === client.client_id, `client_id ${payload.client_id}`);
  expect(dpopJkt === undefined || payload.cnf?.jkt === dpopJkt, `cnf ${JSON.stringify(payload.cnf)}`);
  const headers = new Headers({ authorization: `${dpopJkt ? 'DPoP' : 'Bearer'} ${token}` });
  if (!dpopJkt) {
    await oauth.validateJwtAccessToken(as, new Request(resource, { headers }), resource.href, insecure);
  }
  return payload;
}

// Client credentials.
const cc = await step('client_credentials', async () => {
  need(as);
  const resp = await oauth.clientCredentialsGrantRequest(as, client, auth,
    new URLSearchParams({ scope: args.scope, resource: resource.href }), insecure);
  return oauth.processClientCredentialsResponse(as, client, resp);
});
await step('client_credentials rfc9068', async () => {
  need(cc);
  await checkAccessToken(cc.access_token, client.client_id);
});

// Through the gateway: a call the token's scopes allow, and one that
// needs more, 403 insufficient_scope naming the scope (RFC 6750 section
// 3.1) with the resource metadata.
await step('gateway call + 403 insufficient_scope', async () => {
  need(cc);
  const ok = await oauth.protectedResourceRequest(cc.access_token, 'POST', resource, mcpHeaders(),
    '{"jsonrpc":"2.0","id":2,"method":"tools/list"}', insecure);
  expect(ok.status === 200, `tools/list: ${ok.status}`);
  await ok.body?.cancel();
  const err = await refused(() => oauth.protectedResourceRequest(cc.access_token, 'POST', resource, mcpHeaders(),
    JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: args['write-tool'], arguments: { text: 'x' } } }), insecure));
  expect(err instanceof oauth.WWWAuthenticateChallengeError && err.response.status === 403, describe(err));
  const bearer = err.cause.find((c) => c.scheme === 'bearer');
  expect(bearer?.parameters.error === 'insufficient_scope' && bearer.parameters.scope?.split(' ').includes(args['write-scope']) &&
    bearer.parameters.resource_metadata === metadataURL, JSON.stringify(err.cause));
});

// Token exchange (RFC 8693) of the client's own token, narrowed.
await step('token exchange rfc8693', async () => {
  need(cc);
  const resp = await oauth.genericTokenEndpointRequest(as, client, auth, 'urn:ietf:params:oauth:grant-type:token-exchange',
    new URLSearchParams({
      subject_token: cc.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: resource.href,
      scope: args.scope,
    }), insecure);
  const tok = await oauth.processGenericTokenEndpointResponse(as, client, resp);
  expect(tok.issued_token_type === 'urn:ietf:params:oauth:token-type:access_token', `issued_token_type ${tok.issued_token_type}`);
  await checkAccessToken(tok.access_token, client.client_id);
});

// PAR (RFC 9126), authorization code with PKCE, login and consent, the
// iss of RFC 9207, and the ID token (oauth4webapi checks its claims;
// jose verifies its signature against the JWKS).
const verifier = oauth.generateRandomCodeVerifier();
const state = oauth.generateRandomState();
const nonce = oauth.generateRandomNonce();
const code = await step('par + authorize + rfc9207 iss', async () => {
  need(as);
  const params = new URLSearchParams({
    redirect_uri: callback, response_type: 'code', scope: scopes, resource: resource.href,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256', state, nonce,
    prompt: 'consent', max_age: '300',
  });
  const par = await oauth.processPushedAuthorizationResponse(as, client,
    await oauth.pushedAuthorizationRequest(as, client, auth, params, insecure));
  const url = new URL(as.authorization_endpoint);
  url.searchParams.set('client_id', client.client_id);
  url.searchParams.set('request_uri', par.request_uri);
  const { redirect } = await authorize(url.href, { redirectUri: callback, username: args.username, password: args.password });
  return oauth.validateAuthResponse(as, client, redirect, state);
});
// An error answer of the authorization endpoint carries iss too (RFC
// 9207 section 2); oauth4webapi checks it before it reads the error.
// An unknown scope is invalid_scope; several resources, which RFC 8707
// section 2 allows and this server does not, invalid_target. OpenID
// Connect Core 3.1.2.6: prompt=none without a session is login_required,
// none with another value invalid_request; request objects, by value or
// by a request_uri no push returned, request_not_supported and
// request_uri_not_supported (the metadata says both unsupported).
for (const [name, code, scope, extra, params] of [
  ['invalid_scope', 'invalid_scope', 'no:such:scope', [], {}],
  ['invalid_target', 'invalid_target', args.scope, ['https://elsewhere.example/mcp'], {}],
  ['oidc prompt=none login_required', 'login_required', `openid ${args.scope}`, [], { prompt: 'none', nonce }],
  ['oidc prompt=none login invalid_request', 'invalid_request', `openid ${args.scope}`, [], { prompt: 'none login', nonce }],
  ['oidc request_not_supported', 'request_not_supported', `openid ${args.scope}`, [], { request: 'eyJhbGciOiJub25lIn0.e30.' }],
  ['oidc request_uri_not_supported', 'request_uri_not_supported', `openid ${args.scope}`, [], { request_uri: 'https://rp.example/request.jwt' }],
]) {
  await step(`authorization error ${name} + rfc9207 iss`, async () => {
    need(as);
    expect(!as.request_parameter_supported && as.request_uri_parameter_supported === false, 'metadata: request objects supported');
    const url = new URL(as.authorization_endpoint);
    for (const [k, v] of Object.entries({
      client_id: client.client_id, redirect_uri: callback, response_type: 'code', scope, state,
      resource: resource.href, code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
      ...params,
    })) url.searchParams.set(k, v);
    for (const r of extra) url.searchParams.append('resource', r);
    const resp = await fetch(url, { redirect: 'manual' });
    expect(resp.status >= 300 && resp.status < 400, `status ${resp.status}`);
    let err;
    try {
      oauth.validateAuthResponse(as, client, new URL(resp.headers.get('location')), state);
    } catch (e) {
      err = e;
    }
    expect(err instanceof oauth.AuthorizationResponseError && err.error === code, describe(err));
  });
}
await step('par error', async () => {
  need(as);
  const err = await refused(async () => oauth.processPushedAuthorizationResponse(as, client,
    await oauth.pushedAuthorizationRequest(as, client, auth, new URLSearchParams({
      redirect_uri: 'https://elsewhere.example/cb', response_type: 'code', scope: args.scope,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier), code_challenge_method: 'S256',
    }), insecure)));
  bodyError(err, 400, 'invalid_request');
});
const tokens = await step('authorization_code + id_token', async () => {
  need(code);
  const resp = await oauth.authorizationCodeGrantRequest(as, client, auth, code, callback, verifier, insecure);
  const tok = await oauth.processAuthorizationCodeResponse(as, client, resp, { expectedNonce: nonce, maxAge: 300, requireIdToken: true });
  expect(tok.refresh_token, 'no refresh_token for offline_access');
  const { payload: id } = await jose.jwtVerify(tok.id_token, jwks, { issuer: as.issuer, audience: client.client_id });
  // at_hash, when present, is the left half of the access token's SHA-256
  // (OpenID Connect Core section 3.1.3.6).
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(tok.access_token)));
  expect(id.at_hash === undefined || id.at_hash === Buffer.from(digest.slice(0, 16)).toString('base64url'), `at_hash ${id.at_hash}`);
  return tok;
});
const user = tokens && oauth.getValidatedIdTokenClaims(tokens).sub;
await step('authorization_code rfc9068', async () => {
  need(tokens);
  await checkAccessToken(tokens.access_token, user);
});
// Delegation by token exchange (RFC 8693 section 4.1): the user's token
// with the agent's own as actor_token; act names the agent, sub stays
// the user's.
await step('token exchange with actor_token rfc8693', async () => {
  need(tokens);
  const agent = { client_id: args['agent-id'] };
  const own = await oauth.processClientCredentialsResponse(as, agent,
    await oauth.clientCredentialsGrantRequest(as, agent, oauth.ClientSecretBasic(args['agent-secret']),
      new URLSearchParams({ scope: args.scope, resource: resource.href }), insecure));
  const resp = await oauth.genericTokenEndpointRequest(as, client, auth, 'urn:ietf:params:oauth:grant-type:token-exchange',
    new URLSearchParams({
      subject_token: tokens.access_token,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      actor_token: own.access_token,
      actor_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      resource: resource.href,
      scope: args.scope,
    }), insecure);
  const tok = await oauth.processGenericTokenEndpointResponse(as, client, resp);
  expect(tok.issued_token_type === 'urn:ietf:params:oauth:token-type:access_token' && !tok.refresh_token, JSON.stringify(Object.keys(tok)));
  const claims = await checkAccessToken(tok.access_token, user);
  expect(claims.act?.sub === agent.client_id && claims.scope === args.scope, `act ${JSON.stringify(claims.act)}, scope ${claims.scope}`);
});
await step('userinfo', async () => {
  need(tokens);
  const info = await oauth.processUserInfoResponse(as, client, user,
    await oauth.userInfoRequest(as, client, tokens.access_token, insecure));
  expect(info.sub === user, `sub ${info.sub}`);
});
// OpenID Connect Core 5.4's scope values for every standard claim: the
// request succeeds (address and phone, whose claims no user here has,
// are ignored, 3.1.2.1), the ID token and userinfo name the same user,
// and userinfo answers POST as GET (5.3.1).
await step('oidc standard claim scopes + userinfo', async () => {
  need(as, user);
  const v = oauth.generateRandomCodeVerifier();
  const st = oauth.generateRandomState();
  const n = oauth.generateRandomNonce();
  const url = new URL(as.authorization_endpoint);
  for (const [k, val] of Object.entries({
    client_id: client.client_id, redirect_uri: callback, response_type: 'code', scope: 'openid profile email address phone',
    resource: resource.href, state: st, nonce: n, code_challenge: await oauth.calculatePKCECodeChallenge(v), code_challenge_method: 'S256',
  })) url.searchParams.set(k, val);
  const { redirect } = await authorize(url.href, { redirectUri: callback, username: args.username, password: args.password });
  const c = oauth.validateAuthResponse(as, client, redirect, st);
  const tok = await oauth.processAuthorizationCodeResponse(as, client,
    await oauth.authorizationCodeGrantRequest(as, client, auth, c, callback, v, insecure), { expectedNonce: n, requireIdToken: true });
  expect(tok.scope === 'openid profile email', `scope ${tok.scope}`);
  const sub = oauth.getValidatedIdTokenClaims(tok).sub;
  expect(sub === user, `ID token sub ${sub}, want ${user}`);
  const info = await oauth.processUserInfoResponse(as, client, sub, await fetch(as.userinfo_endpoint, {
    method: 'POST', headers: { authorization: `Bearer ${tok.access_token}`, accept: 'application/json' },
  }));
  expect(info.sub === sub && info.preferred_username, JSON.stringify(Object.keys(info)));
});
await step('userinfo invalid_token challenge', async () => {
  need(as);
  const err = await refused(async () => oauth.processUserInfoResponse(as, client, oauth.skipSubjectCheck,
    await oauth.userInfoRequest(as, client, 'not-a-token', insecure)));
  expect(err instanceof oauth.WWWAuthenticateChallengeError && err.response.status === 401, describe(err));
  expect(err.cause.some((c) => c.scheme === 'bearer' && c.parameters.error === 'invalid_token'), JSON.stringify(err.cause));
});

// Refresh rotation: a new refresh token, the same user; the spent one is
// refused (and ends the family, so the new one is refused too).
const refreshed = await step('refresh rotation', async () => {
  need(tokens);
  const tok = await oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, auth, tokens.refresh_token,
      { additionalParameters: { resource: resource.href }, ...insecure }));
  expect(tok.refresh_token && tok.refresh_token !== tokens.refresh_token, 'refresh token not rotated');
  await checkAccessToken(tok.access_token, user);
  // A new ID token names the same user and the same sign-in (OpenID
  // Connect Core section 12.2).
  const first = oauth.getValidatedIdTokenClaims(tokens);
  const again = oauth.getValidatedIdTokenClaims(tok);
  if (again) {
    expect(again.sub === first.sub && again.auth_time === first.auth_time && again.azp === first.azp,
      `refreshed ID token ${JSON.stringify(again)}, first ${JSON.stringify(first)}`);
  }
  return tok;
});

// Introspection (RFC 7662) and revocation (RFC 7009).
async function introspect(token) {
  return oauth.processIntrospectionResponse(as, client,
    await oauth.introspectionRequest(as, client, auth, token, insecure));
}
await step('introspection', async () => {
  need(refreshed);
  const at = await introspect(refreshed.access_token);
  expect(at.active === true && at.sub === user && at.client_id === client.client_id, JSON.stringify(at));
  const rt = await introspect(refreshed.refresh_token);
  expect(rt.active === true, `refresh token ${JSON.stringify(rt)}`);
  const junk = await introspect('not-a-token');
  expect(junk.active === false, JSON.stringify(junk));
});
await step('refresh replay', async () => {
  need(refreshed);
  const err = await refused(async () => oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, auth, tokens.refresh_token, insecure)));
  bodyError(err, 400, 'invalid_grant');
  const after = await introspect(refreshed.refresh_token);
  expect(after.active === false, 'the rotated family is still active after a replay');
});
// A replayed code is refused.
await step('code replay', async () => {
  need(code);
  const err = await refused(async () => oauth.processAuthorizationCodeResponse(as, client,
    await oauth.authorizationCodeGrantRequest(as, client, auth, code, callback, verifier, insecure)));
  bodyError(err, 400, 'invalid_grant');
});
await step('revocation', async () => {
  need(cc);
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, auth, cc.access_token, insecure));
  const after = await introspect(cc.access_token);
  expect(after.active === false, 'active after revocation');
  // An unknown token is not an error (RFC 7009 section 2.2).
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, auth, 'not-a-token', insecure));
});

// Error answers of the token endpoint: a wrong secret is 401
// invalid_client with a challenge for the scheme used (RFC 6749 section
// 5.2); a grant type the client lacks, an unknown one, a bad scope and an
// unknown resource are 400.
await step('token error invalid_client', async () => {
  need(as);
  const err = await refused(async () => oauth.processClientCredentialsResponse(as, client,
    await oauth.clientCredentialsGrantRequest(as, client, oauth.ClientSecretBasic('wrong'),
      new URLSearchParams({ resource: resource.href }), insecure)));
  // RFC 6749 section 5.2: a challenge of the scheme the client used.
  expect(err instanceof oauth.WWWAuthenticateChallengeError && err.response.status === 401, describe(err));
  expect(err.cause.some((c) => c.scheme === 'basic'), JSON.stringify(err.cause));
  const body = await err.response.json();
  expect(body.error === 'invalid_client', JSON.stringify(body));
});
for (const [name, grant, params, code] of [
  ['unsupported_grant_type', 'urn:example:nothing', {}, 'unsupported_grant_type'],
  ['invalid_scope', 'client_credentials', { scope: 'no:such:scope', resource: resource.href }, 'invalid_scope'],
  ['invalid_target', 'client_credentials', { resource: 'https://elsewhere.example/mcp' }, 'invalid_target'],
]) {
  await step(`token error ${name}`, async () => {
    need(as);
    const err = await refused(async () => oauth.processGenericTokenEndpointResponse(as, client,
      await oauth.genericTokenEndpointRequest(as, client, auth, grant, new URLSearchParams(params), insecure)));
    bodyError(err, 400, code);
  });
}

// DPoP (RFC 9449) through the whole code flow: a key bound at PAR
// (dpop_jkt from the PAR request's proof), the code redeemed and the
// token refreshed with proofs (nonces answered), userinfo with a proof,
// and introspection telling the binding.
const keys = await oauth.generateKeyPair('ES256');
const dpop = oauth.DPoP(client, keys);
async function withNonce(fn) {
  try {
    return await fn();
  } catch (err) {
    if (!oauth.isDPoPNonceError(err)) throw err;
    return fn();
  }
}
const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(keys.publicKey));
const dpopVerifier = oauth.generateRandomCodeVerifier();
const dpopCode = await step('dpop par + authorize', async () => {
  need(as);
  const params = new URLSearchParams({
    redirect_uri: callback, response_type: 'code', scope: `openid offline_access ${args.scope}`, resource: resource.href,
    code_challenge: await oauth.calculatePKCECodeChallenge(dpopVerifier), code_challenge_method: 'S256', state,
  });
  const par = await withNonce(async () => oauth.processPushedAuthorizationResponse(as, client,
    await oauth.pushedAuthorizationRequest(as, client, auth, params, { DPoP: dpop, ...insecure })));
  const url = new URL(as.authorization_endpoint);
  url.searchParams.set('client_id', client.client_id);
  url.searchParams.set('request_uri', par.request_uri);
  const { redirect } = await authorize(url.href, { redirectUri: callback, username: args.username, password: args.password });
  return oauth.validateAuthResponse(as, client, redirect, state);
});
const dpopTokens = await step('dpop authorization_code', async () => {
  need(dpopCode);
  const tok = await withNonce(async () => oauth.processAuthorizationCodeResponse(as, client,
    await oauth.authorizationCodeGrantRequest(as, client, auth, dpopCode, callback, dpopVerifier, { DPoP: dpop, ...insecure }),
    { expectedNonce: oauth.expectNoNonce }));
  expect(tok.token_type === 'dpop', `token_type ${tok.token_type}`);
  await checkAccessToken(tok.access_token, user, jkt);
  return tok;
});
const dpopRefreshed = await step('dpop refresh', async () => {
  need(dpopTokens);
  const tok = await withNonce(async () => oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, auth, dpopTokens.refresh_token, { DPoP: dpop, ...insecure })));
  expect(tok.token_type === 'dpop', `token_type ${tok.token_type}`);
  await checkAccessToken(tok.access_token, user, jkt);
  return tok;
});
await step('dpop userinfo', async () => {
  need(dpopTokens);
  const info = await withNonce(async () => oauth.processUserInfoResponse(as, client, user,
    await oauth.userInfoRequest(as, client, dpopTokens.access_token, { DPoP: dpop, ...insecure })));
  expect(info.sub === user, `sub ${info.sub}`);
});
await step('dpop userinfo as Bearer', async () => {
  need(dpopTokens);
  const err = await refused(async () => oauth.processUserInfoResponse(as, client, user,
    await oauth.userInfoRequest(as, client, dpopTokens.access_token, insecure)));
  expect(err instanceof oauth.WWWAuthenticateChallengeError && err.response.status === 401, describe(err));
});
// The resource server's view (RFC 9449 section 7): oauth4webapi checks
// the token's cnf against a proof made with jose.
await step('dpop rfc9068 + proof', async () => {
  need(dpopTokens);
  const ath = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(dpopTokens.access_token))).toString('base64url');
  const proof = await new jose.SignJWT({ htm: 'POST', htu: resource.href, ath, jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jose.exportJWK(keys.publicKey) })
    .setIssuedAt().sign(keys.privateKey);
  const claims = await oauth.validateJwtAccessToken(as, new Request(resource, {
    method: 'POST', headers: { authorization: `DPoP ${dpopTokens.access_token}`, dpop: proof },
  }), resource.href, insecure);
  expect(claims.cnf?.jkt === jkt, JSON.stringify(claims.cnf));
});
await step('dpop introspection', async () => {
  need(dpopTokens);
  const at = await introspect(dpopTokens.access_token);
  expect(at.active === true && at.cnf?.jkt === jkt && /^dpop$/i.test(at.token_type || ''), JSON.stringify(at));
});
await step('dpop invalid proof at token', async () => {
  need(dpopRefreshed);
  const proof = await new jose.SignJWT({ htm: 'POST', htu: 'https://elsewhere.example/token', jti: crypto.randomUUID() })
    .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jose.exportJWK(keys.publicKey) })
    .setIssuedAt().sign(keys.privateKey);
  const resp = await fetch(as.token_endpoint, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from(`${client.client_id}:${args['client-secret']}`).toString('base64')}`, dpop: proof,
      'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: dpopRefreshed.refresh_token }),
  });
  const body = await resp.json();
  expect(resp.status === 400 && body.error === 'invalid_dpop_proof', `${resp.status} ${JSON.stringify(body)}`);
});
// Revoking a refresh token ends its grant, the access tokens with it
// (RFC 7009 section 2.1).
await step('revocation of a refresh token', async () => {
  need(dpopRefreshed);
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, auth, dpopRefreshed.refresh_token,
    { additionalParameters: { token_type_hint: 'refresh_token' }, ...insecure }));
  const rt = await introspect(dpopRefreshed.refresh_token);
  const at = await introspect(dpopRefreshed.access_token);
  expect(!rt.active && !at.active, `after revocation: refresh ${rt.active}, access ${at.active}`);
});

// Dynamic client registration (RFC 7591): a public native client, which
// then signs the user in without PAR; its tokens are DPoP-bound, the
// refresh token too (RFC 9449 section 5: a public client's must be).
const pub = await step('dcr rfc7591', async () => {
  need(as);
  const reg = await oauth.processDynamicClientRegistrationResponse(await oauth.dynamicClientRegistrationRequest(as, {
    redirect_uris: [callback], token_endpoint_auth_method: 'none', client_name: 'peer.mjs',
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], application_type: 'native',
  }, insecure));
  expect(reg.client_id && reg.token_endpoint_auth_method === 'none', JSON.stringify(reg));
  // The answer is the client's registered metadata (RFC 7591 section
  // 3.2.1), read as OpenID Connect Dynamic Client Registration 1.0
  // section 2 says: no id_token_signed_response_alg means RS256.
  return { ...reg, id_token_signed_response_alg: reg.id_token_signed_response_alg ?? 'RS256' };
});
const pubKeys = await oauth.generateKeyPair('ES256');
const pubDPoP = oauth.DPoP({}, pubKeys);
const pubTokens = await step('public client authorization_code + dpop', async () => {
  need(pub);
  const v = oauth.generateRandomCodeVerifier();
  const url = new URL(as.authorization_endpoint);
  for (const [k, val] of Object.entries({
    client_id: pub.client_id, redirect_uri: callback, response_type: 'code', scope: `openid offline_access ${args.scope}`, state,
    resource: resource.href, code_challenge: await oauth.calculatePKCECodeChallenge(v), code_challenge_method: 'S256',
  })) url.searchParams.set(k, val);
  const { redirect } = await authorize(url.href, { redirectUri: callback, username: args.username, password: args.password });
  const params = oauth.validateAuthResponse(as, pub, redirect, state);
  const tok = await withNonce(async () => oauth.processAuthorizationCodeResponse(as, pub,
    await oauth.authorizationCodeGrantRequest(as, pub, oauth.None(), params, callback, v, { DPoP: pubDPoP, ...insecure })));
  expect(tok.token_type === 'dpop' && tok.refresh_token, `token_type ${tok.token_type}, refresh token ${!!tok.refresh_token}`);
  return tok;
});
const pubRefreshed = await step('public client refresh needs its key', async () => {
  need(pubTokens);
  const err = await refused(async () => oauth.processRefreshTokenResponse(as, pub,
    await oauth.refreshTokenGrantRequest(as, pub, oauth.None(), pubTokens.refresh_token, insecure)));
  expect(err instanceof oauth.ResponseBodyError && err.status === 400 && ['invalid_grant', 'invalid_dpop_proof'].includes(err.error), describe(err));
  const tok = await withNonce(async () => oauth.processRefreshTokenResponse(as, pub,
    await oauth.refreshTokenGrantRequest(as, pub, oauth.None(), pubTokens.refresh_token, { DPoP: pubDPoP, ...insecure })));
  expect(tok.refresh_token !== pubTokens.refresh_token, 'refresh token not rotated');
  return tok;
});
// A public client's bound refresh token is revoked only with a DPoP
// proof of its key (README, DPoP): without one the answer is 200 and the
// grant lives on. oauth4webapi's revocationRequest sends no proof, so the
// proof is made with jose, answering the nonce challenge.
await step('public client revocation needs its key', async () => {
  need(pubRefreshed);
  const live = pubRefreshed.refresh_token;
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, pub, oauth.None(), live, insecure));
  const still = await withNonce(async () => oauth.processRefreshTokenResponse(as, pub,
    await oauth.refreshTokenGrantRequest(as, pub, oauth.None(), live, { DPoP: pubDPoP, ...insecure })));
  const revoke = async (nonce) => fetch(as.revocation_endpoint, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      dpop: await new jose.SignJWT({ htm: 'POST', htu: as.revocation_endpoint, jti: crypto.randomUUID(), ...(nonce ? { nonce } : {}) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk: await jose.exportJWK(pubKeys.publicKey) })
        .setIssuedAt().sign(pubKeys.privateKey),
    },
    body: new URLSearchParams({ client_id: pub.client_id, token: still.refresh_token }),
  });
  let resp = await revoke();
  if (resp.status === 400 && resp.headers.has('dpop-nonce')) resp = await revoke(resp.headers.get('dpop-nonce'));
  expect(resp.status === 200, `revocation with a proof: ${resp.status} ${await resp.text()}`);
  const err = await refused(async () => withNonce(async () => oauth.processRefreshTokenResponse(as, pub,
    await oauth.refreshTokenGrantRequest(as, pub, oauth.None(), still.refresh_token, { DPoP: pubDPoP, ...insecure }))));
  bodyError(err, 400, 'invalid_grant');
});
await step('dcr invalid_redirect_uri', async () => {
  need(as);
  const err = await refused(async () => oauth.processDynamicClientRegistrationResponse(
    await oauth.dynamicClientRegistrationRequest(as, { redirect_uris: ['http://evil.example/cb'], token_endpoint_auth_method: 'none' }, insecure)));
  bodyError(err, 400, 'invalid_redirect_uri');
});

// private_key_jwt (RFC 7523) as oauth4webapi makes it: aud is the
// issuer identifier (draft-ietf-oauth-rfc7523bis), a fresh jti each time.
const jwtClient = { client_id: args['jwt-client-id'] };
const jwtAuth = oauth.PrivateKeyJwt({
  key: await jose.importJWK(JSON.parse(readFileSync(args['jwt-client-key'], 'utf8')), 'ES256'), kid: 'jose-idp-1',
});
await step('private_key_jwt client_credentials + introspection + revocation', async () => {
  need(as);
  const tok = await oauth.processClientCredentialsResponse(as, jwtClient,
    await oauth.clientCredentialsGrantRequest(as, jwtClient, jwtAuth,
      new URLSearchParams({ scope: args.scope, resource: resource.href }), insecure));
  const on = await oauth.processIntrospectionResponse(as, jwtClient,
    await oauth.introspectionRequest(as, jwtClient, jwtAuth, tok.access_token, insecure));
  expect(on.active === true && on.client_id === jwtClient.client_id, JSON.stringify(on));
  await oauth.processRevocationResponse(await oauth.revocationRequest(as, jwtClient, jwtAuth, tok.access_token, insecure));
  const off = await oauth.processIntrospectionResponse(as, jwtClient,
    await oauth.introspectionRequest(as, jwtClient, jwtAuth, tok.access_token, insecure));
  expect(off.active === false, JSON.stringify(off));
});

console.log(JSON.stringify({ steps }));
