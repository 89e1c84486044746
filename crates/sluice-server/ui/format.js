// How numbers read.

const plain = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });

export const num = (v) => (v == null || Number.isNaN(v) ? '–' : plain.format(v));
/** USD: cents from a cent up, two significant digits below (requests cost fractions of one). */
export function usd(v) {
  if (v == null || Number.isNaN(v)) return '–';
  if (v === 0) return '$0';
  return Math.abs(v) >= 0.01 ? `$${v.toFixed(2)}` : `$${v.toPrecision(2)}`;
}
export const pct = (v) => (v == null || Number.isNaN(v) ? '–' : `${(v * 100).toFixed(1)}%`);

/** Seconds as ms or s. */
export function seconds(v) {
  if (v == null || Number.isNaN(v)) return '–';
  return v < 1 ? `${(v * 1000).toFixed(v < 0.01 ? 2 : 0)} ms` : `${v.toFixed(2)} s`;
}

/** Whole seconds as `42 s`, `3 min 5 s`, `2 h 10 min`. */
export function duration(s) {
  if (s == null) return '–';
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function bytes(v) {
  if (v == null) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A Unix time in seconds as a local date and time. */
export const when = (s) => (s == null ? '–' : new Date(s * 1000).toLocaleString());
