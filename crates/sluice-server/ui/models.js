// Local models (`type = "local"` providers): the pool's memory against its budget, each
// model's state, engine, size and idle time (`/admin/health`'s `local`, as `/health/detailed` says it), and load and
// unload buttons (`POST /admin/local/models/{name}/load|unload`).

import { call } from './api.js';
import { errorLine, h, table, tile } from './dom.js';
import * as fmt from './format.js';

let timer = null;
/** Bumped by `stop`: a render still loading when its page is left starts no timer. */
let generation = 0;

export async function render(el) {
  const mine = generation;
  const body = h('div');
  const status = h('p', { class: 'error', role: 'alert', id: 'models-status' });
  el.append(h('h2', {}, 'Local models'), status, body);
  const act = (name, action) => async () => {
    status.textContent = action === 'load' ? `Loading ${name}…` : '';
    try {
      await call(`/admin/local/models/${encodeURIComponent(name)}/${action}`, { method: 'POST' });
      status.textContent = '';
    } catch (e) {
      status.textContent = e.message;
    }
    await refresh();
  };
  const refresh = async () => {
    try {
      const { local } = await call('/admin/health');
      body.replaceChildren(...(local ? pool(local, act) : [h('p', { class: 'note' }, 'No local models are configured (no provider of `type = "local"`).')]));
    } catch (e) {
      body.replaceChildren(errorLine(e));
    }
  };
  await refresh();
  if (mine === generation) timer = setInterval(refresh, 5000);
}

export function stop() {
  generation += 1;
  clearInterval(timer);
  timer = null;
}

function pool(local, act) {
  const share = local.memory_budget ? local.memory_used / local.memory_budget : 0;
  return [
    h('div', { class: 'tiles' },
      tile('local-memory', 'Memory used / budget', `${fmt.bytes(local.memory_used)} / ${fmt.bytes(local.memory_budget)}`),
      tile('local-memory-share', 'Of the budget', fmt.pct(share)),
      tile('local-loaded', 'Loaded', `${local.models.filter((m) => m.state !== 'unloaded').length} of ${local.models.length}`)),
    h('meter', { min: 0, max: 1, value: share, high: 0.8, class: 'budget' }),
    table([
      ['Model', (m) => m.name],
      ['Kind', (m) => m.kind ?? '–'],
      ['State', (m) => h('span', { class: `badge ${m.state}` }, m.state)],
      ['Engine', (m) => m.engine ?? '–'],
      ['Size', (m) => fmt.bytes(m.bytes_measured ?? m.bytes_estimated)],
      ['Counted', (m) => fmt.bytes(m.bytes_reserved)],
      ['Context', (m) => fmt.num(m.context_length)],
      ['In flight', (m) => fmt.num(m.in_flight)],
      ['Idle', (m) => fmt.duration(m.idle_seconds)],
      ['Unloads in', (m) => (m.pinned ? 'pinned' : fmt.duration(m.unloads_in_seconds))],
      ['', (m) => (m.state === 'unloaded'
        ? h('button', { type: 'button', class: 'load', onclick: act(m.name, 'load') }, 'Load')
        : h('button', { type: 'button', class: 'unload', disabled: m.state !== 'loaded', onclick: act(m.name, 'unload') }, 'Unload'))],
    ], local.models, { id: 'local-models' }),
  ];
}
