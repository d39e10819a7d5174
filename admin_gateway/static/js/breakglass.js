// Break-glass for SAFE_MODE in the panel: the window's banner with a live countdown, and the
// buttons to request one, approve someone else's, withdraw your own or end an open one early.
// The window lives in the engine (one truth for every gateway); this page reads it from
// GET /api/admin/config every few seconds while SAFE_MODE is on, and counts down by itself.
// The server decides every action: these buttons only spare a person a refused click.

import { api, failureText } from './api.js';
import { openedBy, setError } from './actions.js';
import { $, guard, showError } from './dom.js';
import { exactTime } from './time.js';

const POLL_MS = 5000;

let current = null; // the window requested or open now, or null
let me = '';

function left(iso) {
  const seconds = Math.max(0, Math.ceil((Date.parse(iso) - Date.now()) / 1000));
  const m = Math.floor(seconds / 60);
  return `${m}:${String(seconds % 60).padStart(2, '0')} left`;
}

function stateOf(window) {
  if (!window) return 'none';
  const end = window.state === 'open' ? window.until : window.requestExpiresAt;
  if (!end || Date.parse(end) <= Date.now()) return 'none';
  return window.state === 'open' ? 'open' : window.state === 'requested' ? 'requested' : 'none';
}

function render() {
  const banner = $('#override-banner');
  const state = stateOf(current);
  const before = document.body.dataset.override || 'none';
  document.body.dataset.override = state;
  const superAdmin = document.body.dataset.superAdmin === 'true';
  const requestButton = $('#override-request-button');
  if (requestButton) requestButton.hidden = !(superAdmin && state === 'none');
  banner.hidden = state === 'none';
  banner.dataset.state = state;
  if (state === 'open') {
    $('#override-text').textContent = `SAFE_MODE overridden by ${current.requestedBy} (approved by ${current.approvedBy})`
      + ` until ${exactTime(current.until)}, reason: ${current.reason}`;
    $('#override-countdown').textContent = left(current.until);
  } else if (state === 'requested') {
    $('#override-text').textContent = `Break-glass requested by ${current.requestedBy} for ${current.minutes} min,`
      + ` reason: ${current.reason}. A second super_admin must approve it (the request lapses at`
      + ` ${exactTime(current.requestExpiresAt)}).`;
    $('#override-countdown').textContent = '';
  }
  const mine = state !== 'none' && current.requestedBy === me;
  $('#override-approve').hidden = !(superAdmin && state === 'requested' && !mine);
  $('#override-withdraw').hidden = !(superAdmin && state === 'requested' && mine);
  $('#override-end').hidden = !(superAdmin && state === 'open');
  if (before !== state) document.dispatchEvent(new CustomEvent('override-change', { detail: { state } }));
}

async function load() {
  const result = await api('GET', '/api/admin/config');
  if (!result.ok || !result.data) return;
  me = typeof result.data.user === 'string' ? result.data.user : '';
  current = result.data.safeModeOverride && typeof result.data.safeModeOverride === 'object'
    ? result.data.safeModeOverride : null;
  render();
}

async function act(path, body, what) {
  const result = await api('POST', path, body);
  if (!result.ok) showError(failureText(what, result));
  await load();
  return result;
}

function setupRequestDialog() {
  const dialog = $('#override-dialog');
  const button = $('#override-request-button');
  if (!dialog || !button) return;
  button.addEventListener('click', () => {
    $('#override-reason').value = '';
    $('#override-minutes').value = '15';
    setError($('#override-error'), '');
    openedBy(button);
    dialog.showModal();
    $('#override-reason').focus();
  });
  $('#override-form').addEventListener('submit', (event) => {
    event.preventDefault();
    guard(async () => {
      const reason = $('#override-reason').value.trim();
      const minutes = Number.parseInt($('#override-minutes').value, 10);
      const error = $('#override-error');
      if (!reason || !(minutes >= 1 && minutes <= 60)) {
        setError(error, 'Give a reason, and a duration from 1 to 60 minutes.');
        return;
      }
      const result = await api('POST', '/api/admin/safe-mode/override', { reason, minutes });
      if (!result.ok) {
        setError(error, `The request was not made: ${result.message}`);
        return;
      }
      dialog.close();
      await load();
    });
  });
}

function setupApproveDialog() {
  const dialog = $('#override-approve-dialog');
  if (!dialog) return;
  $('#override-approve').addEventListener('click', (event) => {
    if (!current) return;
    openedBy(event.currentTarget);
    $('#override-approve-by').textContent = current.requestedBy;
    $('#override-approve-reason').textContent = current.reason;
    $('#override-approve-minutes').textContent = `${current.minutes} min`;
    dialog.showModal();
    $('#override-approve-confirm').focus();
  });
  $('#override-approve-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const window = current;
    dialog.close();
    if (window) guard(act(`/api/admin/safe-mode/override/${encodeURIComponent(window.id)}/approve`, {}, 'Not approved'));
  });
}

/** Start following the override window on this page (only while SAFE_MODE is on). */
export function startBreakGlass() {
  if (document.body.dataset.safeMode === 'off' || !$('#override-banner')) return;
  setupRequestDialog();
  setupApproveDialog();
  for (const [id, verb, what] of [['#override-withdraw', 'end', 'Not withdrawn'], ['#override-end', 'end', 'Not ended']]) {
    $(id).addEventListener('click', () => {
      if (current) guard(act(`/api/admin/safe-mode/override/${encodeURIComponent(current.id)}/${verb}`, {}, what));
    });
  }
  guard(load);
  setInterval(() => guard(load), POLL_MS);
  // The countdown, and the re-lock at the window's end even if no answer came since.
  setInterval(() => {
    if (!current) return;
    const was = document.body.dataset.override;
    render();
    if (was !== document.body.dataset.override) guard(load);
  }, 1000);
}
