// One job's page: fields, history and the audit table follow the live stream (live.js) in place,
// and the log follows while the job is RUNNING (reading /logs?after=N each second). When live
// updates are unavailable the page polls all of it every refresh_interval seconds instead.

import { api, isEngineOutage } from './api.js';
import {
  $, approvalBadge, clearError, el, flash, guard, jobActions, jobUrl, localizeTimes, pageState, setBusy, setEngineDown, setJobData, waitingForApproval,
  jobBadge, showError, statusBadge, timeEl,
} from './dom.js';
import { canRunAgain, runAgainButton, setupJobActions } from './actions.js';
import { createLogView } from './logview.js';
import { isNewer, serialized, startLive } from './live.js';

const MAX_LOG_LINES = 5000;
const MAX_LOG_PAGES_PER_TICK = 20;
/** How often the log is read while the job runs (the stream carries job changes, not log lines). */
const LOG_FOLLOW_MS = 1000;

/**
 * Read this page's audit table again: the gateway renders its rows (with their details), so the
 * page's own HTML is fetched and only the table body is taken. Never throws; false on failure.
 */
async function loadAudit() {
  const current = $('[data-testid="job-audit"] [data-testid="audit-table"] tbody');
  if (!current) return false;
  let text;
  try {
    const response = await fetch(window.location.pathname, {
      credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' },
    });
    if (!response.ok || response.redirected) return false;
    text = await response.text();
  } catch (err) {
    return false;
  }
  const served = new DOMParser().parseFromString(text, 'text/html');
  const fresh = served.querySelector('[data-testid="job-audit"] [data-testid="audit-table"] tbody');
  if (!fresh) return false;
  current.replaceChildren(...[...fresh.childNodes].map((node) => document.importNode(node, true)));
  localizeTimes(current);
  return true;
}

/**
 * Fill a "Copy of" / "Copies" field with links to those jobs (`ids`: one id, a list, or null);
 * the field and its label are hidden when there is none.
 */
function jobLinks(node, ids, testid) {
  const list = (Array.isArray(ids) ? ids : [ids]).filter((id) => typeof id === 'string' && id);
  const nodes = [];
  for (const id of list) {
    if (nodes.length) nodes.push(', ');
    nodes.push(el('a', { class: 'mono', href: jobUrl(id), 'data-testid': testid }, id));
  }
  node.replaceChildren(...nodes);
  node.hidden = !list.length;
  if (node.previousElementSibling) node.previousElementSibling.hidden = !list.length;
}

/** Start the job page. */
export function initJob() {
  const detail = $('#job-detail');
  const refreshButton = $('#refresh-button');
  if (!detail) {
    // No job rendered (unknown id or engine down): Refresh simply asks the server again.
    if (refreshButton) refreshButton.addEventListener('click', () => window.location.reload());
    // The engine was down when the page was served: ask the server again once it is back.
    // (After a "down" seen here: an engine that answers the stream but not this read reloads nothing.)
    const unavailable = $('[data-testid="job-unavailable"]');
    let sawDown = false;
    startLive({
      job: () => {},
      relist: () => {},
      engine: (engineState) => {
        if (engineState === 'down') sawDown = true;
        else if (sawDown && unavailable) window.location.reload();
      },
      poll: async () => false,
    }, pageState().pollInterval);
    return;
  }
  const state = pageState();
  const jobId = detail.dataset.jobId;
  const fields = $('#job-fields');
  const logState = $('#log-state');
  const log = createLogView({
    list: $('#job-log'),
    search: $('#log-search'),
    counter: $('#log-search-count'),
    prev: $('#log-search-prev'),
    next: $('#log-search-next'),
    autoscroll: $('#log-autoscroll'),
    maxLines: MAX_LOG_LINES,
  });
  let status = detail.dataset.status;
  // The newest state seen of the job: neither a slow read nor a late event takes it back.
  let current = { status };
  let logNext = 0;
  let timer = null;
  let engineUp = true;
  let stopped = false;
  let sessionGone = false;
  let live = null;

  function setLogState(text) {
    logState.textContent = text;
  }

  function describeLogState() {
    if (status === 'RUNNING') return 'Following live…';
    if (status === 'READY') return 'The job has not run yet.';
    const count = log.count();
    return `Complete (${count} line${count === 1 ? '' : 's'}).`;
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
      if (lines.length) log.append(lines);
      const next = Number(result.data.next);
      if (!lines.length || !Number.isFinite(next) || next <= logNext) {
        if (Number.isFinite(next) && next > logNext) logNext = next;
        break;
      }
      logNext = next;
    }
    log.note(status === 'READY' ? 'No output: the job has not run.' : 'No output yet.');
    setLogState(describeLogState());
    return true;
  }

  function renderJob(job) {
    if (!isNewer(job, current)) return;
    current = job;
    status = String(job.status);
    setJobData(detail, job);
    const badgeHolder = $('#job-status-badge');
    if (badgeHolder) badgeHolder.replaceChildren(...[jobBadge(job), approvalBadge(job)].filter(Boolean));
    // Only the job's own fields: the audit table below also marks its cells with data-field.
    for (const node of fields.querySelectorAll('[data-field]')) {
      const field = node.dataset.field;
      const value = job[field];
      if (field === 'copyOf' || field === 'copies') {
        jobLinks(node, job[field], field === 'copyOf' ? 'copy-of-link' : 'copy-link');
      } else if (field === 'status') {
        node.replaceChildren(statusBadge(value, job.error, job.outcome));
      } else if (field.endsWith('At')) {
        node.replaceChildren(timeEl(value));
      } else {
        node.textContent = value === null || value === undefined || value === '' ? '—' : String(value);
      }
    }
    const history = Array.isArray(job.history) ? job.history : [];
    // The last entry is the job's end: it says what the job's badge says (Cancelled, timed out).
    $('#job-history-body').replaceChildren(...history.map((entry, i) => el('tr', { 'data-testid': 'history-row', 'data-status': entry.status },
      el('td', {}, i === history.length - 1 ? statusBadge(entry.status, job.error, job.outcome) : statusBadge(entry.status)),
      el('td', {}, timeEl(entry.at)),
      el('td', {}, entry.by ?? '—'),
      el('td', {}, entry.reason || '—'))));
    const actions = $('#job-actions');
    if (actions) {
      state.safeMode = document.body.dataset.safeMode !== 'off'; // the stream may have changed it
      const hadFocus = actions.contains(document.activeElement);
      actions.replaceChildren(...jobActions(job, state, false));
      if (hadFocus) (actions.querySelector('button') || refreshButton).focus();
    }
    const copyAction = $('#job-copy-action');
    if (copyAction && Boolean(copyAction.querySelector('button')) !== canRunAgain(job, state)) {
      copyAction.replaceChildren(...[runAgainButton(job, state)].filter(Boolean));
    }
  }

  /** Read the job; false when that failed (the banner says why). */
  async function loadJob() {
    const notices = live ? live.engineNotices() : 0;
    const result = await api('GET', `/api/admin/engine/jobs/${encodeURIComponent(jobId)}`);
    // The engine went down or came back while this read was under way: its answer may say the opposite.
    if (live && live.engineNotices() !== notices) return loadJob();
    if (!result.ok || !result.data || typeof result.data !== 'object') {
      sessionGone = result.status === 401;
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

  /** While the job runs (and the engine answers), read the log every second. */
  function follow() {
    clearTimeout(timer);
    timer = null;
    if (status === 'RUNNING' && engineUp && !stopped) {
      timer = setTimeout(() => { guard(followLogs); }, LOG_FOLLOW_MS);
    }
  }

  const followLogs = serialized(async () => {
    try {
      await loadLogs();
    } finally {
      follow();
    }
  });

  /** Everything the page shows: the job (unless it was just rendered), its log and audit records; false once the session is gone. */
  async function tick(withJob) {
    setBusy([refreshButton], true);
    try {
      const jobOk = withJob ? await loadJob() : true;
      // Logs after the job: when it has just ended, this read gets the last lines too.
      const logsOk = await loadLogs();
      if (withJob) await loadAudit();
      if (jobOk && logsOk && status !== 'RUNNING') setLogState(describeLogState());
      if (live) live.updated();
      return !sessionGone;
    } finally {
      setBusy([refreshButton], false);
      follow();
    }
  }

  const refresh = serialized(() => tick(true));
  // After a change the stream carried: the job is rendered already; log and audit catch up.
  const catchUp = serialized(async () => {
    await loadLogs();
    await loadAudit();
    if (status !== 'RUNNING') setLogState(describeLogState());
    follow();
  });

  refreshButton.addEventListener('click', () => { guard(refresh); });
  // A break-glass window opened or closed: RUN buttons come or go (breakglass.js).
  document.addEventListener('override-change', () => { guard(refresh); });

  setupJobActions(detail, (outcome) => {
    if (outcome.kind === 'copy') {
      // The copy is READY and has not run: its own page is where it gets (or not) its RUN.
      if (outcome.ok) window.location.assign(jobUrl(outcome.job.id));
      else showError(outcome.message);
      return outcome.ok ? null : guard(refresh);
    }
    if (outcome.ok) {
      const requested = outcome.job && waitingForApproval(outcome.job);
      flash(requested ? 'Run requested: it waits for a second super_admin\'s approval (Approvals page).'
        : outcome.kind === 'run' ? 'Job started.' : 'Cancel requested: the job is being stopped.');
      if (outcome.job) renderJob(outcome.job);
    }
    return guard(refresh);
  });

  live = startLive({
    job: (action, job) => {
      if (String(job.id) !== jobId || !isNewer(job, current)) return;
      renderJob(job);
      live.updated();
      guard(catchUp);
    },
    relist: () => guard(refresh),
    engine: (engineState) => {
      engineUp = engineState === 'up';
      follow();
    },
    poll: () => guard(refresh),
    stop: () => {
      stopped = true;
      follow();
    },
  }, state.pollInterval);

  // The server rendered the fields and the audit table; the log comes from the API.
  guard(() => tick(false));
}
