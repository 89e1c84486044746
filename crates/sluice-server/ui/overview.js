// Overview: totals since the gateway started, a live view (the gateway's `/metrics` read
// every few seconds while the page is open: rates, p50/p95 latency, cache hit rate) and
// the last 30 days from the spend log's daily roll-ups (`/admin/spend?by=day`).

import { call } from './api.js';
import { chart } from './chart.js';
import { errorLine, h, tile } from './dom.js';
import * as fmt from './format.js';
import * as prom from './prometheus.js';

const REFRESH_MS = 5000;
/** Live points kept: half an hour at REFRESH_MS. */
const KEEP = 360;

let timer = null;
/** Bumped by `stop`: a render still loading when its page is left starts no timer. */
let generation = 0;

/** What one read of `/metrics` says, in counters since the gateway started. */
function snapshot(text) {
  const s = prom.parse(text);
  const hits = prom.total(s, 'sluice_cache_hits_total') + prom.total(s, 'sluice_cache_coalesced_total');
  return {
    t: Date.now() / 1000,
    requests: prom.total(s, 'sluice_requests_total'),
    errors: prom.total(s, 'sluice_requests_total', (l) => Number(l.status) >= 400),
    latency: prom.buckets(s, 'sluice_request_duration_seconds'),
    tokensIn: prom.total(s, 'sluice_tokens_total', (l) => l.direction === 'in'),
    tokensOut: prom.total(s, 'sluice_tokens_total', (l) => l.direction === 'out'),
    spend: prom.total(s, 'sluice_spend_usd_total'),
    hits,
    lookups: hits + prom.total(s, 'sluice_cache_misses_total'),
    saved: prom.total(s, 'sluice_cache_saved_usd_total'),
  };
}

function tiles(now) {
  return [
    tile('requests', 'Requests', fmt.num(now.requests)),
    tile('errors', 'Errors', `${fmt.num(now.errors)} (${fmt.pct(now.requests ? now.errors / now.requests : 0)})`),
    tile('p50', 'Latency p50', fmt.seconds(prom.quantile(now.latency, 0.5))),
    tile('p95', 'Latency p95', fmt.seconds(prom.quantile(now.latency, 0.95))),
    tile('tokens', 'Tokens in / out', `${fmt.num(now.tokensIn)} / ${fmt.num(now.tokensOut)}`),
    tile('spend', 'Spend', fmt.usd(now.spend)),
    tile('cache-hit-rate', 'Cache hit rate', now.lookups ? fmt.pct(now.hits / now.lookups) : '–'),
    tile('saved', 'Saved by the cache', fmt.usd(now.saved)),
  ];
}

/** The live series: one point per read after the first, each over the interval before it. */
class Live {
  constructor(parent) {
    this.points = [];
    this.first = null;
    this.charts = {
      traffic: chart(parent, 'Requests and errors per second', ['requests/s', 'errors/s'], { fmt: fmt.num }),
      latency: chart(parent, 'Latency p50 and p95', ['p50', 'p95'], { fmt: fmt.seconds }),
      tokens: chart(parent, 'Tokens per second', ['in', 'out'], { fmt: fmt.num }),
      money: chart(parent, 'Spend and cache savings since this page opened', ['spend', 'saved'], { fmt: fmt.usd }),
      cache: chart(parent, 'Cache hit rate', ['hit rate'], { fmt: fmt.pct }),
    };
  }

  add(now) {
    const before = this.points.at(-1)?.snap ?? null;
    this.first ??= now;
    if (before) {
      const dt = Math.max(now.t - before.t, 1e-3);
      const lat = prom.delta(now.latency, before.latency);
      const lookups = now.lookups - before.lookups;
      this.points.push({
        snap: now,
        requests: (now.requests - before.requests) / dt,
        errors: (now.errors - before.errors) / dt,
        p50: prom.quantile(lat, 0.5),
        p95: prom.quantile(lat, 0.95),
        tokensIn: (now.tokensIn - before.tokensIn) / dt,
        tokensOut: (now.tokensOut - before.tokensOut) / dt,
        spend: now.spend - this.first.spend,
        saved: now.saved - this.first.saved,
        hitRate: lookups > 0 ? (now.hits - before.hits) / lookups : null,
      });
    } else {
      this.points.push({ snap: now });
    }
    if (this.points.length > KEEP) this.points.shift();
    this.draw();
  }

  draw() {
    const pts = this.points.slice(1);
    const xs = pts.map((p) => p.snap.t);
    const col = (k) => pts.map((p) => p[k]);
    // At least the last minute, so a first point or two do not stretch the axis.
    const last = xs.at(-1);
    const range = last === undefined ? null : [Math.min(xs[0], last - 60), last];
    this.charts.traffic.set([xs, col('requests'), col('errors')], range);
    this.charts.latency.set([xs, col('p50'), col('p95')], range);
    this.charts.tokens.set([xs, col('tokensIn'), col('tokensOut')], range);
    this.charts.money.set([xs, col('spend'), col('saved')], range);
    this.charts.cache.set([xs, col('hitRate')], range);
  }
}

async function daily(parent) {
  let report;
  try {
    report = await call('/admin/spend?by=day&since=30d');
  } catch (e) {
    parent.append(errorLine(e));
    return;
  }
  const rows = report.rows;
  const xs = rows.map((r) => Date.parse(`${r.group}T00:00:00Z`) / 1000);
  const col = (f) => rows.map(f);
  // The 30 UTC days up to today, half a day either side so the bars fit.
  const today = Math.floor(Date.now() / 86_400_000) * 86_400;
  const xRange = [today - 29.5 * 86_400, today + 0.5 * 86_400];
  chart(parent, 'Requests and errors a day', ['requests', 'errors'], { fmt: fmt.num, bars: true, xRange })
    .set([xs, col((r) => r.requests), col((r) => r.errors)]);
  chart(parent, 'Tokens a day', ['prompt', 'completion'], { fmt: fmt.num, xRange })
    .set([xs, col((r) => r.prompt_tokens), col((r) => r.completion_tokens)]);
  chart(parent, 'Spend a day (USD)', ['spend'], { fmt: fmt.usd, bars: true, xRange })
    .set([xs, col((r) => r.cost_usd)]);
}

export async function render(el) {
  const mine = generation;
  const totals = h('div', { class: 'tiles', id: 'overview-totals' });
  const liveBox = h('div', { class: 'charts' });
  const dailyBox = h('div', { class: 'charts' });
  el.append(
    h('h2', {}, 'Overview'),
    h('p', { class: 'note' }, 'Totals since the gateway started.'),
    totals,
    h('h3', {}, `Live, every ${REFRESH_MS / 1000} s while this page is open`),
    liveBox,
    h('h3', {}, 'Last 30 days, from the daily roll-ups of the spend log'),
    dailyBox,
  );
  const live = new Live(liveBox);
  const status = h('p', { class: 'error', role: 'alert' });
  el.append(status);
  const read = async () => {
    try {
      const now = snapshot(await call('/admin/metrics', { text: true }));
      totals.replaceChildren(...tiles(now));
      live.add(now);
      status.textContent = '';
    } catch (e) {
      status.textContent = e.message;
    }
  };
  await Promise.all([read(), daily(dailyBox)]);
  if (mine !== generation) return;
  // A second read soon after the first starts the live charts without a 5 s wait.
  timer = setTimeout(() => {
    read();
    timer = setInterval(read, REFRESH_MS);
  }, 1000);
}

export function stop() {
  generation += 1;
  clearTimeout(timer);
  clearInterval(timer);
  timer = null;
}
