// "New job": a form built from the engine's type catalog (GET /api/admin/engine/types),
// a field per declared param, POST /api/admin/engine/jobs. The catalog is fetched only
// when the dialog opens, so an engine outage costs nothing on page load.

import { api } from './api.js';
import { $, el, guard } from './dom.js';

/** Accept the catalog as a list, {types: list}, or a mapping of name -> declaration. */
export function normalizeCatalog(data) {
  let raw = data;
  if (raw && !Array.isArray(raw) && typeof raw === 'object' && 'types' in raw) raw = raw.types;
  let list = [];
  if (Array.isArray(raw)) {
    list = raw;
  } else if (raw && typeof raw === 'object') {
    list = Object.entries(raw).map(([name, decl]) => ({ name, ...(decl && typeof decl === 'object' ? decl : {}) }));
  }
  return list
    .filter((t) => t && typeof t === 'object' && typeof t.name === 'string' && t.name)
    .map((t) => ({
      name: t.name,
      description: typeof t.description === 'string' ? t.description : '',
      params: normalizeParams(t.params),
      timeout: typeof t.timeout === 'number' ? t.timeout : null,
      exclusive: Boolean(t.exclusive),
      plan: t.plan === true,
      approval: t.approval === 'required',
    }));
}

function normalizeParams(params) {
  let list = [];
  if (Array.isArray(params)) {
    list = params;
  } else if (params && typeof params === 'object') {
    list = Object.entries(params).map(([name, decl]) => ({ name, ...(decl && typeof decl === 'object' ? decl : {}) }));
  }
  return list.filter((p) => p && typeof p === 'object' && typeof p.name === 'string' && p.name).map((p) => ({
    name: p.name,
    type: ['int', 'integer'].includes(p.type) ? 'int'
      : ['bool', 'boolean'].includes(p.type) ? 'bool'
        : ['float', 'number'].includes(p.type) ? 'float' : 'str',
    required: Boolean(p.required),
    default: p.default === undefined ? null : p.default,
    choices: Array.isArray(p.choices) && p.choices.length ? p.choices : null,
    min: typeof p.min === 'number' ? p.min : null,
    max: typeof p.max === 'number' ? p.max : null,
    maxLength: typeof p.maxLength === 'number' ? p.maxLength : null,
    description: typeof p.description === 'string' ? p.description : '',
  }));
}

function paramField(param) {
  const id = `param-${param.name}`;
  const testid = `param-${param.name}`;
  const mark = param.required ? el('span', { class: 'required-mark', 'aria-hidden': 'true' }, '*') : null;
  const hints = [];
  if (param.description) hints.push(param.description);
  hints.push(param.type === 'str' ? 'text' : param.type === 'bool' ? 'yes/no' : param.type === 'int' ? 'whole number' : 'number');
  if (param.min !== null || param.max !== null) {
    hints.push(`${param.min ?? '…'}–${param.max ?? '…'}`);
  }
  if (param.default !== null) hints.push(`default ${JSON.stringify(param.default)}`);
  if (!param.required) hints.push('optional');
  const hint = el('span', { class: 'hint', id: `${id}-hint` }, hints.join(' · '));

  if (param.type === 'bool') {
    const input = el('input', {
      type: 'checkbox', id, name: param.name, 'data-testid': testid, 'data-param-type': 'bool',
      'aria-describedby': `${id}-hint`,
    });
    input.checked = param.default === true;
    return el('div', { class: 'form-field checkbox' }, input, el('label', { for: id }, param.name, mark), hint);
  }

  let input;
  if (param.choices) {
    input = el('select', {
      id, name: param.name, 'data-testid': testid, 'data-param-type': param.type,
      required: param.required, 'aria-describedby': `${id}-hint`,
    });
    if (!param.required || param.default === null) {
      input.append(el('option', { value: '' }, param.required ? 'Choose…' : '(default)'));
    }
    for (const choice of param.choices) {
      const option = el('option', { value: String(choice) }, String(choice));
      if (param.default !== null && String(param.default) === String(choice)) option.selected = true;
      input.append(option);
    }
  } else {
    const numeric = param.type === 'int' || param.type === 'float';
    input = el('input', {
      type: numeric ? 'number' : 'text', id, name: param.name, 'data-testid': testid,
      'data-param-type': param.type, required: param.required, 'aria-describedby': `${id}-hint`,
      step: param.type === 'int' ? '1' : param.type === 'float' ? 'any' : null,
      min: numeric ? param.min : null, max: numeric ? param.max : null,
      maxlength: numeric ? null : param.maxLength,
      autocomplete: 'off',
    });
    if (param.default !== null) input.value = String(param.default);
  }
  return el('div', { class: 'form-field' }, el('label', { for: id }, param.name, mark), input, hint);
}

/** Read the params form into typed values; returns {params} or {error}. Empty optional fields are left to the engine's defaults. */
function readParams(container) {
  const params = {};
  for (const input of container.querySelectorAll('[data-param-type]')) {
    const kind = input.dataset.paramType;
    if (kind === 'bool') {
      params[input.name] = input.checked;
      continue;
    }
    const raw = input.value.trim();
    if (raw === '') continue;
    if (kind === 'int' || kind === 'float') {
      const value = Number(raw);
      if (!Number.isFinite(value) || (kind === 'int' && !Number.isInteger(value))) {
        return { error: `${input.name} must be a ${kind === 'int' ? 'whole number' : 'number'}.` };
      }
      params[input.name] = value;
    } else {
      params[input.name] = raw;
    }
  }
  return { params };
}

/** Wire the "New job" button and dialog; `onCreated(job)` runs after a 201. */
export function setupNewJob(onCreated) {
  const button = $('#new-job-button');
  const dialog = $('#new-job-dialog');
  if (!button || !dialog) return;
  const form = $('#new-job-form');
  const typeSelect = $('#new-job-type');
  const paramsBox = $('#new-job-params');
  const errorBox = $('#new-job-error');
  const submit = $('#new-job-submit');
  let catalog = null;
  let loading = null;

  function setError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function showType(name) {
    const type = (catalog || []).find((t) => t.name === name);
    const facts = [];
    if (type && type.description) facts.push(type.description);
    if (type && type.timeout !== null) facts.push(`Timeout ${type.timeout} s.`);
    if (type && type.exclusive) facts.push('Exclusive: at most one job of this type runs at a time.');
    $('#new-job-type-description').textContent = facts.join(' ');
    const fields = type ? type.params.map(paramField) : [];
    paramsBox.replaceChildren(el('legend', { class: 'visually-hidden' }, 'Parameters'), ...fields);
    paramsBox.hidden = fields.length === 0;
  }

  async function loadCatalog() {
    $('#new-job-loading').hidden = false;
    $('#new-job-loading').textContent = 'Loading job types…';
    const result = await api('GET', '/api/admin/engine/types');
    if (!result.ok) {
      $('#new-job-loading').hidden = true;
      setError(`Could not load the job types: ${result.message} Close and try again.`);
      return;
    }
    const types = normalizeCatalog(result.data);
    if (!types.length) {
      $('#new-job-loading').textContent = 'The engine declares no job types.';
      return;
    }
    catalog = types;
    typeSelect.replaceChildren(...types.map((t) => el('option', { value: t.name }, t.name)));
    $('#new-job-loading').hidden = true;
    $('#new-job-type-field').hidden = false;
    $('#new-job-name-field').hidden = false;
    submit.disabled = false;
    showType(typeSelect.value);
  }

  button.addEventListener('click', () => {
    setError('');
    dialog.showModal();
    if (!catalog && !loading) {
      loading = guard(loadCatalog()).finally(() => { loading = null; });
    }
    (catalog ? typeSelect : dialog.querySelector('[data-close]')).focus();
  });

  typeSelect.addEventListener('change', () => showType(typeSelect.value));

  async function create() {
    setError('');
    if (!catalog) return;
    if (!form.reportValidity()) return;
    const read = readParams(paramsBox);
    if (read.error) {
      setError(read.error);
      return;
    }
    const body = { type: typeSelect.value, params: read.params };
    const name = $('#new-job-name').value.trim();
    if (name) body.name = name;
    submit.disabled = true;
    submit.textContent = 'Creating…';
    const result = await api('POST', '/api/admin/engine/jobs', body);
    submit.disabled = false;
    submit.textContent = 'Create job';
    if (!result.ok || !result.data || !result.data.id) {
      setError(`The job was not created: ${result.message || 'unexpected answer from the gateway.'}`);
      return;
    }
    dialog.close();
    $('#new-job-name').value = '';
    showType(typeSelect.value);
    await onCreated(result.data);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    guard(create());
  });
}
