// The jobs list: refresh through the JSON API, auto-refresh only while a job is RUNNING,
// RUN/Cancel through dialogs, "New job" from the type catalog, an "Older" page cursor.

import { api } from './api.js';
import {
  $, clearError, flash, guard, jobRow, jobUrl, pageState, setBusy, setEngineDown, setSafeMode, showError, timeEl,
} from './dom.js';
import { setupJobActions } from './actions.js';
import { setupNewJob } from './newjob.js';

const FILTERS = ['status', 'type', 'before', 'limit'];

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

/** Start the jobs page. Everything it schedules is caught: a failure shows a banner, never a blank page. */
export function initJobs() {
  const state = pageState();
  const table = $('#jobs-table');
  const body = $('#jobs-body');
  const refreshButton = $('#refresh-button');
  const autoState = $('#auto-refresh-state');
  let timer = null;
  let inFlight = null;
  // Whether the last answer from a reachable engine had a RUNNING job: while the engine is
  // down we keep polling on that knowledge, so the table comes back by itself.
  let knownRunning = [...body.querySelectorAll('tr[data-status="RUNNING"]')].length > 0;

  function schedule(active) {
    clearTimeout(timer);
    timer = null;
    autoState.dataset.active = active ? 'true' : 'false';
    const every = `${state.refreshInterval} s`;
    autoState.textContent = active
      ? `Auto-refresh on: every ${every} while a job is running`
      : `Auto-refresh every ${every} while a job is running (idle)`;
    if (active) timer = setTimeout(() => { guard(refresh); }, state.refreshInterval * 1000);
  }

  function render(data) {
    state.safeMode = Boolean(data.safeMode);
    setSafeMode(state.safeMode);
    const down = data.engine === 'down';
    setEngineDown(down, typeof data.warning === 'string' ? data.warning : '');
    const jobs = Array.isArray(data.jobs) ? data.jobs.filter((job) => job && typeof job === 'object' && job.id) : [];

    // Keep keyboard focus on the same control of the same job across a re-render.
    const active = document.activeElement;
    const focusRow = active && body.contains(active) ? active.closest('tr[data-job-id]') : null;
    const focusKey = focusRow ? { id: focusRow.dataset.jobId, action: active.dataset.action, link: active.matches('a') } : null;

    body.replaceChildren(...jobs.map((job) => jobRow(job, state)));
    $('#empty-state').hidden = down || jobs.length > 0;
    $('#jobs-unavailable').hidden = !down;
    $('#jobs-loading').hidden = true;
    $('#last-updated').replaceChildren('Updated ', timeEl(new Date().toISOString()));

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
    if (!down) knownRunning = jobs.some((job) => job.status === 'RUNNING');
    return knownRunning;
  }

  async function load() {
    clearTimeout(timer);
    setBusy([table, refreshButton], true);
    if (!body.querySelector('tr')) $('#jobs-loading').hidden = false;
    try {
      const result = await api('GET', `/api/admin/engine/jobs?${listQuery()}`);
      if (!result.ok || !result.data || typeof result.data !== 'object') {
        showError(`Could not refresh the job list: ${result.message || 'unexpected answer'}`);
        $('#jobs-loading').hidden = true;
        // A lost session will not come back by polling; anything else may.
        schedule(knownRunning && result.status !== 401);
        return;
      }
      clearError();
      schedule(render(result.data));
    } finally {
      setBusy([table, refreshButton], false);
    }
  }

  function refresh() {
    if (!inFlight) inFlight = load().finally(() => { inFlight = null; });
    return inFlight;
  }

  refreshButton.addEventListener('click', () => { guard(refresh); });

  setupJobActions(body, (outcome) => {
    if (outcome.ok) {
      const verb = outcome.kind === 'run' ? 'started' : 'is being cancelled';
      flash(`Job ${outcome.jobId} ${verb}.`, { href: jobUrl(outcome.jobId), text: 'Open job page' });
    }
    // Either way the list may be stale (someone else ran it, the engine moved on): refresh.
    return guard(refresh);
  });

  setupNewJob((job) => {
    flash(`Created job ${job.id} (READY).`, { href: jobUrl(job.id), text: 'Open job page' });
    return guard(refresh);
  });

  schedule(knownRunning);
}
