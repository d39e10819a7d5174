// One job's page: fields and history update in place, and the log follows live while the
// job is RUNNING (polling /logs?after=N). Polling stops once the job has ended.

import { api, isEngineOutage } from './api.js';
import {
  $, clearError, el, flash, guard, jobActions, pageState, setBusy, setEngineDown, setJobData,
  showError, statusBadge, timeEl,
} from './dom.js';
import { setupJobActions } from './actions.js';

const MAX_LOG_LINES = 5000;
const MAX_LOG_PAGES_PER_TICK = 20;

/** Start the job page. */
export function initJob() {
  const detail = $('#job-detail');
  const refreshButton = $('#refresh-button');
  if (!detail) {
    // No job rendered (unknown id or engine down): Refresh simply asks the server again.
    if (refreshButton) refreshButton.addEventListener('click', () => window.location.reload());
    return;
  }
  const state = pageState();
  const jobId = detail.dataset.jobId;
  const fields = $('#job-fields');
  const logList = $('#job-log');
  const logState = $('#log-state');
  const autoscroll = $('#log-autoscroll');
  // Follow the log faster than the list refreshes, but never faster than once a second.
  const followMs = Math.max(1000, Math.min(state.refreshInterval, 2) * 1000);
  let status = detail.dataset.status;
  let logNext = 0;
  let logCount = 0;
  let timer = null;
  let inFlight = null;

  function setLogState(text) {
    logState.textContent = text;
  }

  function appendLines(lines) {
    const nearBottom = logList.scrollHeight - logList.scrollTop - logList.clientHeight < 40;
    const fragment = document.createDocumentFragment();
    for (const line of lines) {
      if (!line || typeof line !== 'object') continue;
      const stream = line.stream === 'stderr' ? 'stderr' : 'stdout';
      const at = line.at ? new Date(line.at) : null;
      fragment.append(el('li', { class: `log-${stream}`, 'data-testid': 'log-line', 'data-seq': line.seq, 'data-stream': stream },
        el('span', { class: 'log-time', title: line.at ? `${line.at} (UTC)` : null },
          at && !Number.isNaN(at.getTime()) ? at.toLocaleTimeString() : ''),
        el('span', { class: 'log-text' }, typeof line.text === 'string' ? line.text : String(line.text ?? ''))));
      logCount += 1;
    }
    const note = logList.querySelector('.log-note');
    if (note) note.remove();
    logList.append(fragment);
    // Bounded DOM: a chatty job must not freeze the tab.
    let excess = logList.querySelectorAll('li[data-seq]').length - MAX_LOG_LINES;
    while (excess > 0 && logList.firstElementChild) {
      logList.firstElementChild.remove();
      excess -= 1;
    }
    if (excess < 0 && logCount > MAX_LOG_LINES && !logList.querySelector('.log-trimmed')) {
      logList.prepend(el('li', { class: 'log-note log-trimmed' }, `Older lines are not shown (only the last ${MAX_LOG_LINES}).`));
    }
    if (autoscroll.checked && nearBottom) logList.scrollTop = logList.scrollHeight;
  }

  function describeLogState() {
    if (status === 'RUNNING') return 'Following live…';
    if (status === 'READY') return 'The job has not run yet.';
    return `Complete (${logCount} line${logCount === 1 ? '' : 's'}).`;
  }

  async function loadLogs() {
    for (let page = 0; page < MAX_LOG_PAGES_PER_TICK; page += 1) {
      const result = await api('GET', `/api/admin/engine/jobs/${encodeURIComponent(jobId)}/logs?after=${logNext}`);
      if (!result.ok || !result.data || typeof result.data !== 'object') {
        setLogState(`Log unavailable: ${result.message || 'unexpected answer'}`);
        if (isEngineOutage(result)) setEngineDown(true, '');
        return false;
      }
      const lines = Array.isArray(result.data.lines) ? result.data.lines : [];
      if (lines.length) appendLines(lines);
      const next = Number(result.data.next);
      if (!lines.length || !Number.isFinite(next) || next <= logNext) {
        if (Number.isFinite(next) && next > logNext) logNext = next;
        break;
      }
      logNext = next;
    }
    if (logCount === 0 && !logList.querySelector('.log-note')) {
      logList.append(el('li', { class: 'log-note' }, status === 'READY' ? 'No output: the job has not run.' : 'No output yet.'));
    }
    setLogState(describeLogState());
    return true;
  }

  function renderJob(job) {
    status = String(job.status);
    setJobData(detail, job);
    const badgeHolder = $('#job-status-badge');
    if (badgeHolder) badgeHolder.replaceChildren(statusBadge(job.status, job.error));
    // Only the job's own fields: the audit table below also marks its cells with data-field.
    for (const node of fields.querySelectorAll('[data-field]')) {
      const field = node.dataset.field;
      const value = job[field];
      if (field === 'status') {
        node.replaceChildren(statusBadge(value, job.error));
      } else if (field.endsWith('At')) {
        node.replaceChildren(timeEl(value));
      } else {
        node.textContent = value === null || value === undefined || value === '' ? '—' : String(value);
      }
    }
    const history = Array.isArray(job.history) ? job.history : [];
    $('#job-history-body').replaceChildren(...history.map((entry) => el('tr', { 'data-testid': 'history-row', 'data-status': entry.status },
      el('td', {}, statusBadge(entry.status)),
      el('td', {}, timeEl(entry.at)),
      el('td', {}, entry.by ?? '—'),
      el('td', {}, entry.reason || '—'))));
    const actions = $('#job-actions');
    if (actions) {
      const hadFocus = actions.contains(document.activeElement);
      actions.replaceChildren(...jobActions(job, state, false));
      if (hadFocus) (actions.querySelector('button') || refreshButton).focus();
    }
  }

  async function loadJob() {
    const result = await api('GET', `/api/admin/engine/jobs/${encodeURIComponent(jobId)}`);
    if (!result.ok || !result.data || typeof result.data !== 'object') {
      if (isEngineOutage(result)) {
        setEngineDown(true, '');
      } else {
        showError(`Could not refresh this job: ${result.message || 'unexpected answer'}`);
      }
      return false;
    }
    setEngineDown(false, '');
    clearError();
    renderJob(result.data);
    return true;
  }

  function schedule(healthy) {
    clearTimeout(timer);
    // While the engine fails, poll at the list's pace instead of hammering it every second.
    const delay = healthy ? followMs : state.refreshInterval * 1000;
    timer = status === 'RUNNING' ? setTimeout(() => { guard(refresh); }, delay) : null;
  }

  async function tick(withJob) {
    setBusy([refreshButton], true);
    let healthy = false;
    try {
      const jobOk = withJob ? await loadJob() : true;
      // Logs after the job: when it has just ended, this read gets the last lines too.
      const logsOk = await loadLogs();
      healthy = jobOk && logsOk;
      if (healthy && status !== 'RUNNING') setLogState(describeLogState());
    } finally {
      setBusy([refreshButton], false);
      schedule(healthy);
    }
  }

  function refresh(withJob = true) {
    if (!inFlight) inFlight = tick(withJob).finally(() => { inFlight = null; });
    return inFlight;
  }

  refreshButton.addEventListener('click', () => { guard(refresh); });

  setupJobActions(detail, (outcome) => {
    if (outcome.ok) {
      flash(outcome.kind === 'run' ? 'Job started.' : 'Cancel requested: the job is being stopped.');
      if (outcome.job) {
        renderJob(outcome.job);
      }
    }
    return guard(refresh);
  });

  // The server rendered the fields; the log comes from the API.
  guard(() => refresh(false));
}
