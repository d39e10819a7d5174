// RUN and Cancel: open a <dialog> (never window.confirm) with the job's id, type and params,
// then POST to the API with the CSRF header. Shared by the jobs list and the job page. Run again
// (job page) posts at once: it only makes a READY copy, which needs its own RUN.

import { api, failureText } from './api.js';
import { $, el, guard } from './dom.js';
import { normalizeCatalog } from './newjob.js';

let lastTrigger = null;

// Refusals that another click cannot fix (and, for a timeout, one where the job may have
// started after all): the confirm button stays disabled so nobody retries blindly.
const FINAL_CODES = new Set(['not_ready', 'already_running', 'not_running', 'safe_mode', 'not_found', 'engine_timeout']);

function jobFrom(node) {
  let params = {};
  try {
    params = JSON.parse(node.getAttribute('data-job-params') || '{}');
  } catch (err) {
    params = {};
  }
  return {
    id: node.getAttribute('data-job-id') || '',
    status: node.getAttribute('data-status') || '',
    type: node.getAttribute('data-job-type') || '',
    name: node.getAttribute('data-job-name') || '',
    params,
  };
}

/** The job's params as a small table ("none" without any). */
export function paramsView(params) {
  const entries = params && typeof params === 'object' ? Object.entries(params) : [];
  if (!entries.length) return el('span', { class: 'muted' }, 'none');
  const body = el('tbody');
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [key, value] of entries) {
    body.append(el('tr', {}, el('th', { scope: 'row' }, key), el('td', {}, JSON.stringify(value))));
  }
  return el('div', { class: 'params-box' }, el('table', { class: 'params' }, body));
}

// The gateway waits up to 160 s for a plan (the longest plan timeout plus its kill grace).
const PLAN_TIMEOUT_MS = 170000;

let typesLoaded = null;

/** The catalog's types by name (fetched once per page; null when unknown). */
export function catalogTypes() {
  if (!typesLoaded) {
    typesLoaded = api('GET', '/api/admin/engine/types').then((result) => {
      if (!result.ok) {
        typesLoaded = null; // try again at the next dialog
        return null;
      }
      return new Map(normalizeCatalog(result.data).map((t) => [t.name, t]));
    });
  }
  return typesLoaded;
}

/**
 * Show the job's plan in a dialog (`#<dialog>-plan`, `-plan-status`, `-plan-output`): its output
 * (what the run would do) and its sha256, or why there is none. Resolves to the plan's sha256 or
 * null. `stillCurrent()` is false once the dialog moved on to another job, so a late answer is
 * dropped.
 */
export async function showPlan(job, stillCurrent, dialog = 'run') {
  const section = $(`#${dialog}-plan`);
  const status = $(`#${dialog}-plan-status`);
  const output = $(`#${dialog}-plan-output`);
  section.hidden = true;
  output.hidden = true;
  output.textContent = '';
  status.classList.remove('bad');
  const types = await catalogTypes();
  if (!stillCurrent() || (types && !(types.get(job.type) || {}).plan)) return null;
  section.hidden = false;
  status.textContent = 'Making the plan…';
  const result = await api('POST', `/api/admin/engine/jobs/${encodeURIComponent(job.id)}/plan`, {}, PLAN_TIMEOUT_MS);
  if (!stillCurrent()) return null;
  if (!result.ok) {
    if (result.code === 'no_plan') {
      section.hidden = true;
      return null;
    }
    status.classList.add('bad');
    status.textContent = `No plan: ${result.message}`;
    return null;
  }
  const plan = result.data || {};
  output.textContent = typeof plan.output === 'string' && plan.output ? plan.output : '(the plan printed nothing)';
  output.hidden = false;
  const hash = typeof plan.sha256 === 'string' ? plan.sha256 : '';
  const notes = [];
  if (plan.error) notes.push(String(plan.error));
  if (plan.truncated) notes.push('output cut at 64 KiB');
  const failed = Boolean(plan.error) || plan.exitCode !== 0;
  status.classList.toggle('bad', failed);
  status.textContent = `${failed ? 'The plan did not succeed' : 'Plan made'}${notes.length ? ` (${notes.join('; ')})` : ''}`
    + ` · sha256 ${hash.slice(0, 12)}`;
  status.title = hash;
  return hash || null;
}

/** Show `message` in a dialog's error box (hidden when empty). */
export function setError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

/** Remember the button that opened a dialog: closing it gives that button the focus back. */
export function openedBy(button) {
  lastTrigger = button;
}

// The last element focused outside every dialog: the opener of a dialog whose script did not
// call openedBy (a pressed button has the focus when its click handler opens the dialog).
let lastOutside = null;

const FIELDS = 'input:not([type="hidden"]), select, textarea';
const TABBABLE = 'a[href], button, input:not([type="hidden"]), select, textarea, [tabindex]';

function usable(node) {
  return !node.disabled && node.tabIndex >= 0 && node.getClientRects().length > 0;
}

/** The elements of `dialog` that Tab reaches, in document order (shown, enabled, not tabindex=-1). */
export function tabbables(dialog) {
  return [...dialog.querySelectorAll(TABBABLE)].filter(usable);
}

/** Focus the first field of `dialog` (input, select, textarea); without one, its first tabbable element. */
export function focusFirstField(dialog) {
  const target = [...dialog.querySelectorAll(FIELDS)].find(usable) || tabbables(dialog)[0];
  if (target) target.focus();
}

// Tab and Shift+Tab go round the dialog's own elements: past the last comes the first, and back.
// showModal() makes the page behind inert, but Chromium would still let the focus leave the dialog
// for the browser's own UI (or nowhere) between the last element and the first.
function trapTab(dialog, event) {
  if (event.key !== 'Tab' || !dialog.open) return;
  const items = tabbables(dialog);
  if (!items.length) {
    event.preventDefault();
    return;
  }
  const first = items[0];
  const last = items[items.length - 1];
  const active = document.activeElement;
  const inside = active !== dialog && dialog.contains(active);
  if (event.shiftKey && (!inside || active === first)) {
    event.preventDefault();
    last.focus();
  } else if (!event.shiftKey && (!inside || active === last)) {
    event.preventDefault();
    first.focus();
  }
}

// Opening: the opener is remembered and the first field gets the focus, unless the dialog's
// script already put it on a field or on a chosen button (its own decision stands). A dialog
// whose fields appear later (New job: the types load after it opens) moves the focus to the first
// field then, as long as the person has not moved it since the dialog opened.
function watchOpening(dialog, state) {
  new MutationObserver((changes) => {
    const opened = changes.some((c) => c.target === dialog && c.attributeName === 'open');
    if (opened && dialog.open) {
      state.opener = lastTrigger || lastOutside;
      const active = document.activeElement;
      const chosen = active !== dialog && dialog.contains(active) && !active.matches('[data-close]');
      if (!chosen) focusFirstField(dialog);
      state.placed = document.activeElement;
    } else if (dialog.open && document.activeElement === state.placed && !state.placed.matches(FIELDS)) {
      const field = [...dialog.querySelectorAll(FIELDS)].find(usable);
      if (field) {
        field.focus();
        state.placed = field;
      }
    }
  }).observe(dialog, { attributes: true, attributeFilter: ['open', 'hidden'], subtree: true });
}

/**
 * `node` if it is still on the page; else, when a live update re-rendered its job's row or panel
 * while the dialog was open, the same control (data-action) of the same job; else null.
 */
function successor(node) {
  if (node.isConnected) return node;
  const holder = node.closest('[data-job-id]');
  const action = node.dataset ? node.dataset.action : null;
  if (!holder || !action) return null;
  const id = CSS.escape(holder.dataset.jobId);
  return document.querySelector(`[data-job-id="${id}"] [data-action="${CSS.escape(action)}"]`);
}

/**
 * Every dialog on the page: [data-close] buttons close it; on open the first field has the focus;
 * Tab and Shift+Tab stay inside while it is open; closing it (Esc, Close, or the script) gives the
 * focus back to the element that opened it (the one passed to openedBy, else the last element
 * focused outside the dialogs). Dialogs added to the page later are not covered.
 */
export function setupDialogs() {
  document.addEventListener('focusin', (event) => {
    if (event.target instanceof Element && !event.target.closest('dialog')) lastOutside = event.target;
  });
  for (const dialog of document.querySelectorAll('dialog')) {
    const state = { opener: null, placed: null };
    watchOpening(dialog, state);
    dialog.addEventListener('keydown', (event) => trapTab(dialog, event));
    dialog.addEventListener('click', (event) => {
      const target = event.target instanceof Element ? event.target.closest('[data-close]') : null;
      if (target) dialog.close();
    });
    dialog.addEventListener('close', () => {
      // Give keyboard users their place back; the opener may have been re-rendered away.
      const opener = state.opener || lastTrigger;
      const target = (opener && successor(opener)) || $('#refresh-button');
      lastTrigger = null;
      state.opener = null;
      state.placed = null;
      if (target) target.focus();
    });
  }
}

/** Whether Run again is offered: a super_admin, on a finished job (the gateway decides again). */
export function canRunAgain(job, state) {
  return state.superAdmin && (job.status === 'DONE' || job.status === 'FAILED');
}

/** The Run again button (templates/job.html renders the same), or null when it is not offered. */
export function runAgainButton(job, state) {
  if (!canRunAgain(job, state)) return null;
  return el('button', {
    type: 'button', class: 'btn', 'data-action': 'copy', 'data-testid': 'run-again-button',
    title: 'Make a new READY job with the same type, name and params; it does not run until someone presses its RUN',
    'aria-label': `Run again: make a new READY copy of job ${job.id}`,
  }, 'Run again');
}

/**
 * Run again: ask the gateway for a READY copy of `job` (nothing runs, so no dialog: the copy
 * needs its own RUN). Reports `{kind: 'copy', ok, job: <the copy>|null, message}`; the button
 * stays disabled after a success, as the page moves on to the copy.
 */
async function runAgain(button, job, onChanged) {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  const result = await api('POST', `/api/admin/engine/jobs/${encodeURIComponent(job.id)}/copy`, {});
  button.removeAttribute('aria-busy');
  const data = result.ok && result.data && typeof result.data === 'object' ? result.data : null;
  const copy = data && data.job && typeof data.job === 'object' ? data.job : data;
  if (copy && typeof copy.id === 'string' && copy.id) {
    onChanged({ kind: 'copy', ok: true, jobId: job.id, job: copy, message: '' });
    return;
  }
  button.disabled = false;
  const refused = result.ok ? { ...result, message: 'unexpected answer', code: null } : result;
  onChanged({ kind: 'copy', ok: false, jobId: job.id, job: null, message: failureText('The job was not copied', refused) });
}

/**
 * Wire RUN/Cancel (and Run again) buttons inside `root` (event delegation, so re-rendered rows keep working).
 * `onChanged(job|null)` runs after an accepted or refused action so the caller can refresh.
 */
export function setupJobActions(root, onChanged) {
  const runDialog = $('#run-dialog');
  const cancelDialog = $('#cancel-dialog');
  if (!root || !runDialog || !cancelDialog) return;
  let current = null;
  let opened = 0;

  root.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('button[data-action]') : null;
    if (!button || !root.contains(button)) return;
    const holder = button.closest('[data-job-id]');
    if (!holder) return;
    current = jobFrom(holder);
    lastTrigger = button;
    if (button.dataset.action === 'run') {
      $('#run-dialog-id').textContent = current.id;
      $('#run-dialog-name').textContent = current.name || '—';
      $('#run-dialog-type').textContent = current.type;
      $('#run-dialog-params').replaceChildren(paramsView(current.params));
      $('#run-reason').value = '';
      setError($('#run-error'), '');
      const confirm = $('#run-confirm');
      confirm.disabled = true;
      confirm.textContent = 'Run job';
      $('#run-approval-note').hidden = true;
      runDialog.showModal();
      $('#run-reason').focus();
      // Confirming waits for the plan: the person runs what they have read.
      const job = current;
      const ticket = ++opened;
      const stillCurrent = () => ticket === opened && runDialog.open;
      guard(catalogTypes().then((types) => {
        // A type with approval = "required": RUN opens a request that a second person approves.
        if (!stillCurrent() || !types || !(types.get(job.type) || {}).approval) return;
        $('#run-approval-note').hidden = false;
        confirm.textContent = 'Request run';
      }));
      guard(showPlan(job, stillCurrent).then((hash) => {
        if (!stillCurrent()) return;
        job.planSha256 = hash;
        confirm.disabled = false;
      }));
    } else if (button.dataset.action === 'copy') {
      guard(runAgain(button, current, onChanged));
    } else if (button.dataset.action === 'cancel') {
      $('#cancel-dialog-id').textContent = current.id;
      $('#cancel-dialog-name').textContent = current.name || '—';
      $('#cancel-dialog-type').textContent = current.type;
      $('#cancel-reason').value = '';
      setError($('#cancel-error'), '');
      $('#cancel-confirm').disabled = false;
      cancelDialog.showModal();
      $('#cancel-reason').focus();
    }
  });

  async function submit(event, kind) {
    event.preventDefault();
    if (!current) return;
    const job = current;
    const dialog = kind === 'run' ? runDialog : cancelDialog;
    const confirm = $(kind === 'run' ? '#run-confirm' : '#cancel-confirm');
    const errorBox = $(kind === 'run' ? '#run-error' : '#cancel-error');
    const label = confirm.textContent;
    confirm.disabled = true;
    confirm.textContent = kind === 'run' ? 'Starting…' : 'Cancelling…';
    setError(errorBox, '');
    const body = {};
    const reason = $(kind === 'run' ? '#run-reason' : '#cancel-reason').value.trim();
    if (reason) body.reason = reason;
    if (kind === 'run') {
      // The plan the person read: an approver's plan must match it (docs/governance.md).
      if (job.planSha256) body.planSha256 = job.planSha256;
    }
    const path = `/api/admin/engine/jobs/${encodeURIComponent(job.id)}/${kind}`;
    const result = await api('POST', path, body);
    confirm.textContent = label;
    confirm.disabled = !result.ok && FINAL_CODES.has(result.code);
    if (result.ok) {
      dialog.close();
      const updated = result.data && typeof result.data === 'object' && result.data.job ? result.data.job : null;
      onChanged({ kind, ok: true, jobId: job.id, job: updated, message: result.data && result.data.message });
    } else {
      const what = kind === 'run' ? 'The job was not started' : 'The job was not cancelled';
      setError(errorBox, failureText(what, result));
      onChanged({ kind, ok: false, jobId: job.id, job: null, message: result.message });
    }
  }

  $('#run-form').addEventListener('submit', (event) => { guard(submit(event, 'run')); });
  $('#cancel-form').addEventListener('submit', (event) => { guard(submit(event, 'cancel')); });
}
