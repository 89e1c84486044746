// Routes: targets with their breaker state and cooldown, the canary's stage with advance,
// promote and rollback. `/admin/routes`, `/admin/health` (`/health/detailed` behind the key: the deployments' breakers),
// `POST /admin/routes/{route}/canary`.

import { call } from './api.js';
import { errorLine, h, table } from './dom.js';
import * as fmt from './format.js';

export async function render(el) {
  const body = h('div');
  el.append(h('h2', {}, 'Routes'), body);
  const refresh = async () => {
    try {
      const [{ routes }, health] = await Promise.all([call('/admin/routes'), call('/admin/health')]);
      const models = new Map(health.models.map((m) => [m.name, m]));
      body.replaceChildren(
        ...(routes.length ? routes.map((r) => route(r, models, refresh)) : [h('p', { class: 'note' }, 'No routes are configured.')]),
        h('h3', {}, 'Deployments'),
        deployments(health.models),
      );
    } catch (e) {
      body.replaceChildren(errorLine(e));
    }
  };
  await refresh();
}

function breaker(m) {
  if (!m) return '–';
  return h('span', {},
    h('span', { class: `badge ${m.breaker}` }, m.breaker),
    m.rate_limited_for_ms ? ` cooling down ${fmt.seconds(m.rate_limited_for_ms / 1000)}` : '');
}

function route(r, models, refresh) {
  const status = h('p', { class: 'error', role: 'alert' });
  const act = (action) => async () => {
    status.textContent = '';
    try {
      await call(`/admin/routes/${encodeURIComponent(r.name)}/canary`, { method: 'POST', body: { action } });
      await refresh();
    } catch (e) {
      status.textContent = e.message;
    }
  };
  const c = r.canary;
  return h('section', { class: 'route', 'data-route': r.name },
    h('h3', {}, `${r.name} `, h('span', { class: 'note' }, `(${r.strategy})`)),
    table([
      ['Target', (t) => t],
      ['Breaker', (t) => breaker(models.get(t))],
      ['Requests', (t) => fmt.num(models.get(t)?.requests)],
      ['Upstream errors', (t) => fmt.num(models.get(t)?.upstream_errors)],
      ['Latency (EWMA)', (t) => fmt.seconds((models.get(t)?.latency_ewma_ms?.total ?? NaN) / 1000)],
    ], r.targets),
    c && h('div', { class: 'canary' },
      h('p', {},
        'Canary ', h('strong', {}, c.target), ': ',
        h('span', { class: 'canary-percent' }, `${c.percent}%`),
        ` of traffic (stage ${c.stage + 1} of ${c.stages.length}: ${c.stages.join('% → ')}%), `,
        `${c.window_failures} failed of ${c.window_requests} in the window, `,
        `${c.rollbacks} rollback${c.rollbacks === 1 ? '' : 's'}`,
        c.last_rollback ? ` (last: ${c.last_rollback})` : ''),
      h('p', { class: 'toolbar' },
        h('button', { type: 'button', class: 'advance', onclick: act('advance') }, 'Advance'),
        h('button', { type: 'button', class: 'promote', onclick: act('promote') }, 'Promote'),
        h('button', { type: 'button', class: 'danger rollback', onclick: act('rollback') }, 'Roll back')),
      status),
  );
}

function deployments(models) {
  return table([
    ['Model', (m) => m.name],
    ['Provider', (m) => m.provider],
    ['Upstream', (m) => m.upstream],
    ['Breaker', breaker],
    ['Requests', (m) => fmt.num(m.requests)],
    ['Upstream errors', (m) => fmt.num(m.upstream_errors)],
    ['TTFT (EWMA)', (m) => fmt.seconds((m.latency_ewma_ms?.ttft ?? NaN) / 1000)],
    ['Latency (EWMA)', (m) => fmt.seconds((m.latency_ewma_ms?.total ?? NaN) / 1000)],
  ], models);
}
