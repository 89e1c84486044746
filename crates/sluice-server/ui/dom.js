// Building the page without innerHTML: every value from the API goes in as text.

/**
 * An element: `attrs` are attributes, except `on…` functions (listeners); `children` are
 * nodes or text (null and false skipped).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (typeof value === 'function') el.addEventListener(name.slice(2), value);
    else if (value === true) el.setAttribute(name, '');
    else if (value !== false && value != null) el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** A table: `columns` are `[heading, row => cell]`. */
export function table(columns, rows, attrs = {}) {
  return h('table', attrs,
    h('thead', {}, h('tr', {}, columns.map(([heading]) => h('th', {}, heading)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map(([, cell]) => h('td', {}, cell(row)))))),
  );
}

/** A labelled number: `data-metric` names it for scripts and tests. */
export function tile(metric, label, value) {
  return h('div', { class: 'tile', 'data-metric': metric }, h('span', {}, label), h('strong', {}, value));
}

/** An error line for a failed call. */
export function errorLine(error) {
  return h('p', { class: 'error', role: 'alert' }, error.message ?? String(error));
}
