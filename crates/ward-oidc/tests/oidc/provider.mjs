// TEST-ONLY OpenID Connect provider for ward-oidc's integration test (oidc-provider@8,
// Node >= 20). Listens on 127.0.0.1 only; prints one JSON line {"issuer": ...} on stdout once
// it accepts requests, and exits when its stdin closes (so it never outlives the test).
//
// Environment:
//   PORT          port to listen on (default 0: any free port; the issuer line tells which)
//   REDIRECT_URI  the client's redirect URI (default http://127.0.0.1:8080/callback)
//   OIDC_USERS    JSON object: account id -> claims (default: alice, groups dba and dev)
//   ROTATE_TOKEN  if set, POST /admin/rotate with header `x-admin: $ROTATE_TOKEN` replaces
//                 the signing key by a new one (new kid); the old key is no longer published
//
// Clients: gateway / gateway-secret (client_secret_basic), grants authorization_code and
// client_credentials; ward-cli, a public native client like ward's CLI (no secret, PKCE
// required, loopback redirect http://127.0.0.1:<any port>/callback, grants
// authorization_code and the device flow, whose user-code page is at /device). Access tokens
// are JWTs (RS256) for the resource urn:gateway; devInteractions gives a login form that
// takes any user name, no password; consent is automatic.
import http from 'node:http';
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const PORT = Number(process.env.PORT || 0);
const REDIRECT_URI = process.env.REDIRECT_URI || 'http://127.0.0.1:8080/callback';
const USERS = process.env.OIDC_USERS
  ? JSON.parse(process.env.OIDC_USERS)
  : {
      alice: {
        preferred_username: 'alice',
        email: 'alice@example.test',
        email_verified: true,
        groups: ['dba', 'dev'],
      },
    };

let keyNumber = 0;
async function newKey() {
  keyNumber += 1;
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: `test-key-${keyNumber}`, alg: 'RS256', use: 'sig' };
}

const server = http.createServer();
await new Promise((resolve) => server.listen(PORT, '127.0.0.1', resolve));
const ISSUER = `http://127.0.0.1:${server.address().port}`;

function configuration(jwk) {
  return {
    jwks: { keys: [jwk] },
    clients: [
      {
        client_id: 'gateway',
        client_secret: 'gateway-secret',
        grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
        response_types: ['code'],
        redirect_uris: [REDIRECT_URI],
        scope: 'openid profile email groups offline_access',
      },
      {
        // ward login: a public native client. RFC 8252 §7.3: for native clients a loopback
        // redirect matches whatever port the CLI listens on.
        client_id: 'ward-cli',
        application_type: 'native',
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'urn:ietf:params:oauth:grant-type:device_code'],
        response_types: ['code'],
        redirect_uris: ['http://127.0.0.1/callback'],
        scope: 'openid profile email groups',
      },
    ],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'profile', 'email', 'groups', 'offline_access'],
    features: {
      devInteractions: { enabled: true }, // built-in login page: any user name, no password
      clientCredentials: { enabled: true },
      deviceFlow: { enabled: true }, // user codes entered at /device
      resourceIndicators: {
        // Access tokens become JWTs for resource urn:gateway (also the default resource).
        enabled: true,
        defaultResource: () => 'urn:gateway',
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'openid profile email groups',
          audience: 'urn:gateway',
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    findAccount: async (ctx, id) => ({
      accountId: id,
      claims: async () => ({ sub: id, ...(USERS[id] || { preferred_username: id, groups: [] }) }),
    }),
    loadExistingGrant: async (ctx) => {
      // Automatic consent: every login gets the full grant, no consent page.
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid profile email groups offline_access');
      grant.addResourceScope('urn:gateway', 'openid profile email groups');
      await grant.save();
      return grant;
    },
    // PKCE is required of the public client only (the gateway client predates it).
    pkce: { required: (ctx, client) => client.clientId === 'ward-cli' },
    ttl: {
      AccessToken: 3600,
      IdToken: 3600,
      ClientCredentials: 3600,
      Interaction: 600,
      Grant: 3600,
      Session: 3600,
    },
  };
}

function start(jwk) {
  const provider = new Provider(ISSUER, configuration(jwk));
  provider.proxy = false;
  return provider.callback();
}
let handle = start(await newKey());

server.on('request', async (req, res) => {
  if (req.url === '/admin/rotate' && req.method === 'POST' && process.env.ROTATE_TOKEN) {
    if (req.headers['x-admin'] !== process.env.ROTATE_TOKEN) {
      res.writeHead(403).end();
      return;
    }
    // A fresh provider with a new key: sessions and grants are dropped too, which is fine for
    // a test IdP (tokens are minted anew after a rotation).
    const jwk = await newKey();
    handle = start(jwk);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ kid: jwk.kid }));
    return;
  }
  handle(req, res);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
console.log(JSON.stringify({ issuer: ISSUER }));
