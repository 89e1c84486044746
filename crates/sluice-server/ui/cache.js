// The response cache: entries, hit rate, savings, and clearing it. `/admin/cache`.

import { call } from './api.js';
import { errorLine, h, tile } from './dom.js';
import * as fmt from './format.js';

export async function render(el) {
  const body = h('div');
  el.append(h('h2', {}, 'Cache'), body);
  const refresh = async () => {
    let c;
    try {
      c = await call('/admin/cache');
    } catch (e) {
      body.replaceChildren(errorLine(e));
      return;
    }
    if (!c.enabled) {
      body.replaceChildren(h('p', { class: 'note' }, 'The cache is off (`[cache] enabled = false`).'));
      return;
    }
    const s = c.store;
    const lookups = (s.hits ?? 0) + (s.misses ?? 0);
    const status = h('p', { role: 'status' });
    const clear = async () => {
      if (!window.confirm('Drop every cached answer, in memory and in the store?')) return;
      try {
        const { removed } = await call('/admin/cache', { method: 'DELETE' });
        await refresh();
        body.append(h('p', { role: 'status', id: 'cache-cleared' }, `Cleared: ${fmt.num(removed)} entries removed.`));
      } catch (e) {
        status.textContent = e.message;
      }
    };
    body.replaceChildren(
      s.error ? errorLine({ message: `The store failed: ${s.error}` }) : null,
      h('div', { class: 'tiles' },
        tile('cache-entries', `Entries (${c.store_kind})`, fmt.num(s.entries)),
        tile('cache-bytes', 'Size', fmt.bytes(s.bytes)),
        tile('cache-memory', 'In memory', `${fmt.num(c.memory.entries)} / ${fmt.bytes(c.memory.bytes)}`),
        tile('cache-hits', 'Hits / misses', `${fmt.num(s.hits)} / ${fmt.num(s.misses)}`),
        tile('cache-hit-rate', 'Hit rate', lookups ? fmt.pct(s.hits / lookups) : '–'),
        tile('cache-saved', 'Saved', fmt.usd(s.saved_usd)),
        tile('cache-saved-time', 'Upstream time saved', fmt.seconds((s.saved_ms ?? 0) / 1000))),
      h('p', { class: 'toolbar' }, h('button', { type: 'button', class: 'danger', id: 'cache-clear', onclick: clear }, 'Clear the cache')),
      status,
    );
  };
  await refresh();
}
