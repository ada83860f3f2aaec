// Headless login + consent against the caddy-mcp-auth issuer, following the
// page/form automation contract (shared brief): follow redirects with a
// cookie jar; on a page with a form post all hidden inputs plus
// username/password (form#login) or decision=approve (form#consent) to the
// form's action; stop at the first redirect to the client's redirect_uri.
//
// With an identity provider name (MCP_IDP, or the idp option), the login
// page's "Continue with" form of that provider (form#idp-<name>) is posted
// instead, and the provider's sign-in pages are filled in as
// oidc-provider's development interactions draw them (test/node/idp.mjs):
// login=username, password, then its consent; the flow comes back to our
// consent page.
//
// Used as a module by client.mjs, and as a command by the Go interop tests
// (for the conformance tool's authorization-code-grant scenario):
//
//   node robot.mjs <authorization-url> <redirect-uri-prefix>
//   (MCP_USERNAME, MCP_PASSWORD and optionally MCP_IDP in the environment)
//
// prints one JSON line {"redirect": "<final redirect URL>", "steps": [...]}.
// The redirect carries the authorization code: it is printed only in this
// command form, whose caller needs it, and never logged otherwise.
import { parse } from 'node-html-parser';
import { pathToFileURL } from 'node:url';

const maxSteps = 20;

// CookieJar keeps cookies per host, honouring Path and Max-Age=0 / expired
// deletions; enough for a single-origin login flow over http or https.
class CookieJar {
  #cookies = new Map(); // host -> Map(name -> {value, path})

  store(url, setCookies) {
    const host = url.host;
    let jar = this.#cookies.get(host);
    if (!jar) {
      jar = new Map();
      this.#cookies.set(host, jar);
    }
    for (const line of setCookies) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      let path = '/';
      let expired = false;
      for (const a of attrs) {
        const [k, v = ''] = a.split('=');
        const key = k.trim().toLowerCase();
        if (key === 'path') path = v.trim() || '/';
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) < Date.now()) expired = true;
      }
      if (expired) jar.delete(name);
      else jar.set(name, { value, path });
    }
  }

  header(url) {
    const jar = this.#cookies.get(url.host);
    if (!jar) return undefined;
    const parts = [];
    for (const [name, c] of jar) {
      if (url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : c.path + '/')) {
        parts.push(`${name}=${c.value}`);
      }
    }
    return parts.length > 0 ? parts.join('; ') : undefined;
  }
}

// isRedirectTarget reports whether url is the client's redirect URI (same
// origin and path; the query carries code/state/iss).
function isRedirectTarget(url, redirectUri) {
  const want = new URL(redirectUri);
  return url.origin === want.origin && url.pathname === want.pathname;
}

// pageText returns a short plain-text excerpt of an HTML page for errors.
function pageText(html) {
  return html
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]+>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim()
    .slice(0, 300);
}

// providerForm is the form of an oidc-provider development interaction
// page: the one whose hidden prompt is login or consent.
function providerForm(doc) {
  for (const form of doc.querySelectorAll('form')) {
    const prompt = form.querySelector('input[name="prompt"]')?.getAttribute('value');
    if (prompt === 'login' || prompt === 'consent') return { form, kind: `idp-${prompt}` };
  }
  return undefined;
}

// metaRefresh is the URL a page's meta refresh sends the browser to, or
// undefined.
function metaRefresh(html, pageUrl) {
  for (const meta of parse(html).querySelectorAll('meta')) {
    if ((meta.getAttribute('http-equiv') ?? '').toLowerCase() !== 'refresh') continue;
    const [, target] = (meta.getAttribute('content') ?? '').split(/url=/i);
    if (target) return new URL(target, pageUrl);
  }
  return undefined;
}

// fillForm picks the login or consent form of a page (or, with idp, that
// provider's button and its pages' forms) and returns the request that
// submits it, or undefined when the page has none.
function fillForm(html, pageUrl, username, password, idp) {
  const doc = parse(html);
  let picked;
  if (idp) {
    const button = doc.querySelector(`form#idp-${idp}`);
    picked = button ? { form: button, kind: 'idp' } : providerForm(doc);
  }
  const form = picked?.form ?? doc.querySelector('form#login') ?? doc.querySelector('form#consent');
  if (!form) return undefined;
  const kind = picked?.kind ?? form.id;
  const body = new URLSearchParams();
  for (const input of form.querySelectorAll('input')) {
    const type = (input.getAttribute('type') ?? 'text').toLowerCase();
    const name = input.getAttribute('name');
    if (type === 'hidden' && name) body.append(name, input.getAttribute('value') ?? '');
  }
  if (kind === 'login') {
    body.set('username', username);
    body.set('password', password);
  } else if (kind === 'idp-login') {
    body.set('login', username);
    body.set('password', password);
  } else if (kind === 'consent') {
    body.set('decision', 'approve');
  }
  const method = (form.getAttribute('method') ?? 'get').toUpperCase();
  const action = new URL(form.getAttribute('action') || pageUrl.href, pageUrl);
  return { kind, method, action, body };
}

/**
 * authorize drives the issuer's pages from an authorization URL to the
 * redirect back to the client and returns that redirect URL (with code,
 * state, iss) and the list of steps taken (page kinds and statuses, no
 * secrets).
 *
 * @param {string|URL} authorizationUrl
 * @param {{redirectUri: string, username: string, password: string, idp?: string, fetchFn?: typeof fetch}} opts
 * @returns {Promise<{redirect: URL, steps: object[]}>}
 */
export async function authorize(authorizationUrl, { redirectUri, username, password, idp, fetchFn = fetch }) {
  const jar = new CookieJar();
  const steps = [];
  let url = new URL(authorizationUrl);
  let init = { method: 'GET' };
  for (let i = 0; i < maxSteps; i++) {
    const headers = new Headers(init.headers);
    const cookie = jar.header(url);
    if (cookie) headers.set('cookie', cookie);
    const res = await fetchFn(url, { ...init, headers, redirect: 'manual' });
    jar.store(url, res.headers.getSetCookie());
    const step = { method: init.method, path: url.pathname, status: res.status };
    steps.push(step);

    if (res.status >= 300 && res.status < 400) {
      await res.body?.cancel();
      const loc = res.headers.get('location');
      if (!loc) throw new Error(`robot: ${res.status} without Location at ${url.pathname}`);
      const next = new URL(loc, url);
      if (isRedirectTarget(next, redirectUri)) {
        step.to = 'redirect_uri';
        return { redirect: next, steps };
      }
      url = next;
      init = { method: 'GET' };
      continue;
    }
    const html = await res.text();
    if (res.status !== 200) {
      throw new Error(`robot: ${init.method} ${url.pathname} answered ${res.status}: ${pageText(html)}`);
    }
    const refresh = metaRefresh(html, url);
    if (refresh) {
      // Our "Continue with" button's page sends the browser on.
      url = refresh;
      init = { method: 'GET' };
      continue;
    }
    const form = fillForm(html, url, username, password, idp);
    if (!form) throw new Error(`robot: page ${url.pathname} has no login or consent form: ${pageText(html)}`);
    step.form = form.kind;
    if (form.method === 'GET') {
      url = new URL(form.action);
      url.search = form.body.toString();
      init = { method: 'GET' };
    } else {
      // Browsers send the page's Origin with a form POST; CSRF checks may rely on it.
      const origin = url.origin;
      url = form.action;
      init = {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', origin },
        body: form.body.toString(),
      };
    }
  }
  throw new Error(`robot: no redirect to the client after ${maxSteps} steps`);
}

async function main() {
  const [authorizationUrl, redirectUri] = process.argv.slice(2);
  const username = process.env.MCP_USERNAME;
  const password = process.env.MCP_PASSWORD;
  if (!authorizationUrl || !redirectUri || !username || !password) {
    console.error('usage: MCP_USERNAME=u MCP_PASSWORD=p node robot.mjs <authorization-url> <redirect-uri>');
    process.exit(2);
  }
  const { redirect, steps } = await authorize(authorizationUrl, { redirectUri, username, password, idp: process.env.MCP_IDP });
  console.log(JSON.stringify({ redirect: redirect.href, steps }));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  });
}
