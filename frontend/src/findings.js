// Findings: local state mirrored from the review API, the side panel, and circles drawn on the views.
import { dot, sub, add, scale, norm } from './geometry.js';

export const STATUS_COLOURS = {
  proposed: [255, 196, 0], accepted: [60, 200, 120], rejected: [230, 80, 90], edited: [80, 170, 255],
};
export const LABELS = ['nodule', 'solid', 'part_solid', 'ground_glass', 'calcified', 'not_nodule'];

const fmt = (v, digits = 1, unit = '') => (v == null || Number.isNaN(v) ? '—' : `${Number(v).toFixed(digits)}${unit}`);
const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));

export function findingKey(f) {
  return f.serverId ?? f.id;
}

export function renderList(listEl, findings, selected, emptyText = 'No findings for this series.') {
  listEl.innerHTML = findings.map((f, n) => {
    const key = findingKey(f);
    return `<li class="finding status-${f.status}${f === selected ? ' selected' : ''}" data-finding-id="${esc(key)}" data-status="${f.status}" tabindex="0">
      <div class="finding-head"><span class="swatch"></span><b>#${n + 1}</b> ${esc(f.label)} <span class="status">${esc(f.status)}</span>
      ${f.source === 'radiologist' ? '<span class="muted">added</span>' : ''}
      ${f.flagged === false ? '<span class="muted" title="Scored below the AI\'s operating point">candidate</span>' : ''}</div>
      <div class="finding-facts">
        <span title="AI score">score ${fmt(f.score, 2)}</span>
        <span title="Diameter">⌀ ${fmt(f.diameter_mm, 1, ' mm')}</span>
        <span title="Volume">${fmt(f.volume_ml, 3, ' mL')}</span>
        <span title="Mean density">${fmt(f.mean_hu, 0, ' HU')}</span>
        <span title="Model uncertainty">unc. ${fmt(f.uncertainty, 2)}</span>
      </div></li>`;
  }).join('') || `<li class="muted">${esc(emptyText)}</li>`;
}

export function renderDetail(el, f, { editable }) {
  if (!f) { el.hidden = true; el.innerHTML = ''; return; }
  el.hidden = false;
  const c = f.centre_mm || [0, 0, 0];
  const dis = editable ? '' : 'disabled';
  el.innerHTML = `
    <h3>Selected finding <span class="status-${f.status}">${esc(f.status)}</span></h3>
    <dl class="facts small">
      <dt>Source</dt><dd>${esc(f.source)}${f.model_version ? ` (${esc(f.model_version)})` : ''}</dd>
      <dt>Centre (LPS)</dt><dd>${c.map((v) => fmt(v, 1)).join(', ')} mm</dd>
      <dt>Diameter</dt><dd>${fmt(f.diameter_mm, 1, ' mm')} (long ${fmt(f.long_axis_mm, 1)}, short ${fmt(f.short_axis_mm, 1)})</dd>
      <dt>Volume</dt><dd>${fmt(f.volume_ml, 3, ' mL')}</dd>
      <dt>Mean</dt><dd>${fmt(f.mean_hu, 0, ' HU')}</dd>
      ${f.reject_reason ? `<dt>Rejected</dt><dd>${esc(f.reject_reason)}</dd>` : ''}
    </dl>
    <div class="row">
      <button type="button" id="accept-finding" ${dis}>Accept (A)</button>
      <button type="button" id="reject-finding" ${dis}>Reject (R)</button>
    </div>
    <form id="reject-form" class="row" hidden>
      <input id="reject-reason" placeholder="Reason (optional)" aria-label="Reject reason">
      <button type="submit">Reject</button>
    </form>
    <label class="block">Label <select id="finding-label" ${dis}>
      ${LABELS.map((l) => `<option value="${l}" ${l === f.label ? 'selected' : ''}>${l.replace('_', ' ')}</option>`).join('')}
    </select></label>
    <form id="edit-form" class="edit-form">
      <label>x <input type="number" step="0.1" name="x" value="${fmt(c[0], 1)}" ${dis}></label>
      <label>y <input type="number" step="0.1" name="y" value="${fmt(c[1], 1)}" ${dis}></label>
      <label>z <input type="number" step="0.1" name="z" value="${fmt(c[2], 1)}" ${dis}></label>
      <label>⌀ mm <input type="number" step="0.1" min="0.5" name="diameter" value="${fmt(f.diameter_mm, 1)}" ${dis}></label>
      <button type="submit" ${dis}>Save centre / diameter</button>
      <button type="button" id="centre-here" ${dis} title="Use the crosshair point as the centre">Centre at crosshair</button>
    </form>
    <label class="block">Comment <textarea id="finding-comment" rows="2" ${dis}>${esc(f.comment)}</textarea></label>
    <button type="button" id="finding-comment-save" ${dis}>Save comment</button>`;
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
export function drawOverlay(svg, viewer, name, findings, selected) {
  if (!viewer.engine.getViewport(name)) { svg.innerHTML = ''; return; }
  const rect = svg.getBoundingClientRect();
  svg.setAttribute('viewBox', `0 0 ${rect.width} ${rect.height}`);
  let out = '';
  for (const { f, idx, cx, cy, r } of findingCircles(viewer, name, findings)) {
    const [cr, cg, cb] = STATUS_COLOURS[f.status] || [255, 255, 255];
    const dash = f.status === 'rejected' ? 'stroke-dasharray="4 3"' : '';
    const width = f === selected ? 2.5 : 1.5;
    out += `<circle cx="${cx.toFixed(1)}" cy="${cy.toFixed(1)}" r="${r.toFixed(1)}" fill="none" stroke="rgb(${cr},${cg},${cb})" stroke-width="${width}" ${dash}/>`;
    out += `<text x="${(cx + r + 3).toFixed(1)}" y="${(cy - r + 1).toFixed(1)}" fill="rgb(${cr},${cg},${cb})" font-size="12">#${idx + 1} ${Number(f.diameter_mm).toFixed(1)} mm</text>`;
  }
  svg.innerHTML = out;
}
