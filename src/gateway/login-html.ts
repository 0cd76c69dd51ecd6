import { createHash } from 'node:crypto';

/**
 * The gateway's own HTML pages (sign-in, second factor, step-up, sign-out): server-rendered, no script,
 * one style sheet allowed by its hash, every interpolated value escaped.
 */

const STYLE =
  'body{font:16px/1.5 system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem;color:#1d1d1f}' +
  'h1{font-size:1.4rem}label{display:block;margin:.8rem 0 .2rem}' +
  'input{width:100%;box-sizing:border-box;padding:.5rem;font:inherit}' +
  'button{margin-top:1rem;padding:.5rem 1.2rem;font:inherit}' +
  '.error{color:#b00020;border-left:3px solid #b00020;padding-left:.6rem}details{margin-top:1.5rem}';
const STYLE_HASH = createHash('sha256').update(STYLE).digest('base64');

/**
 * The pages' Content-Security-Policy: nothing may load but the one style block; forms post only to
 * this origin (and the origins a sign-in may return to, which the redirect after a post must reach).
 */
export function pageCsp(formOrigins: readonly string[]): string {
  const extra = formOrigins.length > 0 ? ` ${formOrigins.join(' ')}` : '';
  return `default-src 'none'; style-src 'sha256-${STYLE_HASH}'; form-action 'self'${extra}; frame-ancestors 'none'; base-uri 'none'`;
}

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Escapes text for HTML content and double- or single-quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c] as string);
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
<h1>${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

const hidden = (name: string, value: string) =>
  `<input type="hidden" name="${name}" value="${escapeHtml(value)}">`;
const errorBlock = (error: string | undefined) =>
  error ? `<p class="error" role="alert">${escapeHtml(error)}</p>\n` : '';

/** The sign-in form (`POST /auth/login`), and links to the configured external OpenID Providers. */
export function loginHtml(o: {
  csrf: string;
  returnTo: string;
  username?: string;
  error?: string;
  providers?: readonly string[];
}): string {
  const links = (o.providers ?? [])
    .map((id) => {
      const href = `/auth/federated/${encodeURIComponent(id)}/start?return_to=${encodeURIComponent(o.returnTo)}`;
      return `<li><a href="${escapeHtml(href)}">Sign in with ${escapeHtml(id)}</a></li>`;
    })
    .join('\n');
  return page(
    'Sign in',
    `${errorBlock(o.error)}<form method="post" action="/auth/login">
${hidden('csrf', o.csrf)}
${hidden('return_to', o.returnTo)}
<label for="username">Username or email</label>
<input id="username" name="username" autocomplete="username" required maxlength="254" value="${escapeHtml(o.username ?? '')}">
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="1024">
<button type="submit">Sign in</button>
</form>${links ? `\n<ul>\n${links}\n</ul>` : ''}`,
  );
}

/**
 * The second-factor form: a TOTP code, or (folded away) a recovery code. `action` is `/auth/mfa` for
 * the second step of a sign-in (with its `mfa_token`) or `/auth/step-up` for the current session.
 */
export function codeHtml(o: {
  title: string;
  intro: string;
  action: '/auth/mfa' | '/auth/step-up';
  csrf: string;
  returnTo: string;
  mfaToken?: string;
  error?: string;
}): string {
  const common = `${hidden('csrf', o.csrf)}
${hidden('return_to', o.returnTo)}
${o.mfaToken === undefined ? '' : `${hidden('mfa_token', o.mfaToken)}\n`}`;
  return page(
    o.title,
    `${errorBlock(o.error)}<p>${escapeHtml(o.intro)}</p>
<form method="post" action="${o.action}">
${common}<label for="code">6-digit code from your authenticator app</label>
<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9]{6}" maxlength="6" required autofocus>
<button type="submit">Verify</button>
</form>
<details>
<summary>Use a recovery code instead</summary>
<form method="post" action="${o.action}">
${common}<label for="recovery_code">Recovery code</label>
<input id="recovery_code" name="recovery_code" autocomplete="off" minlength="8" maxlength="32" required>
<button type="submit">Verify</button>
</form>
</details>`,
  );
}

/** The sign-out confirmation (`POST /auth/logout`). */
export function logoutHtml(o: { csrf: string }): string {
  return page(
    'Sign out',
    `<form method="post" action="/auth/logout">
${hidden('csrf', o.csrf)}
<button type="submit">Sign out</button>
</form>`,
  );
}

/** A short message page (e.g. a step-up that cannot be done here). */
export function messageHtml(title: string, text: string): string {
  return page(title, `<p>${escapeHtml(text)}</p>`);
}
