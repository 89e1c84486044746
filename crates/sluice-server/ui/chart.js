// Line and bar charts over time, drawn by uPlot (vendor/uplot-1.6.32, loaded before the
// modules as the global `uPlot`).

import { h } from './dom.js';

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea'];

/**
 * A chart titled `title` in `parent`, one series per label; `set([xs, ...ys])` redraws it
 * (x in Unix seconds). `fmt` formats the values; `bars` draws bars (one a day, say);
 * `xRange` fixes the x axis (`[from, to]`, Unix seconds) whatever the data covers.
 */
export function chart(parent, title, labels, { fmt = String, bars = false, xRange = null } = {}) {
  const figure = h('figure', { class: 'chart' }, h('figcaption', {}, title));
  parent.append(figure);
  const width = Math.max(320, figure.clientWidth - 16);
  const series = labels.map((label, i) => ({
    label,
    stroke: COLORS[i % COLORS.length],
    width: 2,
    fill: bars ? `${COLORS[i % COLORS.length]}55` : undefined,
    // At most a 40th of the width: one bar in a month is a day wide, not the whole chart.
    paths: bars ? window.uPlot.paths.bars({ size: [0.6, Math.max(4, width / 40)], gap: 2 }) : undefined,
    value: (_, v) => (v == null ? '–' : fmt(v)),
  }));
  const plot = new window.uPlot({
    width,
    height: 180,
    series: [{}, ...series],
    axes: [{}, { size: 80, values: (_, ticks) => ticks.map(fmt) }],
    scales: {
      x: xRange ? { time: true, range: () => xRange } : { time: true },
      y: { range: (_, min, max) => [Math.min(0, min ?? 0), max > 0 ? max * 1.1 : 1] },
    },
  }, [[], ...labels.map(() => [])], figure);
  return {
    /** New data; `range` (`[from, to]`, Unix seconds) sets the x axis for it. */
    set: (data, range) => {
      plot.setData(data);
      if (range) plot.setScale('x', { min: range[0], max: range[1] });
    },
    destroy: () => plot.destroy(),
  };
}
