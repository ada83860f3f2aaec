// OpenID Connect RP-Initiated Logout with openid-client, panva's certified
// relying party library: discovery of the issuer (OpenID Connect
// Discovery), then buildEndSessionUrl, which takes the end_session_endpoint
// of the discovery document. Prints the URL.
//
//   node logout.mjs --issuer URL --client-id ID --id-token JWT
//     --post-logout-redirect-uri URL --state S
import * as client from 'openid-client';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    'id-token': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
    state: { type: 'string' },
  },
});

// The test issuer is http on loopback.
const config = await client.discovery(new URL(args.issuer), args['client-id'], undefined, client.None(), {
  execute: [client.allowInsecureRequests],
});
const url = client.buildEndSessionUrl(config, {
  id_token_hint: args['id-token'],
  post_logout_redirect_uri: args['post-logout-redirect-uri'],
  state: args.state,
});
console.log(url.href);
