// An enterprise IdP's side of MCP enterprise-managed authorization, with
// an independent JOSE implementation (jose): makes the IdP's signing key
// and mints ID-JAGs (draft-ietf-oauth-identity-assertion-authz-grant
// section 3.1) with it.
//
//   node idjag.mjs keys --dir DIR
//       writes DIR/private.json (the private JWK), prints the public JWK Set
//   node idjag.mjs mint --dir DIR --iss URL --aud URL --sub S --client-id ID
//                       --resource URL --scope "a b" [--groups "g h"] [--ttl SECONDS]
//       prints one ID-JAG (compact JWS, typ oauth-id-jag+jwt, ES256)
import { SignJWT, exportJWK, generateKeyPair, importJWK } from 'jose';
import { randomUUID } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { positionals, values: args } = parseArgs({
  allowPositionals: true,
  options: {
    dir: { type: 'string' },
    iss: { type: 'string' },
    aud: { type: 'string' },
    sub: { type: 'string' },
    'client-id': { type: 'string' },
    resource: { type: 'string' },
    scope: { type: 'string' },
    groups: { type: 'string', default: '' },
    ttl: { type: 'string', default: '300' },
  },
});

const kid = 'jose-idp-1';

switch (positionals[0]) {
  case 'keys': {
    const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
    writeFileSync(join(args.dir, 'private.json'), JSON.stringify(await exportJWK(privateKey)), { mode: 0o600 });
    const pub = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
    process.stdout.write(JSON.stringify({ keys: [pub] }) + '\n');
    break;
  }
  case 'mint': {
    const key = await importJWK(JSON.parse(readFileSync(join(args.dir, 'private.json'), 'utf8')), 'ES256');
    const claims = { client_id: args['client-id'], resource: args.resource, scope: args.scope };
    if (args.groups) claims.groups = args.groups.split(' ');
    const jag = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', typ: 'oauth-id-jag+jwt', kid })
      .setIssuer(args.iss)
      .setAudience(args.aud)
      .setSubject(args.sub)
      .setJti(randomUUID())
      .setIssuedAt()
      .setExpirationTime(`${Number(args.ttl)}s`)
      .sign(key);
    process.stdout.write(jag + '\n');
    break;
  }
  default:
    process.stderr.write('usage: idjag.mjs keys|mint ...\n');
    process.exit(2);
}
