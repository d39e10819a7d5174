// RUN and Cancel: open a <dialog> (never window.confirm) with the job's id, type and params,
// then POST to the API with the CSRF header. Shared by the jobs list and the job page.

import { api } from './api.js';
import { $, el, guard } from './dom.js';

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

function paramsView(params) {
  const entries = params && typeof params === 'object' ? Object.entries(params) : [];
  if (!entries.length) return el('span', { class: 'muted' }, 'none');
  const body = el('tbody');
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [key, value] of entries) {
    body.append(el('tr', {}, el('th', { scope: 'row' }, key), el('td', {}, JSON.stringify(value))));
  }
  return el('div', { class: 'params-box' }, el('table', { class: 'params' }, body));
}

function setError(node, message) {
  node.textContent = message;
  node.hidden = !message;
}

/** Close buttons ([data-close]) and focus return for every dialog on the page. */
export function setupDialogs() {
  for (const dialog of document.querySelectorAll('dialog')) {
    dialog.addEventListener('click', (event) => {
      const target = event.target instanceof Element ? event.target.closest('[data-close]') : null;
      if (target) dialog.close();
    });
    dialog.addEventListener('close', () => {
      // Give keyboard users their place back; the trigger may have been re-rendered away.
      const target = lastTrigger && lastTrigger.isConnected ? lastTrigger : $('#refresh-button');
      lastTrigger = null;
      if (target) target.focus();
    });
  }
}

/**
 * Wire RUN/Cancel buttons inside `root` (event delegation, so re-rendered rows keep working).
 * `onChanged(job|null)` runs after an accepted or refused action so the caller can refresh.
 */
export function setupJobActions(root, onChanged) {
  const runDialog = $('#run-dialog');
  const cancelDialog = $('#cancel-dialog');
  if (!root || !runDialog || !cancelDialog) return;
  let current = null;

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
      $('#run-confirm').disabled = false;
      runDialog.showModal();
      $('#run-reason').focus();
    } else if (button.dataset.action === 'cancel') {
      $('#cancel-dialog-id').textContent = current.id;
      $('#cancel-dialog-name').textContent = current.name || '—';
      $('#cancel-dialog-type').textContent = current.type;
      setError($('#cancel-error'), '');
      $('#cancel-confirm').disabled = false;
      cancelDialog.showModal();
      $('#cancel-confirm').focus();
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
    if (kind === 'run') {
      const reason = $('#run-reason').value.trim();
      if (reason) body.reason = reason;
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
      setError(errorBox, `${what}: ${result.message}${result.code && !result.code.startsWith('http_') ? ` (${result.code})` : ''}`);
      onChanged({ kind, ok: false, jobId: job.id, job: null, message: result.message });
    }
  }

  $('#run-form').addEventListener('submit', (event) => { guard(submit(event, 'run')); });
  $('#cancel-form').addEventListener('submit', (event) => { guard(submit(event, 'cancel')); });
}
