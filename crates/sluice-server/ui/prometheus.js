// Reading sluice's `/metrics` (Prometheus text): samples, sums and histogram quantiles.

/** The samples of a text exposition: `{name, labels, value}`. */
export function parse(text) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** The sum of the series `name` whose labels pass `keep`. */
export function total(samples, name, keep = () => true) {
  let sum = 0;
  for (const s of samples) if (s.name === name && keep(s.labels)) sum += s.value;
  return sum;
}

/** A histogram's cumulative buckets summed over its series: `[[le, count]]`, by `le`. */
export function buckets(samples, name) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return [...byLe].sort((a, b) => a[0] - b[0]);
}

/**
 * The `q` quantile of cumulative buckets, interpolated inside its bucket as Prometheus'
 * `histogram_quantile` does; `null` without observations.
 */
export function quantile(bks, q) {
  const count = bks.length ? bks[bks.length - 1][1] : 0;
  if (!count) return null;
  const rank = q * count;
  let [lower, below] = [0, 0];
  for (const [le, c] of bks) {
    if (c >= rank) {
      if (le === Infinity) return lower;
      return c === below ? le : lower + ((le - lower) * (rank - below)) / (c - below);
    }
    [lower, below] = [le, c];
  }
  return lower;
}
