// Spend by key, model, provider, route or day over a range of UTC days, from the spend log
// (`/admin/spend?by=…&from=…&to=…`), with a CSV export of the table shown.

import { call } from './api.js';
import { errorLine, h, table } from './dom.js';
import * as fmt from './format.js';

const COLUMNS = [
  ['requests', 'Requests', fmt.num],
  ['errors', 'Errors', fmt.num],
  ['prompt_tokens', 'Prompt tokens', fmt.num],
  ['completion_tokens', 'Completion tokens', fmt.num],
  ['cached_tokens', 'Cached tokens', fmt.num],
  ['cache_write_tokens', 'Cache writes', fmt.num],
  ['reasoning_tokens', 'Reasoning tokens', fmt.num],
  ['cost_usd', 'Cost (USD)', fmt.usd],
];

const isoDay = (d) => d.toISOString().slice(0, 10);

/**
 * A CSV field: quoted when it holds a comma, quote or line break; a name that a spreadsheet
 * would run as a formula (`=`, `+`, `-`, `@` first) is defused with a leading `'`.
 */
function csvField(v) {
  let s = String(v ?? '');
  if (typeof v === 'string' && s !== '-' && /^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function toCsv(by, rows) {
  const lines = [[by, ...COLUMNS.map(([k]) => k)].map(csvField).join(',')];
  for (const r of rows) lines.push([r.group, ...COLUMNS.map(([k]) => r[k])].map(csvField).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

export async function render(el) {
  const today = new Date();
  const weekAgo = new Date(today.getTime() - 6 * 86_400_000);
  const form = h('form', { class: 'toolbar', id: 'spend-form' },
    h('label', {}, 'Group by', h('select', { name: 'by' },
      ['key', 'model', 'provider', 'route', 'day'].map((b) => h('option', { value: b }, b)))),
    h('label', {}, 'From (UTC day)', h('input', { type: 'date', name: 'from', value: isoDay(weekAgo), required: true })),
    h('label', {}, 'To (UTC day)', h('input', { type: 'date', name: 'to', value: isoDay(today), required: true })),
    h('button', { type: 'submit', class: 'primary' }, 'Show'),
    h('button', { type: 'button', id: 'spend-csv', disabled: true }, 'Export CSV'));
  const csv = form.querySelector('#spend-csv');
  const result = h('div', { id: 'spend-result' });
  el.append(h('h2', {}, 'Spend'), form, result);
  let shown = null;
  const load = async () => {
    const by = form.elements.by.value;
    const query = new URLSearchParams({ by, from: form.elements.from.value, to: form.elements.to.value });
    try {
      const report = await call(`/admin/spend?${query}`);
      shown = report;
      csv.disabled = false;
      result.replaceChildren(
        h('p', { class: 'note' },
          `Total ${fmt.usd(report.total_usd)}, from the ${report.from_rollups ? 'daily roll-ups' : 'raw spend log'}.`),
        table([[by, (r) => r.group], ...COLUMNS.map(([k, label, f]) => [label, (r) => f(r[k])])],
          report.rows, { id: 'spend-table' }));
    } catch (e) {
      shown = null;
      csv.disabled = true;
      result.replaceChildren(errorLine(e));
    }
  };
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    load();
  });
  csv.addEventListener('click', () => {
    if (!shown) return;
    const blob = new Blob([toCsv(shown.by, shown.rows)], { type: 'text/csv' });
    const a = h('a', { href: URL.createObjectURL(blob), download: `sluice-spend-by-${shown.by}-${form.elements.from.value}-${form.elements.to.value}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  await load();
}
