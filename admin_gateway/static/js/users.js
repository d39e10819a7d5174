// The Users page (super_admin): lists GET /api/admin/users and offers, per user, Change role, Disable or
// Enable, Reset password and Remove, each confirmed in one dialog; "Add user…" opens its own. A one-time
// password (add, reset) is shown once in a banner until dismissed. Your own row offers nothing: your
// password has its own page, and another super_admin changes your role.

import { api, failureText } from './api.js';
import { $, clearError, el, flash, guard, setBusy, showError, timeEl } from './dom.js';
import { openedBy, setError } from './actions.js';

const ACTIONS = {
  role: { title: (u) => `Change the role of ${u.name}?`, note: 'A change ends their sessions at once; they sign in again with the new role.', button: 'Change role', path: 'role' },
  disable: { title: (u) => `Disable ${u.name}?`, note: 'They cannot sign in until enabled again, and their sessions end at once.', button: 'Disable', path: 'disable' },
  enable: { title: (u) => `Enable ${u.name}?`, note: 'They can sign in again with their password.', button: 'Enable', path: 'enable' },
  reset: { title: (u) => `Reset the password of ${u.name}?`, note: 'A one-time password replaces theirs and is shown to you once; their sessions end at once, and they must change it at their next sign-in.', button: 'Reset password', path: 'reset-password' },
  remove: { title: (u) => `Remove ${u.name}?`, note: 'The account is deleted and their sessions end at once. This cannot be undone (add them again instead).', button: 'Remove', path: 'remove' },
};

export function initUsers() {
  const body = $('#users-body');
  const refreshButton = $('#refresh-button');
  const addDialog = $('#add-user-dialog');
  const confirmDialog = $('#user-confirm-dialog');
  const you = body.dataset.you;
  const users = new Map();
  let pending = null;

  function showPassword(name, password) {
    $('#one-time-user').textContent = name;
    $('#one-time-value').textContent = password;
    $('#one-time-password').hidden = false;
  }

  $('#one-time-dismiss').addEventListener('click', () => {
    $('#one-time-value').textContent = '';
    $('#one-time-password').hidden = true;
  });

  function actionButton(user, action, label, danger) {
    return el('button', {
      type: 'button', class: `btn btn-small${danger ? ' btn-danger' : ''}`, 'data-action': action,
      'data-testid': `user-action-${action}`, 'aria-label': `${label}: ${user.name}`,
    }, label);
  }

  function row(user) {
    const state = user.disabled ? 'disabled' : user.mustChangePassword ? 'must change password' : 'active';
    const actions = user.name === you
      ? [el('span', { class: 'muted' }, 'you')]
      : [
        actionButton(user, 'role', 'Role…', false),
        user.disabled ? actionButton(user, 'enable', 'Enable…', false) : actionButton(user, 'disable', 'Disable…', true),
        actionButton(user, 'reset', 'Reset password…', true),
        actionButton(user, 'remove', 'Remove…', true),
      ];
    return el('tr', { 'data-testid': 'user-row', 'data-user': user.name, 'data-role': user.role, 'data-disabled': String(user.disabled) },
      el('td', { 'data-testid': 'user-name' }, user.name),
      el('td', { 'data-testid': 'user-role' }, user.role),
      el('td', { 'data-testid': 'user-state' }, state),
      el('td', { 'data-testid': 'user-last-sign-in' }, user.lastSignInAt ? timeEl(user.lastSignInAt) : 'never'),
      el('td', { 'data-testid': 'user-sessions' }, String(user.sessions)),
      el('td', { class: 'col-action' }, el('div', { class: 'row-actions' }, ...actions)));
  }

  async function refresh() {
    setBusy([refreshButton], true);
    try {
      const result = await api('GET', '/api/admin/users');
      if (!result.ok || !result.data || !Array.isArray(result.data.users)) {
        showError(failureText('Could not list the users', result));
        return;
      }
      clearError();
      users.clear();
      for (const user of result.data.users) users.set(user.name, user);
      body.replaceChildren(...result.data.users.map(row));
    } finally {
      setBusy([refreshButton], false);
    }
  }

  body.addEventListener('click', (event) => {
    const button = event.target instanceof Element ? event.target.closest('button[data-action]') : null;
    if (!button) return;
    const user = users.get(button.closest('tr').dataset.user);
    const action = ACTIONS[button.dataset.action];
    if (!user || !action) return;
    pending = { user, action };
    $('#user-confirm-title').textContent = action.title(user);
    $('#user-confirm-note').textContent = action.note;
    $('#user-confirm-submit').textContent = action.button;
    $('#user-role-field').hidden = action.path !== 'role';
    $('#user-role-select').value = user.role === 'admin' ? 'super_admin' : 'admin';
    setError($('#user-confirm-error'), '');
    openedBy(button);
    confirmDialog.showModal();
  });

  $('#user-confirm-form').addEventListener('submit', (event) => {
    event.preventDefault();
    if (!pending) return;
    const { user, action } = pending;
    const submit = $('#user-confirm-submit');
    guard(async () => {
      setBusy([submit], true);
      try {
        const payload = action.path === 'role' ? { role: $('#user-role-select').value } : {};
        const result = await api('POST', `/api/admin/users/${encodeURIComponent(user.name)}/${action.path}`, payload);
        if (!result.ok) {
          setError($('#user-confirm-error'), failureText(action.button, result));
          return;
        }
        confirmDialog.close();
        pending = null;
        if (result.data && typeof result.data.password === 'string') showPassword(user.name, result.data.password);
        flash(`${action.button}: ${user.name} done.`);
        await refresh();
      } finally {
        setBusy([submit], false);
      }
    });
  });

  $('#add-user-button').addEventListener('click', (event) => {
    $('#add-user-name').value = '';
    setError($('#add-user-error'), '');
    openedBy(event.currentTarget);
    addDialog.showModal();
  });

  $('#add-user-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const name = $('#add-user-name').value.trim();
    const role = $('#add-user-role').value;
    const submit = addDialog.querySelector('[data-testid="add-user-submit"]');
    guard(async () => {
      setBusy([submit], true);
      try {
        const result = await api('POST', '/api/admin/users', { name, role });
        if (!result.ok) {
          setError($('#add-user-error'), failureText('Not added', result));
          return;
        }
        addDialog.close();
        showPassword(name, result.data.password);
        await refresh();
      } finally {
        setBusy([submit], false);
      }
    });
  });

  refreshButton.addEventListener('click', () => guard(refresh()));
  guard(refresh());
}
