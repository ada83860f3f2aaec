// An upstream OpenID Connect provider for the identity provider tests
// (test/idp): oidc-provider, the certified Node implementation, on
// loopback with its development login pages (any password; the login
// name is the account).
//
// Environment:
//   IDP_ISSUER    the issuer URL (the test's proxy in front of this server)
//   IDP_PORT      the loopback port to listen on
//   IDP_CLIENTS   JSON array of static client metadata
//   IDP_ACCOUNTS  path of a JSON file {"<login>": {claims...}}, read at
//                 every sign-in so a test can change a user's groups
//   IDP_RESOURCES optional JSON object of resource servers (RFC 8707
//                 resource indicators), by resource URL:
//                 {"scope": "a b", "format": "jwt"|"opaque",
//                  "style": "typ-jwt-scp"}; style typ-jwt-scp issues JWTs
//                 as many IdPs do: typ JWT, scopes in an scp array.
//                 With it, introspection and revocation are on too.
//
// DPoP (RFC 9449) is on: a token request with a proof gets an access
// token bound to its key (cnf.jkt in JWTs and introspection answers).
// Clients whose metadata lists client_credentials may use that grant.
//
// Prints "ready" on stdout once it listens.
import { readFileSync } from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const issuer = process.env.IDP_ISSUER;
const port = Number(process.env.IDP_PORT);
const clients = JSON.parse(process.env.IDP_CLIENTS);
const accountsFile = process.env.IDP_ACCOUNTS;
const resources = JSON.parse(process.env.IDP_RESOURCES || '{}');

function account(id) {
  const all = JSON.parse(readFileSync(accountsFile, 'utf8'));
  return Object.hasOwn(all, id) ? all[id] : undefined;
}

const provider = new Provider(issuer, {
  clients,
  // The ID token carries the claims of the scopes asked for (groups
  // included), as Okta, Entra ID and Keycloak can be configured to.
  conformIdTokenClaims: false,
  scopes: ['openid', 'email', 'profile', 'groups', 'offline_access'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  async findAccount(ctx, id) {
    const a = account(id);
    if (!a) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...a }; } };
  },
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx, client, oneOf) => oneOf,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resource) {
        const rs = resources[resource];
        if (!rs) throw new errors.InvalidTarget();
        return {
          scope: rs.scope,
          accessTokenFormat: rs.format,
          accessTokenTTL: 300,
          ...(rs.format === 'jwt' ? { jwt: { sign: { alg: 'RS256' } } } : {}),
        };
      },
    },
    introspection: { enabled: true },
    revocation: { enabled: true },
    dPoP: { enabled: true },
    clientCredentials: { enabled: true },
  },
  formats: {
    customizers: {
      async jwt(ctx, token, jwt) {
        const rs = resources[jwt.payload.aud];
        if (rs?.style === 'typ-jwt-scp') {
          jwt.header = { typ: 'JWT' };
          jwt.payload.scp = jwt.payload.scope.split(' ');
          delete jwt.payload.scope;
        }
      },
    },
  },
  pkce: { required: () => true },
});
// Development keys and interactions: say nothing of it on stderr per
// request.
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(port, '127.0.0.1', () => { console.log('ready'); });
