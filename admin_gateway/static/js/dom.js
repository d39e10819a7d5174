// DOM helpers shared by every page. Data from the API only ever reaches the page through
// textContent and attributes, never innerHTML, so job names and log lines cannot inject markup.
// jobRow() and statusBadge() mirror templates/_macros.html: keep the two in step.
// Times, durations and ages are formatted by time.js only (the one rule for time).

import { applyTimes, drawDuration, exactTime, formatTime, relativeTime } from './time.js';

export { formatTime };

export const STATUSES = ['READY', 'RUNNING', 'DONE', 'FAILED'];

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** Create an element; `attrs` values go through setAttribute, children are nodes or text. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The page-wide state the server rendered into <body data-*>. */
export function pageState() {
  const data = document.body.dataset;
  // refresh_interval: seconds between polls when live updates are unavailable (live.js).
  const interval = Number.parseFloat(data.refreshInterval || '5');
  return {
    safeMode: data.safeMode !== 'off',
    superAdmin: data.superAdmin === 'true',
    pollInterval: Number.isFinite(interval) && interval > 0 ? interval : 5,
  };
}

/**
 * RUN only for a super_admin, with SAFE_MODE off or a break-glass window open (breakglass.js keeps
 * <body data-override>), on a READY job (the server enforces all of it too).
 */
export function canRun(job, state) {
  return state.superAdmin && (!state.safeMode || document.body.dataset.override === 'open') && job.status === 'READY'
    && !waitingForApproval(job);
}

/** Whether the job's run request is open: it runs once approved, not by another RUN. */
export function waitingForApproval(job) {
  return Boolean(job.runRequest && job.runRequest.state === 'open');
}

/** The "Waiting for approval" badge (templates/_macros.html approval_badge), or null. */
export function approvalBadge(job) {
  if (!waitingForApproval(job)) return null;
  return el('span', {
    class: 'badge badge-waiting', 'data-testid': 'approval-badge',
    title: `Run requested by ${job.runRequest.by}: waiting for approval`,
  }, 'Waiting for approval');
}

/** Cancel on RUNNING jobs for a super_admin; SAFE_MODE never blocks stopping work. */
export function canCancel(job, state) {
  return state.superAdmin && job.status === 'RUNNING';
}

/**
 * A job's status badge (templates/_macros.html badge). The job's `outcome` refines FAILED: a run a
 * person cancelled is "Cancelled" (neutral, not an error), one its timeout killed "FAILED · timed
 * out"; an interrupted run (outcome "interrupted", or an error starting "interrupted: " from an
 * engine without outcomes) may have done part or all of its work: "FAILED · outcome unknown".
 */
export function statusBadge(status, error, outcome) {
  const text = String(status || 'UNKNOWN');
  // Attributes in the macro's order, so that both render the same markup.
  const badge = (kind, label, extra = {}) => el('span', {
    class: `badge badge-${kind}`, 'data-testid': 'status-badge', 'data-status': text, ...extra,
  }, label);
  if (text === 'FAILED' && (outcome === 'interrupted' || (typeof error === 'string' && error.startsWith('interrupted: ')))) {
    return badge('interrupted', 'FAILED · outcome unknown', {
      'data-outcome': 'unknown',
      title: `${error || 'interrupted'}: the run may have done part or all of its work. Check its effects before running the job again.`,
    });
  }
  if (text === 'FAILED' && outcome === 'cancelled') {
    return badge('cancelled', 'Cancelled', { 'data-outcome': 'cancelled', title: error || null });
  }
  if (text === 'FAILED' && outcome === 'timed_out') {
    return badge('failed', 'FAILED · timed out', { 'data-outcome': 'timed_out', title: error || null });
  }
  return badge(STATUSES.includes(text) ? text.toLowerCase() : 'unknown', text);
}

/** The status badge of a whole job (its status, error and outcome). */
export function jobBadge(job) {
  return statusBadge(job.status, job.error, job.outcome);
}

/**
 * A <time> of `iso` in the chosen zone (time.js), the exact time with the zone on hover;
 * `relative`: "3 min ago" as text instead, kept current by time.js.
 */
export function timeEl(iso, { relative = false } = {}) {
  if (!iso) return el('span', { class: 'muted' }, '—');
  return el('time', {
    datetime: iso, title: exactTime(iso), 'data-local-time': true, 'data-relative': relative,
  }, relative ? relativeTime(iso) : formatTime(iso)); // relative at once, not a tick later
}

/** How long a job ran (ticking while RUNNING), drawn by time.js; a muted dash before it starts. */
export function durationEl(job) {
  if (!job.startedAt) return el('span', { class: 'muted', 'data-testid': 'duration' }, '—');
  const node = el('span', {
    class: 'duration', 'data-testid': 'duration', 'data-duration': true, 'data-started': job.startedAt,
    // A finished job without endedAt (an old record) shows no ticking clock.
    'data-ended': job.status === 'RUNNING' ? null : (job.endedAt || job.startedAt),
  });
  drawDuration(node);
  return node;
}

/** Draw every server-rendered time (and duration) under `root` in the chosen zone (time.js). */
export function localizeTimes(root = document) {
  applyTimes(root);
}

export function jobUrl(id) {
  return `/admin/engine/jobs/${encodeURIComponent(id)}`;
}

/** Copy what the RUN/Cancel dialogs need onto an element (mirrors the job_data macro). */
export function setJobData(node, job) {
  node.setAttribute('data-job-id', String(job.id));
  node.setAttribute('data-status', String(job.status));
  node.setAttribute('data-job-type', String(job.type ?? ''));
  node.setAttribute('data-job-name', String(job.name ?? ''));
  node.setAttribute('data-job-params', JSON.stringify(job.params ?? {}));
}

/** Why RUN is held under SAFE_MODE (templates/_macros.html held_reason: keep the two in step). */
export const HELD_REASON = 'SAFE_MODE is on: no job can be started (a break-glass window approved by a second super_admin lifts it)';

export function jobActions(job, state, small = true) {
  const size = small ? ' btn-small' : '';
  const nodes = [];
  if (canRun(job, state)) {
    nodes.push(el('button', {
      type: 'button', class: `btn btn-primary btn-run${size}`, 'data-action': 'run',
      'data-testid': 'run-button', 'aria-label': `Run job ${job.id}`,
    }, 'RUN'));
  } else if (canRun(job, { ...state, safeMode: false })) {
    // SAFE_MODE alone holds it: a RUN that does nothing and says why on hover and focus.
    nodes.push(el('button', {
      type: 'button', class: `btn btn-run btn-held${size}`, 'aria-disabled': 'true', 'data-testid': 'run-held',
      'data-tip': HELD_REASON, title: HELD_REASON, 'aria-label': `Run job ${job.id}: unavailable. ${HELD_REASON}`,
    }, 'RUN'));
  }
  if (canCancel(job, state)) {
    nodes.push(el('button', {
      type: 'button', class: `btn btn-danger${size}`, 'data-action': 'cancel',
      'data-testid': 'cancel-button', 'aria-label': `Cancel job ${job.id}`,
    }, 'Cancel'));
  }
  return nodes;
}

/**
 * A job's name as the row's main text, linking to its page; "(no name)" muted when it has none
 * (the engine names a job created without one after its type: that is no name either).
 */
export function jobNameLink(job) {
  const name = typeof job.name === 'string' && job.name.trim() && job.name !== job.type ? job.name : null;
  return el('a', {
    class: name ? 'job-title' : 'job-title job-title-none', href: jobUrl(job.id), 'data-testid': 'job-link',
  }, name ?? '(no name)');
}

export function jobRow(job, state) {
  const row = el('tr', { 'data-testid': 'job-row' });
  setJobData(row, job);
  const actions = jobActions(job, state);
  const actionBox = el('div', { class: 'row-actions' });
  if (actions.length) {
    actionBox.append(...actions);
  } else {
    actionBox.append(el('span', { class: 'muted' }, '—', el('span', { class: 'visually-hidden' }, 'no action available')));
  }
  row.append(
    el('td', { class: 'col-job' }, jobNameLink(job), el('span', { class: 'job-id', 'data-testid': 'job-id' }, job.id)),
    el('td', { class: 'mono' }, job.type ?? ''),
    el('td', {}, jobBadge(job), ' ', approvalBadge(job)),
    el('td', {}, timeEl(job.createdAt, { relative: true })),
    el('td', {}, durationEl(job)),
    el('td', { class: 'col-action' }, actionBox),
  );
  return row;
}

// ---------- banners ----------

export function showError(message) {
  const banner = $('#error-banner');
  if (!banner) return;
  const text = $('#error-banner-text');
  text.replaceChildren(document.createTextNode(message));
  if (/session has ended/i.test(message)) {
    text.append(' ', el('a', { href: '/login' }, 'Sign in'));
  }
  banner.hidden = false;
}

export function clearError() {
  const banner = $('#error-banner');
  if (banner) banner.hidden = true;
}

/** Show a short success message; `link` ({href, text}) is appended when given. */
export function flash(message, link) {
  const box = $('#flash');
  if (!box) return;
  const text = $('#flash-text');
  text.replaceChildren(document.createTextNode(message));
  if (link) text.append(' ', el('a', { href: link.href }, link.text));
  box.hidden = false;
}

export function setSafeMode(on) {
  document.body.dataset.safeMode = on ? 'on' : 'off';
  const pill = $('#safe-mode-pill');
  if (pill) {
    pill.textContent = `SAFE_MODE: ${on ? 'ON' : 'OFF'}`;
    pill.dataset.safeMode = on ? 'on' : 'off';
    pill.classList.toggle('pill-safe-on', on);
    pill.classList.toggle('pill-safe-off', !on);
    pill.title = on ? 'SAFE_MODE is on: no job can be started' : 'SAFE_MODE is off: super admins can start READY jobs';
  }
  const banner = $('#safe-mode-banner');
  if (banner) banner.hidden = !on;
}

export function setEngineDown(down, warning) {
  const banner = $('#engine-down-banner');
  if (!banner) return;
  banner.hidden = !down;
  if (down && warning) {
    // The API's warning already says that this is an outage, not an empty list; the banner's
    // heading says "Engine unreachable", so a repeated prefix is dropped.
    const detail = warning.replace(/^engine unreachable:\s*/i, '');
    $('#engine-down-detail').textContent = detail.charAt(0).toUpperCase() + detail.slice(1);
  }
}

/** Show `node` as busy (spinning refresh icon, aria-busy) while `promise` runs. */
export function setBusy(nodes, busy) {
  for (const node of nodes) {
    if (!node) continue;
    if (busy) node.setAttribute('aria-busy', 'true');
    else node.removeAttribute('aria-busy');
  }
}

/**
 * Run an async handler so that a bug never turns into a silent, blank failure: the error banner
 * says something went wrong, and the error still reaches the console for whoever debugs it.
 */
export function guard(promiseOrFn) {
  const promise = typeof promiseOrFn === 'function' ? Promise.resolve().then(promiseOrFn) : Promise.resolve(promiseOrFn);
  return promise.catch((err) => {
    showError(`Something went wrong in the page: ${err && err.message ? err.message : err}. Reload to continue.`);
    console.error(err);
  });
}
