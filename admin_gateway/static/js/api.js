// Calls to the gateway's JSON API. Never throws: every outcome, network failures included,
// comes back as {ok, status, data, code, message} so that a page can always show something.

import { showError } from './dom.js';

const TIMEOUT_MS = 15000;
/** What an old tab says when its CSRF token died with its session (a sign-in elsewhere, a password change). */
export const SESSION_CHANGED = 'Your session changed; reloading';
/** How long the message stays up before the page reloads (long enough to be read). */
const RELOAD_DELAY_MS = 1500;
let reloading = false;

/**
 * A 403 `csrf` answer to a page's own request means its token is stale: the session it was issued
 * with ended or was replaced. Say so and reload, once, which brings the live session's token (or
 * the sign-in form, coming back here afterwards). The raw CSRF refusal is never shown.
 */
function sessionChanged() {
  if (!reloading) {
    reloading = true;
    showError(`${SESSION_CHANGED}…`);
    setTimeout(() => window.location.reload(), RELOAD_DELAY_MS);
  }
  return { ok: false, status: 403, data: null, code: 'session_changed', message: SESSION_CHANGED };
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.getAttribute('content') || '' : '';
}

function describe(status, data) {
  if (status === 401) {
    return 'Your session has ended. Sign in again to continue.';
  }
  if (data && typeof data.error === 'string' && data.error) {
    return data.error;
  }
  if (status === 0) {
    return 'The gateway could not be reached.';
  }
  return `The gateway answered with HTTP ${status}.`;
}

/**
 * Send one request to the admin API.
 * GET sends no body; any other method sends `body` as JSON with the X-CSRF-Token header.
 * `timeoutMs` bounds the wait (15 s unless a call knows the server may take longer).
 */
export async function api(method, path, body, timeoutMs = TIMEOUT_MS) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-CSRF-Token'] = csrfToken();
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  init.signal = controller.signal;
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    clearTimeout(timer);
    const timedOut = err && err.name === 'AbortError';
    return {
      ok: false, status: 0, data: null, code: timedOut ? 'timeout' : 'network',
      message: timedOut ? 'The gateway did not answer in time.' : 'The gateway could not be reached. Check that it is running and try again.',
    };
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null;
  } finally {
    clearTimeout(timer);
  }
  if (response.ok && response.redirected && data === null) {
    // Followed a redirect to an HTML page (the login form): the session is gone.
    return { ok: false, status: 401, data: null, code: 'unauthorized', message: describe(401, null) };
  }
  if (response.ok) {
    return { ok: true, status: response.status, data, code: null, message: '' };
  }
  const code = data && typeof data.code === 'string' ? data.code : `http_${response.status}`;
  if (response.status === 403 && code === 'csrf') {
    return sessionChanged();
  }
  return { ok: false, status: response.status, data, code, message: describe(response.status, data) };
}

/**
 * The header's Log out form, posted through api() so that an old tab whose token died with its
 * session says so and reloads (then Log out works with the live token) instead of showing the raw
 * CSRF refusal. Without JavaScript the form posts as it is.
 */
export function setupLogout() {
  for (const form of document.querySelectorAll('form[action="/logout"]')) {
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const result = await api('POST', form.action);
      if (result.ok) {
        window.location.assign('/login');
      } else if (result.code !== 'session_changed') { // api() already said so and reloads
        showError(failureText('Log out', result));
      }
    });
  }
}

/** "<what>: <the gateway's message> (<code>)" for a refusal or failure shown to the person. */
export function failureText(what, result) {
  const quiet = !result.code || result.code.startsWith('http_') || result.code === 'session_changed';
  const code = quiet ? '' : ` (${result.code})`;
  return `${what}: ${result.message}${code}`;
}

/** True when a failed result means "the engine is down or hung" rather than a refusal. */
export function isEngineOutage(result) {
  return !result.ok && (result.code === 'engine_unavailable' || result.code === 'engine_timeout'
    || result.status === 502 || result.status === 504);
}
