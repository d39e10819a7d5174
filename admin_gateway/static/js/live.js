// Live updates: the gateway's event stream (GET /api/admin/engine/events, Server-Sent Events,
// see docs/operations.md) keeps the list, the job page and the header badge current. When the
// stream is impossible (no EventSource, a proxy that blocks or buffers it, repeated failures),
// the page polls its JSON refresh every refresh_interval seconds (5 by default) instead, and
// the "Updated …" line says which of the two is happening.

import { $, el, setEngineDown, setSafeMode, timeEl } from './dom.js';

export const EVENTS_PATH = '/api/admin/engine/events';

/** The job changes the stream relays; their data is the job's JSON as GET /api/jobs/{id} has it. */
const JOB_EVENTS = [
  'job_created', 'run_requested', 'job_started', 'job_finished', 'cancel_requested', 'job_interrupted',
  'log_truncated', 'log_expired',
  // A run request's steps (two-person rule): the job stays READY, its runRequest changes.
  'run_request_opened', 'run_request_approved', 'run_request_rejected', 'run_request_withdrawn',
  'run_request_expired', 'run_request_superseded',
];
/** Errors in a row, with no successful open between them, before giving up on the stream. */
const MAX_ERRORS_WITHOUT_OPEN = 3;
/** A stream that has not opened by then (a buffering proxy) counts as impossible. */
const OPEN_TIMEOUT_MS = 10000;
/** Re-list requests this close together (ready + engine up at stream open) make one request. */
const RELIST_DELAY_MS = 30;
const RANK = { READY: 0, RUNNING: 1, DONE: 2, FAILED: 2 };

/** How far along a status is: READY < RUNNING < DONE/FAILED. A job's status never goes backwards. */
export function statusRank(status) {
  return RANK[String(status)] ?? 0;
}

/** True when `candidate` may replace `current` (the same job): never an older state over a newer one. */
export function isNewer(candidate, current) {
  return !current || statusRank(candidate.status) >= statusRank(current.status);
}

/**
 * `fn` (async) run one at a time: a call while it runs schedules exactly one more run after it,
 * so a change seen during a read is never lost to that read's older answer.
 */
export function serialized(fn) {
  let running = null;
  let again = false;
  const run = () => {
    if (running) {
      again = true;
      return running;
    }
    running = Promise.resolve().then(fn).finally(() => {
      running = null;
      if (again) {
        again = false;
        run();
      }
    });
    return running;
  };
  return run;
}

function parse(event) {
  try {
    const data = JSON.parse(event.data);
    return data && typeof data === 'object' ? data : null;
  } catch (err) {
    return null;
  }
}

/**
 * Follow the stream for one page. `handlers`:
 * - `job(action, job)`: a job changed (the page applies it if it concerns what it shows);
 * - `relist()`: re-read everything the page shows (on ready, reset, engine back up, SAFE_MODE change);
 * - `engine(state)`: after the banner was updated for "up" or "down";
 * - `poll()`: one polling round while live updates are unavailable; resolves false to stop polling
 *   (the session is gone);
 * - `stop()`: the session ended, stop every timer.
 * Returns `{ updated(), mode() }`: `updated()` rewrites the "Updated …" line (after any render).
 */
export function startLive(handlers, pollSeconds) {
  const line = $('#last-updated');
  let mode = 'connecting';
  let source = null;
  let errors = 0;
  let openTimer = null;
  let pollTimer = null;
  let relistTimer = null;
  const downBanner = $('#engine-down-banner');
  let engineUp = !downBanner || downBanner.hidden;
  // Counts the stream's engine notices: a read that began before the last one is stale (see `engineNotices`).
  let engineNotices = 0;
  let safeMode = document.body.dataset.safeMode !== 'off';

  function describe() {
    if (mode === 'live') return 'live';
    if (mode === 'polling') return `polling every ${pollSeconds} s (live updates unavailable)`;
    if (mode === 'signed-out') return 'signed out, not updating';
    if (mode === 'reconnecting') return 'live updates reconnecting…';
    return 'connecting to live updates…';
  }

  function updated() {
    if (!line) return;
    line.dataset.mode = mode;
    line.replaceChildren('Updated ', timeEl(new Date().toISOString()), ` · ${describe()}`);
  }

  function setMode(next) {
    if (mode === next) return;
    mode = next;
    if (!line) return;
    // Keep the time of the last update; only the way of updating changed.
    const time = line.querySelector('time');
    line.dataset.mode = mode;
    line.replaceChildren('Updated ', time || timeEl(new Date().toISOString()), ` · ${describe()}`);
  }

  function relist() {
    if (relistTimer) return;
    relistTimer = setTimeout(() => {
      relistTimer = null;
      handlers.relist();
    }, RELIST_DELAY_MS);
  }

  async function pollOnce() {
    pollTimer = null;
    const keepGoing = await handlers.poll();
    if (keepGoing !== false && mode === 'polling') pollTimer = setTimeout(pollOnce, pollSeconds * 1000);
  }

  function fallBack() {
    clearTimeout(openTimer);
    if (source) source.close();
    source = null;
    if (mode === 'polling' || mode === 'signed-out') return;
    setMode('polling');
    pollOnce();
  }

  function signedOut() {
    clearTimeout(openTimer);
    clearTimeout(pollTimer);
    clearTimeout(relistTimer);
    if (source) source.close();
    source = null;
    setMode('signed-out');
    if (handlers.stop) handlers.stop();
    const banner = $('#error-banner');
    if (!banner) return;
    $('#error-banner-text').replaceChildren(
      el('strong', {}, 'Signed out — sign in again.'),
      ' Your session has ended, so this page no longer updates. ',
      el('a', { href: '/login', 'data-testid': 'sign-in-again' }, 'Sign in'),
    );
    banner.dataset.signedOut = 'true';
    banner.hidden = false;
  }

  function onEngine(event) {
    const data = parse(event);
    const state = data && data.state;
    if (state !== 'up' && state !== 'down') return;
    if ((state === 'up') !== engineUp) engineNotices += 1; // a change (each stream opens with the state)
    setEngineDown(state === 'down', '');
    const wasUp = engineUp;
    engineUp = state === 'up';
    if (handlers.engine) handlers.engine(state);
    // At stream open the engine is usually up already: "ready" re-lists then, not this.
    if (engineUp && !wasUp) relist();
  }

  function onSafeMode(event) {
    const data = parse(event);
    if (!data || typeof data.enabled !== 'boolean') return;
    setSafeMode(data.enabled);
    if (data.enabled !== safeMode) {
      safeMode = data.enabled;
      relist();
    }
  }

  function connect() {
    source = new EventSource(EVENTS_PATH);
    openTimer = setTimeout(() => { if (mode !== 'live') fallBack(); }, OPEN_TIMEOUT_MS);
    source.addEventListener('open', () => {
      clearTimeout(openTimer);
      errors = 0;
      setMode('live');
    });
    source.addEventListener('error', () => {
      if (!source) return;
      errors += 1;
      // CLOSED: the answer was no stream at all (401, 429, a proxy's page); the browser will not retry.
      if (source.readyState === EventSource.CLOSED || errors >= MAX_ERRORS_WITHOUT_OPEN) {
        fallBack();
      } else if (mode === 'live') {
        setMode('reconnecting');
      }
    });
    for (const action of JOB_EVENTS) {
      source.addEventListener(action, (event) => {
        const job = parse(event);
        if (job && job.id) handlers.job(action, job);
      });
    }
    source.addEventListener('ready', relist);
    source.addEventListener('reset', relist);
    source.addEventListener('engine', onEngine);
    source.addEventListener('safe_mode', onSafeMode);
    source.addEventListener('signed_out', signedOut);
  }

  if (typeof window.EventSource === 'function') {
    connect();
  } else {
    fallBack();
  }
  updated();
  // A read that was answered before the engine went down can arrive after the stream said "down":
  // a page compares this count before and after its read, and reads again when it moved.
  return { updated, mode: () => mode, signedOut, engineNotices: () => engineNotices };
}
