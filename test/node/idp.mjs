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
//
// Prints "ready" on stdout once it listens.
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const issuer = process.env.IDP_ISSUER;
const port = Number(process.env.IDP_PORT);
const clients = JSON.parse(process.env.IDP_CLIENTS);
const accountsFile = process.env.IDP_ACCOUNTS;

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
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
});
// Development keys and interactions: say nothing of it on stderr per
// request.
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.listen(port, '127.0.0.1', () => { console.log('ready'); });
