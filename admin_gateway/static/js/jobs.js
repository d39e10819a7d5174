// The jobs list: rows follow the live stream (live.js) in place, re-listing through the JSON API
// when the stream says so (or polling it when live updates are unavailable), RUN/Cancel through dialogs, "New job" from the type catalog, an "Older" page cursor.
// Filters live in the URL (the server renders the page from it): the status and type selects apply
// as soon as they change, the name search (q, matched by the engine) on Enter or Filter.

import { api } from './api.js';
import {
  $, clearError, el, flash, guard, jobRow, jobUrl, pageState, setBusy, setEngineDown, setSafeMode, showError, waitingForApproval,
} from './dom.js';
import { isNewer, serialized, startLive } from './live.js';
import { setupJobActions } from './actions.js';
import { setupNewJob } from './newjob.js';

const FILTERS = ['status', 'type', 'q', 'before', 'limit'];

function listQuery() {
  const current = new URLSearchParams(window.location.search);
  const query = new URLSearchParams();
  for (const name of FILTERS) {
    const value = current.get(name);
    if (value) query.set(name, value);
  }
  if (!query.has('limit')) {
    const size = $('#jobs-table').dataset.pageSize;
    if (size) query.set('limit', size);
  }
  return query;
}

function pageLink(before) {
  const query = new URLSearchParams(window.location.search);
  query.delete('before');
  if (before) query.set('before', before);
  const text = query.toString();
  return text ? `/admin/engine/jobs?${text}` : '/admin/engine/jobs';
}

/**
 * Whether the engine's name search `q` (a case-insensitive substring, by Unicode casefolding) may
 * match `name`. Only decides whether a re-list is worth it, so when JavaScript's lower-casing
 * cannot stand in for casefolding (non-ASCII text), it says yes and the engine decides.
 */
function mayMatchName(q, name) {
  if (!q) return true;
  const text = typeof name === 'string' ? name : '';
  if (/[^\x00-\x7f]/.test(q + text)) return true;
  return text.toLowerCase().includes(q.toLowerCase());
}

/** Submit the filter form as soon as a select marked data-apply-on-change changes (no Filter press). */
function applyFiltersOnChange() {
  const form = $('#filter-form');
  if (!form) return;
  form.addEventListener('change', (event) => {
    if (event.target.matches('select[data-apply-on-change]')) form.requestSubmit();
  });
}

/** Keep the Type filter's choices a superset of the types on the page (the server lists the catalog's). */
function addSeenTypes(jobs) {
  const select = $('#filter-type');
  if (!select) return;
  const known = new Set([...select.options].map((option) => option.value));
  for (const job of jobs) {
    if (typeof job.type !== 'string' || !job.type || known.has(job.type)) continue;
    known.add(job.type);
    const before = [...select.options].slice(1).find((option) => option.value > job.type);
    select.insertBefore(el('option', { value: job.type }, job.type), before || null);
  }
}

/** Start the jobs page. Everything it schedules is caught: a failure shows a banner, never a blank page. */
export function initJobs() {
  const state = pageState();
  const table = $('#jobs-table');
  const body = $('#jobs-body');
  const refreshButton = $('#refresh-button');
  const filters = new URLSearchParams(window.location.search);
  // The newest state seen of each job on the page, from lists and events alike: a list answer
  // that left the engine before an event must not take a row back (RUNNING after DONE).
  const latest = new Map();
  let live = null;

  function freshest(job) {
    const known = latest.get(job.id);
    const pick = isNewer(job, known) ? job : known;
    latest.set(job.id, pick);
    return pick;
  }

  function updatedLine() {
    if (live) live.updated();
  }

  function render(data) {
    state.safeMode = Boolean(data.safeMode);
    setSafeMode(state.safeMode);
    const down = data.engine === 'down';
    setEngineDown(down, typeof data.warning === 'string' ? data.warning : '');
    const listed = Array.isArray(data.jobs) ? data.jobs.filter((job) => job && typeof job === 'object' && job.id) : [];
    const jobs = listed.map(freshest);

    // Keep keyboard focus on the same control of the same job across a re-render.
    const active = document.activeElement;
    const focusRow = active && body.contains(active) ? active.closest('tr[data-job-id]') : null;
    const focusKey = focusRow ? { id: focusRow.dataset.jobId, action: active.dataset.action, link: active.matches('a') } : null;

    body.replaceChildren(...jobs.map((job) => jobRow(job, state)));
    addSeenTypes(jobs);
    $('#empty-state').hidden = down || jobs.length > 0;
    $('#jobs-unavailable').hidden = !down;
    $('#jobs-loading').hidden = true;
    updatedLine();

    const next = typeof data.next === 'string' && data.next ? data.next : null;
    const older = $('#older-link');
    older.hidden = !next || down;
    older.href = next ? pageLink(next) : '#';

    if (focusKey) {
      for (const row of body.querySelectorAll('tr[data-job-id]')) {
        if (row.dataset.jobId !== focusKey.id) continue;
        const target = focusKey.link ? row.querySelector('a') : row.querySelector(`[data-action="${focusKey.action}"]`);
        if (target) target.focus();
      }
    }
  }

  /** Read the list through the JSON API; false when the session is gone (polling it is pointless). */
  async function load() {
    setBusy([table, refreshButton], true);
    if (!body.querySelector('tr')) $('#jobs-loading').hidden = false;
    try {
      const notices = live ? live.engineNotices() : 0;
      const result = await api('GET', `/api/admin/engine/jobs?${listQuery()}`);
      // The engine went down or came back while this read was under way: its answer may say the opposite.
      if (live && live.engineNotices() !== notices) return load();
      if (!result.ok || !result.data || typeof result.data !== 'object') {
        showError(`Could not refresh the job list: ${result.message || 'unexpected answer'}`);
        $('#jobs-loading').hidden = true;
        return result.status !== 401;
      }
      clearError();
      render(result.data);
      return true;
    } finally {
      setBusy([table, refreshButton], false);
    }
  }

  const refresh = serialized(load);

  /** Whether `job` belongs on this page by the filters alone (new jobs go first, so only on the newest page). */
  function matchesFilters(job) {
    const status = filters.get('status');
    const type = filters.get('type');
    return (!status || status.toUpperCase() === job.status) && (!type || type === job.type)
      && mayMatchName(filters.get('q'), job.name);
  }

  /** One change from the stream: the row in place when it is on the page, else a re-list if it belongs here. */
  function applyJob(action, job) {
    const row = [...body.querySelectorAll('tr[data-job-id]')].find((node) => node.dataset.jobId === job.id);
    if (!row) {
      // A new job (newest first: only the newest page gains it), or one that now matches a status
      // filter; without a status filter a job's change cannot bring it onto this page.
      const arrives = action === 'job_created' ? !filters.get('before') : Boolean(filters.get('status'));
      if (arrives && matchesFilters(job)) guard(refresh);
      return;
    }
    if (!isNewer(job, latest.get(job.id) || { status: row.dataset.status })) return;
    latest.set(job.id, job);
    if (!matchesFilters(job)) {
      guard(refresh); // it leaves a filtered page, and the next one moves up
      return;
    }
    state.safeMode = document.body.dataset.safeMode !== 'off'; // the stream may have changed it
    const hadFocus = row.contains(document.activeElement);
    const focusAction = hadFocus ? document.activeElement.dataset.action : null;
    const fresh = jobRow(job, state);
    row.replaceWith(fresh);
    if (hadFocus) {
      const target = (focusAction && fresh.querySelector(`[data-action="${focusAction}"]`)) || fresh.querySelector('a');
      if (target) target.focus();
    }
    updatedLine();
  }

  refreshButton.addEventListener('click', () => { guard(refresh); });
  applyFiltersOnChange();
  // A break-glass window opened or closed: RUN buttons come or go (breakglass.js).
  document.addEventListener('override-change', () => { guard(refresh); });

  setupJobActions(body, (outcome) => {
    if (outcome.ok) {
      let verb = outcome.kind === 'run' ? 'started' : 'is being cancelled';
      if (outcome.job && waitingForApproval(outcome.job)) verb = 'requested: it waits for a second super_admin\'s approval';
      flash(`Job ${outcome.jobId} ${verb}.`, { href: jobUrl(outcome.jobId), text: 'Open job page' });
      if (outcome.job) applyJob(outcome.kind, outcome.job);
    }
    // Either way the list may be stale (someone else ran it, the engine moved on): refresh.
    return guard(refresh);
  });

  setupNewJob((job) => {
    flash(`Created job ${job.id} (READY).`, { href: jobUrl(job.id), text: 'Open job page' });
    return guard(refresh);
  });

  live = startLive({
    job: applyJob,
    relist: () => guard(refresh),
    // Down: the list shows what an answer from an unreachable engine shows; up re-lists by itself.
    engine: (engineState) => {
      if (engineState === 'down') render({ engine: 'down', jobs: [], safeMode: state.safeMode });
    },
    poll: () => guard(refresh),
  }, state.pollInterval);
}
