// Virtual keys: create (the secret is shown once, here, and never again), edit limits and
// budgets, revoke. `/admin/keys`.

import { call } from './api.js';
import { errorLine, h, table } from './dom.js';
import * as fmt from './format.js';

/** The form's fields: [name, label, kind]; empty means "no limit" (null). */
const FIELDS = [
  ['name', 'Name', 'text'],
  ['models', 'Models and routes (comma-separated; empty: all)', 'list'],
  ['guardrails', 'Guardrails (comma-separated; besides the model\'s)', 'list'],
  ['rpm', 'Requests a minute', 'int'],
  ['tpm', 'Tokens a minute', 'int'],
  ['max_concurrent', 'In flight', 'int'],
  ['budget_usd', 'Budget (USD)', 'number'],
  ['budget_period', 'Budget resets', 'period'],
];

function input([name, label, kind], key) {
  const value = key?.[name];
  const control = kind === 'period'
    ? h('select', { name }, ['total', 'day', 'month'].map((p) => h('option', { value: p, selected: value === p }, p)))
    : h('input', {
      name,
      type: kind === 'int' || kind === 'number' ? 'number' : 'text',
      min: kind === 'int' || kind === 'number' ? 0 : null,
      step: kind === 'number' ? 'any' : null,
      value: kind === 'list' ? (value ?? []).join(', ') : value ?? '',
      required: name === 'name',
    });
  return h('label', {}, label, control);
}

/** The form's values as the API's settings (an empty field clears its limit). */
function settings(form) {
  const spec = {};
  for (const [name, , kind] of FIELDS) {
    const raw = form.elements[name].value.trim();
    if (kind === 'list') spec[name] = raw ? raw.split(',').map((s) => s.trim()).filter(Boolean) : [];
    else if (kind === 'int') spec[name] = raw === '' ? null : Number.parseInt(raw, 10);
    else if (kind === 'number') spec[name] = raw === '' ? null : Number(raw);
    else spec[name] = raw;
  }
  return spec;
}

function keyForm(key, submitLabel, onSubmit) {
  const status = h('p', { class: 'error', role: 'alert' });
  const form = h('form', { class: 'toolbar' },
    FIELDS.map((f) => input(f, key)),
    key ? null : h('label', {}, 'Expires in (e.g. 30d; empty: never)', h('input', { name: 'expires_in', type: 'text' })),
    h('button', { type: 'submit', class: 'primary' }, submitLabel),
    status);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    status.textContent = '';
    const spec = settings(form);
    const expires = form.elements.expires_in?.value.trim();
    if (expires) spec.expires_in = expires;
    try {
      await onSubmit(spec);
    } catch (e) {
      status.textContent = e.message;
    }
  });
  return form;
}

export async function render(el) {
  const secretBox = h('div');
  const list = h('div');
  const refresh = async () => {
    try {
      const { data } = await call('/admin/keys');
      list.replaceChildren(keyTable(data, refresh));
    } catch (e) {
      list.replaceChildren(errorLine(e));
    }
  };
  const create = keyForm(null, 'Create key', async (spec) => {
    const made = await call('/admin/keys', { method: 'POST', body: spec });
    create.reset();
    secretBox.replaceChildren(h('div', { class: 'created' },
      h('p', {}, `Key “${made.name}” created. Copy its secret now: it is not shown again.`),
      h('p', { class: 'secret', id: 'new-secret' }, made.key),
      h('button', { type: 'button', onclick: () => secretBox.replaceChildren() }, 'Done')));
    await refresh();
  });
  el.append(h('h2', {}, 'Keys'), h('h3', {}, 'New key'), create, secretBox, h('h3', {}, 'All keys'), list);
  await refresh();
}

function keyTable(keys, refresh) {
  const edit = (key, row) => {
    if (row.nextElementSibling?.classList.contains('editor')) {
      row.nextElementSibling.remove();
      return;
    }
    const cell = h('td', { colspan: 12 });
    const editor = h('tr', { class: 'editor' }, cell);
    cell.append(keyForm(key, 'Save', async (spec) => {
      await call(`/admin/keys/${encodeURIComponent(key.id)}`, { method: 'PATCH', body: spec });
      await refresh();
    }));
    row.after(editor);
  };
  const revoke = async (key) => {
    if (!window.confirm(`Revoke “${key.name}”? Requests with it are refused from now on.`)) return;
    await call(`/admin/keys/${encodeURIComponent(key.id)}`, { method: 'DELETE' });
    await refresh();
  };
  const limit = (v) => (v == null ? '–' : fmt.num(v));
  const t = table([
    ['Name', (k) => k.name],
    ['Id', (k) => h('code', {}, k.id)],
    ['Secret', (k) => h('code', {}, k.hint)],
    ['Status', (k) => h('span', { class: `badge ${k.status}` }, k.status)],
    ['Models', (k) => (k.models.length ? k.models.join(', ') : 'all')],
    ['Guardrails', (k) => (k.guardrails?.length ? k.guardrails.join(', ') : '–')],
    ['RPM', (k) => limit(k.rpm)],
    ['TPM', (k) => limit(k.tpm)],
    ['In flight', (k) => limit(k.max_concurrent)],
    ['Budget', (k) => (k.budget_usd == null ? '–' : `${fmt.usd(k.budget_usd)} / ${k.budget_period}`)],
    ['Spent', (k) => fmt.usd(k.spend_usd)],
    ['Created', (k) => fmt.when(k.created_at)],
    ['', (k) => (k.status === 'revoked' ? '' : h('span', {},
      h('button', { type: 'button', class: 'edit', onclick: (e) => edit(k, e.target.closest('tr')) }, 'Edit'), ' ',
      h('button', { type: 'button', class: 'danger revoke', onclick: () => revoke(k).catch((e) => window.alert(e.message)) }, 'Revoke')))],
  ], keys, { id: 'keys-table' });
  for (const [i, row] of [...t.tBodies[0].rows].entries()) row.dataset.key = keys[i].name;
  return t;
}
