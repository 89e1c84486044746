// The request log: the spend log newest first, filtered by key, model, route, provider,
// endpoint, status and period (`/admin/requests`), a page at a time by cursor. A search
// that examined its bound of records before the page filled says how far back it looked and
// offers to look further. With payload sampling on (`[observability] sample_rate`), each row
// offers its request's sample (`/admin/samples?request_id=`): the body as sent upstream and
// the answer, secrets and redacted values replaced.

import { call } from './api.js';
import { errorLine, h, table } from './dom.js';
import * as fmt from './format.js';

const FILTERS = [
  ['key', 'Key (id or name)'],
  ['model', 'Model'],
  ['route', 'Route'],
  ['provider', 'Provider'],
  ['endpoint', 'Endpoint'],
];

const COLUMNS = [
  ['Time', (r) => new Date(r.ts_ms).toLocaleString()],
  ['Request id', (r) => r.request_id],
  ['Key', (r) => r.key_name ?? r.key_id ?? '–'],
  ['Endpoint', (r) => r.endpoint],
  ['Route', (r) => r.route ?? '–'],
  ['Model', (r) => r.model ?? '–'],
  ['Provider', (r) => r.provider ?? '–'],
  ['Status', (r) => String(r.status)],
  ['Tokens in / out', (r) => `${fmt.num(r.prompt_tokens)} / ${fmt.num(r.completion_tokens)}`],
  ['Cost', (r) => fmt.usd(r.cost_usd)],
  ['Latency', (r) => `${fmt.num(r.latency_ms)} ms`],
  ['Cache', (r) => r.cache],
  ['Attempts', (r) => String(r.attempts)],
];

/** Whether the gateway samples payloads (`/admin/samples` answers 400 when it does not). */
async function sampling() {
  try {
    await call('/admin/samples?limit=1');
    return true;
  } catch {
    return false;
  }
}

/** Request `id`'s sample, shown in `view`: the request and the answer, or why there is none. */
async function showSample(view, id) {
  view.replaceChildren(h('p', { class: 'note' }, `Loading the payload of ${id}…`));
  try {
    const page = await call(`/admin/samples?${new URLSearchParams({ request_id: id })}`);
    const s = page.data[0];
    if (!s) {
      view.replaceChildren(h('p', { class: 'note' }, `${id} was not sampled (or its sample expired).`));
      return;
    }
    const pretty = (v) => h('pre', {}, JSON.stringify(v, null, 2));
    view.replaceChildren(
      h('h3', {}, `Payload of ${id}`),
      h('p', { class: 'note' },
        `${s.endpoint} · ${s.model}${s.route ? ` via ${s.route}` : ''} · answered by ${s.deployment ?? '–'}`,
        s.canary ? ' (canary)' : '', ` · ${s.status}`),
      h('h4', {}, 'Request (as sent upstream)'), pretty(s.request),
      h('h4', {}, 'Answer'),
      s.response == null ? h('p', { class: 'note' }, 'Not kept (a stream, or an error).') : pretty(s.response));
  } catch (e) {
    view.replaceChildren(errorLine(e));
  }
}

/** A `datetime-local` value (local time) as UTC `YYYY-MM-DDTHH:MM`, or '' when empty. */
function utc(value) {
  if (!value) return '';
  return new Date(value).toISOString().slice(0, 16);
}

export async function render(el) {
  const form = h('form', { class: 'toolbar', id: 'requests-form' },
    FILTERS.map(([name, label]) => h('label', {}, label, h('input', { name, type: 'text', size: 12 }))),
    h('label', {}, 'Status', h('select', { name: 'status' },
      [['', 'any'], ['ok', 'ok (< 400)'], ['errors', 'errors (≥ 400)'], ['429', '429'], ['499', '499'], ['502', '502']]
        .map(([value, label]) => h('option', { value }, label)))),
    h('label', {}, 'From', h('input', { type: 'datetime-local', name: 'from' })),
    h('label', {}, 'To', h('input', { type: 'datetime-local', name: 'to' })),
    h('button', { type: 'submit', class: 'primary' }, 'Show'));
  const result = h('div', { id: 'requests-result' });
  const more = h('button', { type: 'button', id: 'requests-more', hidden: true }, 'Older');
  const note = h('p', { class: 'note', id: 'requests-note' });
  const view = h('div', { id: 'sample-view' });
  el.append(h('h2', {}, 'Requests'), form, note, result, more, view);
  const columns = (await sampling())
    ? COLUMNS.concat([['Payload', (r) => h('button', {
      type: 'button', class: 'sample', onclick: () => showSample(view, r.request_id),
    }, 'Show')]])
    : COLUMNS;

  let query = null;
  let cursor = null;
  let rows = [];
  const load = async (append) => {
    const params = new URLSearchParams(query);
    if (append && cursor) params.set('cursor', cursor);
    try {
      const page = await call(`/admin/requests?${params}`);
      rows = append ? rows.concat(page.data) : page.data;
      cursor = page.next_cursor;
      result.replaceChildren(table(columns, rows, { id: 'requests-table' }));
      more.hidden = !cursor;
      more.textContent = page.partial ? 'Search further back' : 'Older';
      note.textContent = page.partial
        ? `${rows.length} shown; searched back to ${new Date(page.searched_to_ms).toLocaleString()}.`
        : `${rows.length} shown${cursor ? '' : ', the end of the log'}.`;
    } catch (e) {
      more.hidden = true;
      note.textContent = '';
      result.replaceChildren(errorLine(e));
    }
  };
  const submit = () => {
    query = {};
    for (const [name] of FILTERS) {
      const v = form.elements[name].value.trim();
      if (v) query[name] = v;
    }
    if (form.elements.status.value) query.status = form.elements.status.value;
    const from = utc(form.elements.from.value);
    const to = utc(form.elements.to.value);
    if (from) query.from = from;
    if (to) query.to = to;
    cursor = null;
    return load(false);
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  more.addEventListener('click', () => load(true));
  await submit();
}
