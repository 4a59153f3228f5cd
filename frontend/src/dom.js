// Building DOM without markup strings. Every value from a DICOM file, the server or a user becomes a
// text node or an attribute value, never HTML: a SeriesDescription of `<img src=x onerror=...>` is
// shown as those characters. Nothing in the viewer parses a string as HTML.

const SVG_NS = 'http://www.w3.org/2000/svg';

function fill(el, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value == null || value === false) continue;
    if (name === 'class') el.setAttribute('class', value);
    else if (name === 'dataset') Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  el.append(...children.flat(Infinity).filter((c) => c != null && c !== false).map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

// h('li', {class: 'finding', dataset: {findingId: 3}}, 'text', h('b', {}, '#1')): attributes are set
// with setAttribute (names are ours, values any string); strings become text nodes.
export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

// The same for SVG elements (overlays on the views): numbers are written as attribute values.
export function svg(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

// Text that came from outside (DICOM, users) in its own bidi isolate: a U+202E (right-to-left
// override) in a SeriesDescription or a label reorders only itself, never the text next to it.
export function isolated(text, attrs = {}) {
  return h('bdi', attrs, text ?? '');
}
