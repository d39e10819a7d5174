// The Approvals page: the runs waiting for a second person (GET /api/admin/engine/run-requests),
// with Approve (its dialog shows the requester, the reason, the params and a fresh plan, and binds
// the approval to that plan's sha256) and Reject (a reason is required). Never offered on your own
// request, nor twice: the engine refuses both anyway (403 self_approval, 409 already_approved).

import { api, failureText } from './api.js';
import { $, clearError, el, flash, guard, jobUrl, pageState, setBusy, showError, timeEl } from './dom.js';
import { catalogTypes, openedBy, paramsView, setError, showPlan } from './actions.js';
import { serialized, startLive } from './live.js';

export function initApprovals() {
  const state = pageState();
  const body = $('#approvals-body');
  const refreshButton = $('#refresh-button');
  const approveDialog = $('#approve-dialog');
  const rejectDialog = $('#reject-dialog');
  const jobs = new Map();
  let me = null;
  let current = null;
  let opened = 0;

  function actionsFor(job) {
    const request = job.runRequest;
    const mine = me !== null && request.by === me;
    const approved = (request.approvals || []).some((a) => a.by === me);
    if (!state.superAdmin || mine || approved || me === null) {
      const why = mine ? 'your request' : approved ? 'you approved' : '—';
      return [el('span', { class: 'muted', 'data-testid': 'approval-none' }, why)];
    }
    return [
      el('button', { type: 'button', class: 'btn btn-primary btn-small', 'data-action': 'approve', 'data-testid': 'approve-button', 'aria-label': `Approve the run of job ${job.id}` }, 'Approve…'),
      el('button', { type: 'button', class: 'btn btn-danger btn-small', 'data-action': 'reject', 'data-testid': 'reject-button', 'aria-label': `Reject the run of job ${job.id}` }, 'Reject…'),
    ];
  }

  function row(job) {
    const request = job.runRequest;
    const label = job.name ? `${job.name} · ${job.type}` : job.type;
    return el('tr', { 'data-testid': 'approval-row', 'data-job-id': job.id, 'data-requested-by': request.by },
      el('td', {}, el('a', { class: 'job-id', href: jobUrl(job.id) }, job.id), el('span', { class: 'job-name' }, label)),
      el('td', { 'data-testid': 'approval-by' }, request.by),
      el('td', {}, request.reason || '—'),
      el('td', { 'data-testid': 'approval-count' }, `${(request.approvals || []).length} of ${request.required}`),
      el('td', {}, timeEl(request.expiresAt)),
      el('td', { class: 'col-action' }, el('div', { class: 'row-actions' }, ...actionsFor(job))));
  }

  const refresh = serialized(async () => {
    setBusy([refreshButton], true);
    try {
      if (me === null) {
        const config = await api('GET', '/api/admin/config');
        if (config.ok && config.data && typeof config.data.user === 'string') me = config.data.user;
      }
      const result = await api('GET', '/api/admin/engine/run-requests');
      if (!result.ok || !Array.isArray(result.data)) {
        showError(`Could not list the run requests: ${result.message || 'unexpected answer'}`);
        return;
      }
      clearError();
      jobs.clear();
      const open = result.data.filter((job) => job && job.runRequest && job.runRequest.state === 'open');
      for (const job of open) jobs.set(job.id, job);
      body.replaceChildren(...(open.length ? open.map(row) : [el('tr', { class: 'placeholder-row', 'data-testid': 'empty-state' },
        el('td', { colspan: '6' }, el('strong', {}, 'Nothing waits for approval'), ' Runs of a type that needs a second person appear here when requested.'))]));
      $('#last-updated').replaceChildren('Updated ', timeEl(new Date().toISOString()));
    } finally {
      setBusy([refreshButton], false);
    }
  });

  body.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('button[data-action]') : null;
    const holder = button ? button.closest('[data-job-id]') : null;
    const job = holder ? jobs.get(holder.getAttribute('data-job-id')) : null;
    if (!job) return;
    current = { job, planSha256: null };
    openedBy(button);
    if (button.dataset.action === 'reject') {
      $('#reject-reason').value = '';
      setError($('#reject-error'), '');
      rejectDialog.showModal();
      $('#reject-reason').focus();
      return;
    }
    $('#approve-dialog-id').textContent = job.id;
    $('#approve-dialog-type').textContent = job.type;
    $('#approve-dialog-by').textContent = job.runRequest.by;
    $('#approve-dialog-reason').textContent = job.runRequest.reason || '—';
    $('#approve-dialog-params').replaceChildren(paramsView(job.params));
    $('#approve-reason').value = '';
    setError($('#approve-error'), '');
    const confirm = $('#approve-confirm');
    confirm.disabled = true;
    approveDialog.showModal();
    $('#approve-reason').focus();
    const ticket = ++opened;
    const mine = current;
    const stillCurrent = () => ticket === opened && approveDialog.open;
    guard(showPlan(job, stillCurrent, 'approve').then((hash) => {
      if (!stillCurrent()) return;
      mine.planSha256 = hash;
      // A request made on a plan is approved on a plan: without one (it failed), retry later.
      confirm.disabled = Boolean(job.runRequest.planSha256) && !hash;
    }));
  });


  async function decide(kind) {
    if (!current) return;
    const { job, planSha256 } = current;
    const reasonBox = $(kind === 'approve' ? '#approve-reason' : '#reject-reason');
    const errorBox = $(kind === 'approve' ? '#approve-error' : '#reject-error');
    const reason = reasonBox.value.trim();
    if (kind === 'reject' && !reason) {
      setError(errorBox, 'Give a reason: the requester reads it.');
      return;
    }
    const body = reason ? { reason } : {};
    if (kind === 'approve' && planSha256) body.planSha256 = planSha256;
    const result = await api('POST', `/api/admin/engine/jobs/${encodeURIComponent(job.id)}/${kind}`, body);
    if (!result.ok) {
      setError(errorBox, failureText(kind === 'approve' ? 'Not approved' : 'Not rejected', result));
      if (result.code === 'plan_changed' || result.code === 'no_run_request') guard(refresh);
      return;
    }
    (kind === 'approve' ? approveDialog : rejectDialog).close();
    const after = result.data && result.data.job ? result.data.job : null;
    const started = after && after.status !== 'READY';
    flash(kind === 'reject' ? `Run request of job ${job.id} rejected; the job stays READY.`
      : started ? `Approved: job ${job.id} started.` : `Approval of job ${job.id} recorded; more are needed.`,
    { href: jobUrl(job.id), text: 'Open job page' });
    guard(refresh);
  }

  $('#approve-form').addEventListener('submit', (event) => { event.preventDefault(); guard(decide('approve')); });
  $('#reject-form').addEventListener('submit', (event) => { event.preventDefault(); guard(decide('reject')); });
  refreshButton.addEventListener('click', () => { guard(refresh); });
  guard(catalogTypes);
  guard(refresh);
  startLive({
    // Any change may open, close or complete a request: list again (one read, serialized).
    job: () => guard(refresh),
    relist: () => guard(refresh),
    poll: () => guard(refresh),
  }, state.pollInterval);
}
