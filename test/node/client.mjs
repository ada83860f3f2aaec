// A stock MCP client: the official TypeScript SDK's Streamable HTTP client
// transport with its OAuth flow (discovery, Dynamic Client Registration,
// PKCE, resource indicators, step-up on insufficient_scope), pointed at an
// MCP server URL and nothing else. Login and consent are done headlessly
// by robot.mjs inside the OAuthClientProvider's redirectToAuthorization.
//
//   node client.mjs [--url] http://127.0.0.1:8443/mcp \
//     --tool <permitted tool> [--tool-args '{"k":"v"}'] \
//     [--step-up-tool <tool outside the first token's scopes>] [--step-up-args '{}']
//   (MCP_USERNAME and MCP_PASSWORD in the environment, or --username/--password;
//   with --idp <name> or MCP_IDP, the robot signs in through that identity
//   provider's "Continue with" button, as that provider's user)
//
// Prints one JSON line (see Report below) and exits 0 when every step
// succeeded, 1 otherwise. Tokens, codes and secrets are never printed: only
// the access tokens' decoded claims.
import { parseArgs } from 'node:util';
import { randomBytes, randomInt } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { authorize } from './robot.mjs';

/**
 * @typedef {object} Report
 * @property {boolean} ok
 * @property {string} [error]
 * @property {string} [issuer]            authorization server found by discovery
 * @property {number} registrations       DCR registrations made
 * @property {object[]} authorizations    one per authorization request: scope, resource, iss check, robot steps
 * @property {object[]} tokens            decoded claims of each access token received (iss aud sub scope client_id act exp iat)
 * @property {string[]} tools             tools/list names
 * @property {object[]} calls             tools/call outcomes
 * @property {object[]} http              every HTTP exchange of the SDK: method, path, status, WWW-Authenticate, MCP method, token-request grant/scope/resource
 */

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string', default: process.env.MCP_URL },
    username: { type: 'string', default: process.env.MCP_USERNAME },
    password: { type: 'string', default: process.env.MCP_PASSWORD },
    idp: { type: 'string', default: process.env.MCP_IDP },
    tool: { type: 'string' },
    'tool-args': { type: 'string', default: '{}' },
    'step-up-tool': { type: 'string' },
    'step-up-args': { type: 'string', default: '{}' },
    'redirect-port': { type: 'string' },
  },
});
// The URL may also come last, as the conformance tool's client runner passes it.
args.url ??= positionals[0];

/** @type {Report} */
const report = { ok: false, registrations: 0, authorizations: [], tokens: [], tools: [], calls: [], http: [] };

// claimsOf decodes a JWT's payload (no verification: the gateway verifies;
// this only reports what the client was given). Opaque tokens yield {opaque: true}.
function claimsOf(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return { opaque: true };
  try {
    const c = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    const { iss, aud, sub, scope, client_id, act, exp, iat } = c;
    return { iss, aud, sub, scope, client_id, act, exp, iat };
  } catch {
    return { opaque: true };
  }
}

// recordingFetch logs each exchange the SDK makes (no secrets: paths without
// query, selected token-request fields only) and otherwise is plain fetch.
function recordingFetch(mcpUrl) {
  return async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
    const entry = { method, path: url.pathname };
    const body = init?.body;
    if (url.href === mcpUrl.href && typeof body === 'string') {
      try {
        const msg = JSON.parse(body);
        entry.mcp_method = Array.isArray(msg) ? msg.map((m) => m.method) : msg.method;
        if (msg.method === 'tools/call') entry.tool = msg.params?.name;
      } catch {
        // not JSON: leave unclassified
      }
    }
    if (body instanceof URLSearchParams) {
      for (const k of ['grant_type', 'scope', 'resource']) {
        if (body.has(k)) entry[k] = body.get(k);
      }
    }
    report.http.push(entry);
    const res = await fetch(input, init);
    entry.status = res.status;
    const challenge = res.headers.get('www-authenticate');
    if (challenge) entry.www_authenticate = challenge;
    return res;
  };
}

// Provider is an in-memory OAuthClientProvider whose "browser" is robot.mjs.
class Provider {
  #client;
  #tokens;
  #verifier;
  #state;
  #code;

  constructor(redirectUrl, username, password, idp) {
    this.redirectUrl = redirectUrl;
    this.username = username;
    this.password = password;
    this.idp = idp;
  }

  get clientMetadata() {
    return {
      client_name: 'caddy-mcp-auth interop (MCP TypeScript SDK)',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }

  state() {
    this.#state = randomBytes(16).toString('base64url');
    return this.#state;
  }

  clientInformation() {
    return this.#client;
  }

  saveClientInformation(info) {
    if (!this.#client || this.#client.client_id !== info.client_id) report.registrations++;
    this.#client = info;
  }

  tokens() {
    return this.#tokens;
  }

  saveTokens(tokens) {
    this.#tokens = tokens;
    report.tokens.push({
      ...claimsOf(tokens.access_token),
      token_type: tokens.token_type,
      response_scope: tokens.scope,
      has_refresh_token: Boolean(tokens.refresh_token),
    });
  }

  saveCodeVerifier(v) {
    this.#verifier = v;
  }

  codeVerifier() {
    if (!this.#verifier) throw new Error('no code verifier saved');
    return this.#verifier;
  }

  saveDiscoveryState(s) {
    report.issuer = s.authorizationServerUrl;
    this.issuerFromMetadata = s.authorizationServerMetadata?.issuer;
  }

  invalidateCredentials(scope) {
    if (scope === 'all' || scope === 'client') this.#client = undefined;
    if (scope === 'all' || scope === 'tokens') this.#tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this.#verifier = undefined;
  }

  // redirectToAuthorization is where a real client opens a browser; here
  // the robot logs in and consents, and the code waits in #code for
  // finishAuth.
  async redirectToAuthorization(authorizationUrl) {
    const q = authorizationUrl.searchParams;
    const entry = { scope: q.get('scope'), resource: q.get('resource'), pkce: q.get('code_challenge_method') };
    report.authorizations.push(entry);
    const { redirect, steps } = await authorize(authorizationUrl, {
      redirectUri: this.redirectUrl,
      username: this.username,
      password: this.password,
      idp: this.idp,
    });
    entry.steps = steps;
    const r = redirect.searchParams;
    entry.iss = r.get('iss');
    entry.iss_matches = r.get('iss') !== null && r.get('iss') === this.issuerFromMetadata;
    entry.state_matches = r.get('state') === this.#state;
    if (r.has('error')) {
      entry.error = r.get('error');
      entry.error_description = r.get('error_description');
      throw new Error(`authorization failed: ${r.get('error')} ${r.get('error_description') ?? ''}`.trim());
    }
    if (!entry.state_matches) throw new Error('authorization response state does not match');
    this.#code = r.get('code');
  }

  takeCode() {
    const c = this.#code;
    this.#code = undefined;
    return c;
  }
}

function contentText(result) {
  return (result.content ?? [])
    .map((c) => (c.type === 'text' ? c.text : `[${c.type}]`))
    .join('\n')
    .slice(0, 500);
}

async function main() {
  if (!args.url || !args.username || !args.password) {
    throw new Error('need --url and credentials (MCP_USERNAME / MCP_PASSWORD or --username / --password)');
  }
  const mcpUrl = new URL(args.url);
  const port = args['redirect-port'] ?? String(randomInt(20000, 60000));
  // A loopback redirect URI nobody listens on: the robot stops at the
  // redirect and hands the code over directly.
  const provider = new Provider(`http://127.0.0.1:${port}/callback`, args.username, args.password, args.idp);
  const fetchFn = recordingFetch(mcpUrl);
  const newTransport = () => new StreamableHTTPClientTransport(mcpUrl, { authProvider: provider, fetch: fetchFn });
  const newClient = () => new Client({ name: 'caddy-mcp-auth-interop', version: '1.0.0' });

  let transport = newTransport();
  let client = newClient();
  try {
    await client.connect(transport);
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    const code = provider.takeCode();
    if (!code) throw err;
    await transport.finishAuth(code);
    // Client.connect closed the failed transport; start over with the token.
    transport = newTransport();
    client = newClient();
    await client.connect(transport);
  }

  // withAuth runs fn; when the SDK answered a 401 or 403 challenge by
  // sending the user through authorization (UnauthorizedError after the
  // robot ran), it exchanges the code and runs fn again on the same session.
  const withAuth = async (fn, record = {}) => {
    try {
      return await fn();
    } catch (err) {
      const code = err instanceof UnauthorizedError ? provider.takeCode() : undefined;
      if (!code) throw err;
      record.reauthorized = true;
      await transport.finishAuth(code);
      return await fn();
    }
  };

  const listed = await withAuth(() => client.listTools());
  report.tools = listed.tools.map((t) => t.name);

  const call = async (phase, name, argJSON) => {
    const rec = { phase, tool: name };
    report.calls.push(rec);
    try {
      const result = await withAuth(() => client.callTool({ name, arguments: JSON.parse(argJSON) }), rec);
      rec.ok = !result.isError;
      rec.isError = Boolean(result.isError);
      rec.text = contentText(result);
    } catch (err) {
      rec.ok = false;
      rec.error = err instanceof Error ? err.message : String(err);
    }
    return rec;
  };

  let ok = true;
  if (args.tool) ok = (await call('permitted', args.tool, args['tool-args'])).ok && ok;
  if (args['step-up-tool']) ok = (await call('step_up', args['step-up-tool'], args['step-up-args'])).ok && ok;
  if (args['step-up-tool']) {
    // The list after step-up shows what the stepped-up token may call.
    report.tools_after = (await withAuth(() => client.listTools())).tools.map((t) => t.name);
  }
  await client.close();
  report.ok = ok;
}

main()
  .catch((err) => {
    report.ok = false;
    report.error = err instanceof Error ? err.message : String(err);
  })
  .finally(() => {
    console.log(JSON.stringify(report));
    process.exitCode = report.ok ? 0 : 1;
  });
