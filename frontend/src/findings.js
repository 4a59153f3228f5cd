// Findings: local state mirrored from the review API, the side panel, and circles drawn on the views.
import { dot, sub, add, scale, norm } from './geometry.js';
import { h, isolated, svg } from './dom.js';

export const STATUS_COLOURS = {
  proposed: [255, 196, 0], accepted: [60, 200, 120], rejected: [230, 80, 90], edited: [80, 170, 255],
};
export const LABELS = ['nodule', 'solid', 'part_solid', 'ground_glass', 'calcified', 'not_nodule'];

const fmt = (v, digits = 1, unit = '') => (v == null || Number.isNaN(v) ? '—' : `${Number(v).toFixed(digits)}${unit}`);

export function findingKey(f) {
  return f.serverId ?? f.id;
}

export function renderList(listEl, findings, selected, emptyText = 'No findings for this series.') {
  const items = findings.map((f, n) => h('li', {
    class: `finding status-${f.status}${f === selected ? ' selected' : ''}`,
    dataset: { findingId: findingKey(f), status: f.status }, tabindex: 0,
  },
  h('div', { class: 'finding-head' },
    h('span', { class: 'swatch' }), h('b', {}, `#${n + 1}`), ' ', isolated(f.label), ' ', h('span', { class: 'status' }, f.status),
    f.source === 'radiologist' && [' ', h('span', { class: 'muted' }, 'added')],
    f.flagged === false && [' ', h('span', { class: 'muted', title: "Scored below the AI's operating point" }, 'candidate')]),
  h('div', { class: 'finding-facts' },
    h('span', { title: 'AI score' }, `score ${fmt(f.score, 2)}`),
    h('span', { title: 'Diameter' }, `⌀ ${fmt(f.diameter_mm, 1, ' mm')}`),
    h('span', { title: 'Volume' }, fmt(f.volume_ml, 3, ' mL')),
    h('span', { title: 'Mean density' }, fmt(f.mean_hu, 0, ' HU')),
    h('span', { title: 'Model uncertainty' }, `unc. ${fmt(f.uncertainty, 2)}`))));
  listEl.replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, emptyText)]));
}

export function renderDetail(el, f, { editable }) {
  if (!f) { el.hidden = true; el.replaceChildren(); return; }
  el.hidden = false;
  const c = f.centre_mm || [0, 0, 0];
  const disabled = !editable;
  const numberInput = (name, value, extra = {}) => h('input', { type: 'number', step: '0.1', name, value, disabled, ...extra });
  el.replaceChildren(
    h('h3', {}, 'Selected finding ', h('span', { class: `status-${f.status}` }, f.status)),
    h('dl', { class: 'facts small' },
      h('dt', {}, 'Source'), h('dd', {}, isolated(f.source), f.model_version ? [' (', isolated(f.model_version), ')'] : null),
      h('dt', {}, 'Centre (LPS)'), h('dd', {}, `${c.map((v) => fmt(v, 1)).join(', ')} mm`),
      h('dt', {}, 'Diameter'), h('dd', {}, `${fmt(f.diameter_mm, 1, ' mm')} (long ${fmt(f.long_axis_mm, 1)}, short ${fmt(f.short_axis_mm, 1)})`),
      h('dt', {}, 'Volume'), h('dd', {}, fmt(f.volume_ml, 3, ' mL')),
      h('dt', {}, 'Mean'), h('dd', {}, fmt(f.mean_hu, 0, ' HU')),
      f.reject_reason && [h('dt', {}, 'Rejected'), h('dd', {}, isolated(f.reject_reason))]),
    h('div', { class: 'row' },
      h('button', { type: 'button', id: 'accept-finding', disabled }, 'Accept (A)'),
      h('button', { type: 'button', id: 'reject-finding', disabled }, 'Reject (R)')),
    h('form', { id: 'reject-form', class: 'row', hidden: true },
      h('input', { id: 'reject-reason', placeholder: 'Reason (optional)', 'aria-label': 'Reject reason' }),
      h('button', { type: 'submit' }, 'Reject')),
    h('label', { class: 'block' }, 'Label ',
      h('select', { id: 'finding-label', disabled },
        LABELS.map((l) => h('option', { value: l, selected: l === f.label }, l.replace('_', ' '))))),
    h('form', { id: 'edit-form', class: 'edit-form' },
      h('label', {}, 'x ', numberInput('x', fmt(c[0], 1))),
      h('label', {}, 'y ', numberInput('y', fmt(c[1], 1))),
      h('label', {}, 'z ', numberInput('z', fmt(c[2], 1))),
      h('label', {}, '⌀ mm ', numberInput('diameter', fmt(f.diameter_mm, 1), { min: '0.5' })),
      h('button', { type: 'submit', disabled }, 'Save centre / diameter'),
      h('button', { type: 'button', id: 'centre-here', disabled, title: 'Use the crosshair point as the centre' }, 'Centre at crosshair')),
    h('label', { class: 'block' }, 'Comment ', h('textarea', { id: 'finding-comment', rows: 2, disabled }, f.comment ?? '')),
    h('button', { type: 'button', id: 'finding-comment-save', disabled }, 'Save comment'));
}

// Where the plane of a view cuts each finding's sphere: [{f, idx, cx, cy, r}] in canvas pixels
// (r: the radius of the circle drawn, which is what a click has to hit).
export function findingCircles(viewer, name, findings) {
  const vp = viewer.engine.getViewport(name);
  if (!vp) return [];
  const cam = vp.getCamera();
  const n = cam.viewPlaneNormal;
  const up = cam.viewUp;
  let focal = cam.focalPoint;
  if (name === 'stack') focal = viewer.series.geometry.positions[vp.getCurrentImageIdIndex()];
  const out = [];
  findings.forEach((f, idx) => {
    if (!f.centre_mm || !f.diameter_mm) return;
    const r = f.diameter_mm / 2;
    const d = dot(sub(f.centre_mm, focal), n);
    if (Math.abs(d) > r) return;
    const inPlane = Math.sqrt(r * r - d * d);
    const centre = sub(f.centre_mm, scale(n, d));
    const [cx, cy] = vp.worldToCanvas(centre);
    const [ex, ey] = vp.worldToCanvas(add(centre, scale(up, Math.max(inPlane, 0.5))));
    out.push({ f, idx, cx, cy, r: Math.max(3, norm([ex - cx, ey - cy, 0])) + 3 });
  });
  return out;
}

// The finding whose drawn circle contains canvas point (x, y); the smallest one when circles nest.
export function findingAt(viewer, name, findings, x, y) {
  const hits = findingCircles(viewer, name, findings)
    .filter((c) => (c.cx - x) ** 2 + (c.cy - y) ** 2 <= c.r * c.r)
    .sort((a, b) => a.r - b.r);
  return hits[0]?.f ?? null;
}

// Circles where the plane of a view cuts each finding's sphere, coloured by status.
export function drawOverlay(el, viewer, name, findings, selected) {
  if (!viewer.engine.getViewport(name)) { el.replaceChildren(); return; }
  const rect = el.getBoundingClientRect();
  el.setAttribute('viewBox', `0 0 ${rect.width} ${rect.height}`);
  const shapes = [];
  for (const { f, idx, cx, cy, r } of findingCircles(viewer, name, findings)) {
    const [cr, cg, cb] = STATUS_COLOURS[f.status] || [255, 255, 255];
    const colour = `rgb(${cr},${cg},${cb})`;
    shapes.push(svg('circle', {
      cx: cx.toFixed(1), cy: cy.toFixed(1), r: r.toFixed(1), fill: 'none', stroke: colour,
      'stroke-width': f === selected ? 2.5 : 1.5, 'stroke-dasharray': f.status === 'rejected' ? '4 3' : null,
    }));
    shapes.push(svg('text', { x: (cx + r + 3).toFixed(1), y: (cy - r + 1).toFixed(1), fill: colour, 'font-size': 12 },
      `#${idx + 1} ${Number(f.diameter_mm).toFixed(1)} mm`));
  }
  el.replaceChildren(...shapes);
}
