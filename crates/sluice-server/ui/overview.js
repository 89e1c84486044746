// Overview: totals since the gateway started (the gateway's `/metrics`), the last 24 hours
// a minute at a time from the gateway's memory (`/admin/history`: requests, errors, p50/p95
// latency, tokens, spend, cache hit rate and savings), both read again every few seconds
// while the page is open, and the last 30 days from the spend log's daily roll-ups
// (`/admin/spend?by=day`).

import { call } from './api.js';
import { chart } from './chart.js';
import { errorLine, h, tile } from './dom.js';
import * as fmt from './format.js';
import * as prom from './prometheus.js';

const REFRESH_MS = 5000;
let timer = null;
/** Bumped by `stop`: a render still loading when its page is left starts no timer. */
let generation = 0;

/** What one read of `/metrics` says, in counters since the gateway started. */
function snapshot(text) {
  const s = prom.parse(text);
  const hits = prom.total(s, 'sluice_cache_hits_total') + prom.total(s, 'sluice_cache_coalesced_total');
  return {
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

/** Points the history keeps: the server's 24 hours, a minute each. */
const DAY_MINUTES = 1440;

/**
 * The last 24 hours, a point a minute, from the gateway's memory (`/admin/history`): drawn
 * whole when the page opens (a reload loses nothing), then its last two minutes read again
 * every few seconds, so the minute in progress grows and new minutes arrive.
 */
class History {
  /** Charts in `parent`, the sums of what they show in `summary`. */
  constructor(parent, summary) {
    this.points = [];
    this.summary = summary;
    this.charts = {
      traffic: chart(parent, 'Requests and errors a minute', ['requests', 'errors'], { fmt: fmt.num }),
      latency: chart(parent, 'Latency p50 and p95', ['p50', 'p95'], { fmt: fmt.seconds }),
      tokens: chart(parent, 'Tokens a minute', ['in', 'out'], { fmt: fmt.num }),
      money: chart(parent, 'Spend and cache savings a minute', ['spend', 'saved'], { fmt: fmt.usd }),
      cache: chart(parent, 'Cache hit rate', ['hit rate'], { fmt: fmt.pct }),
    };
  }

  /** Reads the last `minutes` minutes and merges them in (a minute read again replaces its point). */
  async read(minutes) {
    const answer = await call(`/admin/history?minutes=${minutes}`);
    const fresh = new Map(answer.points.map((p) => [p.t, p]));
    const kept = this.points.filter((p) => !fresh.has(p.t));
    const latest = answer.points.at(-1)?.t ?? 0;
    this.points = [...kept, ...answer.points]
      .filter((p) => p.t > latest - DAY_MINUTES * 60)
      .sort((a, b) => a.t - b.t);
    this.draw();
  }

  draw() {
    const pts = this.points;
    const xs = pts.map((p) => p.t);
    const col = (k) => pts.map((p) => p[k]);
    const total = pts.reduce((n, p) => n + p.requests, 0);
    const errors = pts.reduce((n, p) => n + p.errors, 0);
    this.summary.textContent = `${fmt.num(total)} requests (${fmt.num(errors)} errors) in the last `
      + `${pts.length} minute${pts.length === 1 ? '' : 's'} this gateway has kept (at most 24 hours; `
      + 'a restart starts again).';
    // At least the last ten minutes, so a first point or two do not stretch the axis.
    const last = xs.at(-1);
    const range = last === undefined ? null : [Math.min(xs[0], last - 600), last + 60];
    this.charts.traffic.set([xs, col('requests'), col('errors')], range);
    this.charts.latency.set([xs, col('p50_seconds'), col('p95_seconds')], range);
    this.charts.tokens.set([xs, col('tokens_in'), col('tokens_out')], range);
    this.charts.money.set([xs, col('spend_usd'), col('saved_usd')], range);
    this.charts.cache.set([xs, col('cache_hit_rate')], range);
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
  const historyBox = h('div', { class: 'charts', id: 'overview-history' });
  const summary = h('p', { class: 'note', id: 'history-summary' });
  const dailyBox = h('div', { class: 'charts' });
  el.append(
    h('h2', {}, 'Overview'),
    h('p', { class: 'note' }, 'Totals since the gateway started.'),
    totals,
    h('h3', {}, `Last 24 hours, a minute at a time, from the gateway's memory (read every ${REFRESH_MS / 1000} s while this page is open)`),
    summary,
    historyBox,
    h('h3', {}, 'Last 30 days, from the daily roll-ups of the spend log'),
    dailyBox,
  );
  const history = new History(historyBox, summary);
  const status = h('p', { class: 'error', role: 'alert' });
  el.append(status);
  const read = async (minutes) => {
    try {
      const [text] = await Promise.all([call('/admin/metrics', { text: true }), history.read(minutes)]);
      totals.replaceChildren(...tiles(snapshot(text)));
      status.textContent = '';
    } catch (e) {
      status.textContent = e.message;
    }
  };
  await Promise.all([read(DAY_MINUTES), daily(dailyBox)]);
  if (mine !== generation) return;
  timer = setInterval(() => read(2), REFRESH_MS);
}

export function stop() {
  generation += 1;
  clearInterval(timer);
  timer = null;
}
