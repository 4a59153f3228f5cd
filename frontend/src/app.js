// RadLoop CT viewer proper, loaded by the page's entry (main.js) once the first image is painted:
// opens the study's series in Cornerstone, wires the findings panel, keyboard and mouse, and exposes
// window.radloopViewer for tests and benchmarks.
import './csp.js'; // first: before Cornerstone draws anything
import { HttpError, getJSON } from './api.js';
import { CTViewer, PRESETS, initCornerstone } from './viewer.js';
import { defaultSeries, listSeries, loadSeries } from './series.js';
import { viewerShown } from './firstpaint.js';
import { FindingLabelmap } from './labelmap.js';
import { STATUS_COLOURS, drawOverlay, findingAt, findingKey, renderDetail, renderList } from './findings.js';
import { SaveQueue } from './queue.js';
import { h, isolated } from './dom.js';

let config;
const $ = (sel) => document.querySelector(sel);
const app = $('#viewer-app');
const SAVE_TEXT = { idle: '', saving: 'saving…', saved: 'saved', offline: 'offline, will retry', retrying: 'offline, will retry', conflict: 'not saved: conflict' };

export const SHORTCUTS = [
  ['Mouse wheel, ↑ / ↓, PgUp / PgDn, scrollbar', 'Scroll slices (down: towards the feet; Shift: 10 slices)'],
  ['Home / End', 'First / last slice'],
  ['Left drag', 'Active tool (window/level by default)'],
  ['Right drag / middle drag', 'Zoom / pan'],
  ['1 / 2 / 3 / 4', 'Window presets: lung -600/1500, mediastinum 50/350, bone 500/2000, abdomen 40/400'],
  ['W / P / Z', 'Tool: window/level, pan, zoom'],
  ['L', 'Length measurement (mm)'],
  ['C', 'Crosshairs (MPR)'],
  ['Space', 'Reset zoom, pan and window'],
  ['J / K', 'Next / previous finding (all views jump to it)'],
  ['A', 'Accept the selected finding'],
  ['R', 'Reject the selected finding (optional reason, Enter to confirm)'],
  ['B / E', 'Brush / eraser on the selected finding\'s mask'],
  ['[ / ]', 'Smaller / larger brush'],
  ['T', 'Brush only inside the HU window on / off'],
  ['N', 'Add a missed finding (click its centre)'],
  ['Ctrl+Z / Ctrl+Y', 'Undo / redo (saved as restore actions)'],
  ['?', 'This help'],
  ['Esc', 'Close help, cancel'],
];

const state = {
  ready: false, loaded: false, error: null,
  seriesList: [], series: null, caseInfo: null, apiError: null, reviewSeries: [],
  findings: [], selected: null, nextLocal: 1, showCandidates: false,
  // Undo history. An entry's before/after are the server's own finding states around that action
  // (the API restores only states it has stored), filled in when the server answers.
  undo: [], redo: [], entries: new Map(), // client_ref -> undo entry
  segIndex: new Map(), // finding object -> labelmap segment index
  saveStatus: 'idle', conflict: null, lastError: null,
};
let viewer;
let labelmap = null;
let queue = null;

// ---- start -------------------------------------------------------------------------------------

// pre: what main.js already asked for ({config, seriesUid, seriesRows, review, instances}: promises).
async function open(pre) {
  config = pre.config;
  performance.mark('radloop:script-start');
  const wanted = pre.seriesUid;
  const listP = listSeries(config.dicomwebRoot, config.studyUid, pre.seriesRows);
  const reviewP = pre.review.catch((err) => { state.apiError = err; return null; });
  initCornerstone();
  viewer = new CTViewer({
    container: $('#viewports'),
    onSliceChange: (name) => { scheduleDraw(); updateSliceLabel(name); refreshReadout(); },
    onVoiChange: () => updateVoiLabel(),
    onRender: () => scheduleDraw(),
  });
  buildChrome();
  // Metadata of the series to show was asked for first; the series list (QIDO-RS) and the findings
  // (review API) arrive in parallel and never hold up the first image.
  const seriesUid = wanted || defaultSeries(await listP)?.seriesUid;
  if (!seriesUid) throw new Error('This study has no series.');
  listP.then((list) => { state.seriesList = list; renderSeriesBar(seriesUid); }).catch(() => {});
  setLoading('Loading images…');
  state.series = await loadSeries(config.dicomwebRoot, config.studyUid, seriesUid, wanted ? await pre.instances : null);
  performance.mark('radloop:metadata-loaded');

  let firstImage;
  const shown = new Promise((resolve) => { firstImage = resolve; });
  const loading = viewer.openSeries(state.series, {
    onFirstImage: () => {
      viewerShown(); // first: when nothing was painted earlier, this is the first image
      performance.mark('radloop:viewer-image');
      performance.measure('radloop:time-to-viewer-image', { start: 0, end: 'radloop:viewer-image' });
      updateSliceLabel('stack');
      updateVoiLabel();
      firstImage();
    },
    onProgress: (done, total) => setLoading(done < total ? `Loading ${done}/${total} images…` : ''),
  });
  await Promise.race([shown, loading]);
  const review = await reviewP;
  if (review) takeCase(review);
  else $('#findings-note').textContent = `Findings unavailable: ${state.apiError?.message || 'no answer'}.`;
  setupFindings();
  state.ready = true;
  app.dataset.ready = '1';
  performance.mark('radloop:ready');
  performance.measure('radloop:time-to-ready', { start: 0, end: 'radloop:ready' });
  await loading;
  performance.mark('radloop:series-loaded');
  performance.measure('radloop:time-to-series-loaded', { start: 0, end: 'radloop:series-loaded' });
  if (!state.series.mprReason) {
    await viewer.enterMpr();
    if (labelmap) { await labelmap.attach(['axial', 'coronal', 'sagittal']); colourSegments(); }
    $('#mpr-note').textContent = 'MPR: axial · coronal · sagittal';
    for (const name of viewer.names) updateSliceLabel(name);
  } else {
    $('#mpr-note').textContent = `No MPR: ${state.series.mprReason}.`;
  }
  setLoading('');
  state.loaded = true;
  app.dataset.loaded = '1';
  scheduleDraw();
}

function takeCase(review) {
  state.caseInfo = review.case;
  $('#case-status').textContent = review.case.review_status.replace('_', ' ');
  $('#case-status').className = `badge review-${review.case.review_status}`;
  $('#case-comment').value = review.case.comment || '';
  state.reviewSeries = review.series || [];
  showCaseNotice(review.case.notice);
  showGeometryWarnings(state.series.seriesUid);
  if (state.seriesList.length) renderSeriesBar(state.series.seriesUid);
  state.findings = review.findings
    .filter((f) => f.series_uid === state.series.seriesUid)
    .map((f) => ({ ...f, server: JSON.parse(JSON.stringify(f)) }));
  $('#findings-note').textContent = ''; // the list itself says when there are none
  queue = new SaveQueue({
    url: `${config.reviewApi}actions/`,
    storageKey: `radloop.queue.${config.studyUid}.${config.user}`,
    onSaved, onStatus: setSaveStatus, onConflict: showConflict, onRejected, prepare: prepareRestore,
  });
  queue.start(review.case.revision);
}

// AI findings scored below the model's operating point are candidates: listed and drawn only on request
// (or once a reader has decided on one, or while it is selected).
function isShown(f) {
  return state.showCandidates || f.flagged !== false || f.status !== 'proposed' || f.source === 'radiologist'
    || f === state.selected;
}

function shownFindings() {
  return state.findings.filter(isShown);
}

function setupFindings() {
  try {
    labelmap = new FindingLabelmap(state.series);
    labelmap.attach(['stack']).then(colourSegments);
  } catch (err) {
    console.error(err);
    labelmap = null;
    $('#findings-note').textContent = `Masks cannot be shown here (${err.message}).`;
  }
  state.findings.forEach((f) => assignSegment(f));
  renderFindings();
}

function assignSegment(f) {
  if (state.segIndex.has(f)) return state.segIndex.get(f);
  const used = new Set(state.segIndex.values());
  let idx = 1;
  while (used.has(idx)) idx += 1;
  state.segIndex.set(f, idx);
  if (labelmap && f.mask) labelmap.setMask(idx, f.mask);
  colourSegments();
  return idx;
}

function colourSegments() {
  if (!labelmap) return;
  for (const [f, idx] of state.segIndex) {
    const [r, g, b] = STATUS_COLOURS[f.status] || [255, 255, 255];
    labelmap.setColor(idx, [r, g, b, !isShown(f) ? 0 : f.status === 'rejected' ? 90 : 255]);
  }
  labelmap.modified();
}

// ---- chrome: toolbar, series bar, help ---------------------------------------------------------

function buildChrome() {
  $('#help-table').replaceChildren(...SHORTCUTS.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v))));
  $('#help-button').addEventListener('click', toggleHelp);
  $('#help').addEventListener('click', (e) => { if (e.target.id === 'help') toggleHelp(false); });
  $('#conflict-reload').addEventListener('click', () => { queue?.discard(); location.reload(); });
  for (const btn of document.querySelectorAll('[data-tool]')) btn.addEventListener('click', () => setTool(btn.dataset.tool));
  for (const btn of document.querySelectorAll('[data-preset]')) btn.addEventListener('click', () => applyPreset(btn.dataset.preset));
  $('#reset-button').addEventListener('click', () => viewer.reset());
  $('#brush-size').addEventListener('input', updateBrushLabel);
  $('#mask-opacity').addEventListener('input', (e) => labelmap?.setOpacity(Number(e.target.value)));
  $('#show-candidates').addEventListener('change', (e) => {
    state.showCandidates = e.target.checked;
    colourSegments();
    renderFindings();
  });
  $('#case-comment-save').addEventListener('click', () => act({ action: 'comment', text: $('#case-comment').value }));
  $('#signoff').addEventListener('click', () => act({ action: 'signoff' }));
  $('#findings-list').addEventListener('click', (e) => {
    const li = e.target.closest('[data-finding-id]');
    if (li) select(findFinding(li.dataset.findingId), { jump: true });
  });
  document.addEventListener('keydown', onKey);
  for (const name of ['stack', 'axial', 'coronal', 'sagittal']) {
    const vp = $(`#vp-${name}`);
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.classList.add('vp-overlay');
    vp.appendChild(svg);
    const label = document.createElement('div');
    label.className = 'vp-label';
    vp.appendChild(label);
    const bar = document.createElement('input');
    bar.type = 'range';
    bar.className = 'vp-scrollbar';
    bar.setAttribute('aria-label', `${name} slice`);
    bar.addEventListener('input', () => viewer.scrollTo(Number(bar.value), name));
    vp.appendChild(bar);
    const el = vp.querySelector('.vp-el');
    el.addEventListener('pointermove', (e) => onPointerMove(name, e));
    el.addEventListener('pointerleave', () => { lastPointer = null; $('#cursor-readout').textContent = ''; });
    el.addEventListener('pointerdown', (e) => onPointerDown(name, e), true);
  }
  // Canvases follow their cells whatever changes the layout (window size, a notice above the views,
  // the stack -> MPR switch), not only window resizes.
  let resizePending = false;
  new ResizeObserver(() => {
    if (resizePending) return;
    resizePending = true;
    requestAnimationFrame(() => { resizePending = false; viewer.engine.resize(true, true); scheduleDraw(); });
  }).observe($('#viewports'));
  for (const vp of document.querySelectorAll('#viewports .vp-el')) new ResizeObserver(() => scheduleDraw()).observe(vp);
  window.addEventListener('pointerup', onPointerUp);
  updateBrushLabel();
}

function renderSeriesBar(current) {
  const seriesUrl = (uid) => `${config.dicomwebRoot}/studies/${encodeURIComponent(config.studyUid)}/series/${encodeURIComponent(uid)}`;
  $('#series-bar').replaceChildren(...state.seriesList.map((s) => h('a', {
    class: `series-item${s.seriesUid === current ? ' current' : ''}`,
    href: `?series=${encodeURIComponent(s.seriesUid)}`, dataset: { seriesUid: s.seriesUid },
  },
  h('img', { alt: '', loading: 'lazy', src: `${seriesUrl(s.seriesUid)}/thumbnail` }),
  h('span', {}, isolated(s.modality, { class: 'series-modality' }), ` #${s.number ?? '?'} `,
    isolated(s.description || '', { class: 'series-description' }),
    h('br'), h('span', { class: 'muted' }, `${s.numInstances} images`),
    geometryWarnings(s.seriesUid).length > 0 && [h('br'), h('span', {
      class: 'series-warning', title: geometryWarnings(s.seriesUid).join('\n'),
    }, '⚠ geometry')]))));
}

// The server's geometry warnings of a series (review API; absent key: none).
function geometryWarnings(seriesUid) {
  const info = state.reviewSeries.find((se) => se.series_uid === seriesUid);
  return (info?.geometry_warnings || []).filter((w) => typeof w === 'string' && w);
}

// Geometry problems the server found in the series on screen (mixed frames of reference, missing or
// zero pixel spacing, non-unit orientation, NaN positions): a strip above the views, as text.
function showGeometryWarnings(seriesUid) {
  const warnings = geometryWarnings(seriesUid);
  const el = $('#geometry-warning');
  el.replaceChildren(...(warnings.length ? [h('strong', {}, 'Geometry: '),
    ...warnings.flatMap((w, i) => [i ? ' · ' : '', isolated(w)])] : []));
  el.hidden = !warnings.length;
}

// Why the case was reopened (late images released from quarantine, an admin's reason): as text.
function showCaseNotice(notice) {
  const el = $('#case-notice');
  const text = typeof notice === 'string' ? notice : '';
  el.replaceChildren(...(text ? [h('strong', {}, 'Notice: '), isolated(text)] : []));
  el.hidden = !text;
}

function toggleHelp(show) {
  const help = $('#help');
  help.hidden = typeof show === 'boolean' ? !show : !help.hidden;
}

function setTool(tool) {
  viewer.setTool(['brush', 'eraser', 'add'].includes(tool) ? 'none' : tool);
  state.tool = tool;
  for (const btn of document.querySelectorAll('[data-tool]')) btn.classList.toggle('active', btn.dataset.tool === tool);
  app.dataset.tool = tool;
}

function applyPreset(key) {
  const p = PRESETS[key];
  if (p) viewer.setVoi(p.center, p.width);
}

function updateBrushLabel() {
  $('#brush-size-out').textContent = `${Number($('#brush-size').value)} mm`;
}

function setLoading(text) {
  const el = $('#loading');
  el.textContent = text;
  el.hidden = !text;
}

function updateVoiLabel() {
  const { center, width } = viewer.voi;
  for (const name of viewer.names) updateSliceLabel(name);
  app.dataset.voi = `${Math.round(center)}/${Math.round(width)}`;
}

function updateSliceLabel(name) {
  const vp = $(`#vp-${name}`);
  const info = viewer.sliceInfo(name);
  if (!info) return;
  const { center, width } = viewer.voi;
  vp.querySelector('.vp-label').textContent =
    `${name === 'stack' ? 'axial' : name}  ${info.index + 1}/${info.count}  ${info.axis} ${info.positionMm.toFixed(1)} mm   W ${Math.round(width)} L ${Math.round(center)}`;
  const bar = vp.querySelector('.vp-scrollbar');
  bar.min = 0;
  bar.max = info.count - 1;
  bar.value = info.index;
}

let drawPending = false;
function scheduleDraw() {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(() => {
    drawPending = false;
    if (!viewer?.series) return;
    const shown = shownFindings();
    for (const name of viewer.names) drawOverlay($(`#vp-${name} .vp-overlay`), viewer, name, shown, state.selected);
  });
}

// ---- pointer -----------------------------------------------------------------------------------

function canvasPoint(name, e) {
  const rect = viewer.elements[name].getBoundingClientRect();
  return [e.clientX - rect.left, e.clientY - rect.top];
}

let lastPointer = null;
function refreshReadout() {
  if (lastPointer) onPointerMove(lastPointer.name, lastPointer.e);
}

function onPointerMove(name, e) {
  if (!state.ready) return;
  lastPointer = { name, e: { clientX: e.clientX, clientY: e.clientY } };
  const world = viewer.canvasToWorld(name, ...canvasPoint(name, e));
  const hu = viewer.huAt(world);
  const g = state.series.geometry;
  const idx = g.worldToIndex(world).map(Math.round);
  $('#cursor-readout').textContent = g.contains(idx)
    ? `x ${world[0].toFixed(1)}  y ${world[1].toFixed(1)}  z ${world[2].toFixed(1)} mm   ${hu == null ? '…' : `${Math.round(hu)} HU`}   [${idx[0]}, ${idx[1]}, slice ${idx[2] + 1}]`
    : '';
  if (painting && painting.name === name && e.buttons) paintAt(name, e);
}

let painting = null;
let clickStart = null; // a left press with a viewing tool: a click (no drag) on a finding's circle selects it
function onPointerDown(name, e) {
  if (e.button !== 0 || !state.ready) return;
  const tool = state.tool;
  if (!['brush', 'eraser', 'add'].includes(tool)) {
    clickStart = { name, x: e.clientX, y: e.clientY };
    return;
  }
  if (tool === 'add') {
    e.stopPropagation();
    addFinding(viewer.canvasToWorld(name, ...canvasPoint(name, e)));
    return;
  }
  if (tool !== 'brush' && tool !== 'eraser') return;
  e.stopPropagation();
  const f = state.selected;
  if (!f || !labelmap) { notice(f ? 'Masks need WebGL.' : 'Select a finding first (click it in the list).'); return; }
  painting = { name, finding: f, changed: 0, before: snapshot(f) }; // before: to put back an emptied mask
  viewer.elements[name].setPointerCapture(e.pointerId);
  paintAt(name, e);
  const up = () => {
    viewer.elements[name].removeEventListener('pointerup', up);
    const p = painting;
    painting = null;
    if (p && p.changed) finishMask(p);
  };
  viewer.elements[name].addEventListener('pointerup', up);
}

function onPointerUp(e) {
  const start = clickStart;
  clickStart = null;
  if (!start || e.button !== 0 || Math.hypot(e.clientX - start.x, e.clientY - start.y) > 4) return;
  const rect = viewer.elements[start.name].getBoundingClientRect();
  const f = findingAt(viewer, start.name, shownFindings(), start.x - rect.left, start.y - rect.top);
  if (f && f !== state.selected) select(f);
}

function paintAt(name, e) {
  const world = viewer.canvasToWorld(name, ...canvasPoint(name, e));
  const vp = viewer.engine.getViewport(name);
  const n = vp.getCamera().viewPlaneNormal;
  const seg = assignSegment(painting.finding);
  const useHu = $('#brush-threshold').checked;
  painting.changed += labelmap.paintDisc(world, n, Number($('#brush-size').value) / 2, seg, {
    erase: state.tool === 'eraser',
    huRange: useHu ? [Number($('#brush-hu-min').value), Number($('#brush-hu-max').value)] : null,
    huAt: (i, j, k) => viewer.huAtIndex(i, j, k),
  });
}

function finishMask(p) {
  const f = p.finding;
  const mask = labelmap.getMask(state.segIndex.get(f));
  if (!mask) {
    notice('The mask is empty now; it was not saved (reject the finding instead).');
    labelmap.setMask(state.segIndex.get(f), p.before.mask);
    return;
  }
  change(f, { action: 'mask', mask }, { mask, status: 'edited' });
}

// ---- actions -----------------------------------------------------------------------------------

function snapshot(f) {
  const { serverId, server, ...rest } = f;
  return JSON.parse(JSON.stringify({ ...rest, id: serverId ?? f.id }));
}

function findFinding(key) {
  return state.findings.find((f) => String(findingKey(f)) === String(key));
}

function canEdit() {
  if (!queue) { notice('Findings cannot be changed: the review service did not answer.'); return false; }
  if (state.conflict) { notice('Reload first: this case was changed by someone else.'); return false; }
  return true;
}

// Applies a change locally, records it for undo and queues it for the server.
function change(f, body, patch) {
  if (!canEdit()) return;
  Object.assign(f, patch);
  act({ ...body, finding_id: f.serverId ?? f.id }, newEntry(f, body.action));
  if (patch.mask !== undefined && labelmap && body.action !== 'mask') labelmap.setMask(assignSegment(f), f.mask);
  colourSegments();
  renderFindings();
}

let refSeq = 0;
function newEntry(f, action) {
  const entry = { finding: f, action, ref: `${Date.now()}-${refSeq++}`, before: undefined, after: undefined };
  state.entries.set(entry.ref, entry);
  state.undo.push(entry);
  state.redo = [];
  return entry;
}

function act(body, entry = null) {
  if (!canEdit()) return;
  if (entry) body.client_ref = entry.ref;
  queue.push(body);
}

// Fills a queued restore with the server state it goes back to; null drops it (that state never existed).
function prepareRestore(body) {
  if (body.action !== 'restore' || !body.restore_ref) return body;
  const entry = state.entries.get(body.restore_ref);
  const target = entry?.[body.restore_which];
  if (!target) return null;
  const out = { ...body, state: target };
  delete out.restore_ref;
  delete out.restore_which;
  return out;
}

function onSaved(body, answer, localId) {
  state.caseInfo = answer.case || state.caseInfo;
  if (body.action === 'signoff') notice('Signed off.'); // replaces an earlier refusal still on screen
  if (answer.case) {
    $('#case-status').textContent = answer.case.review_status.replace('_', ' ');
    $('#case-status').className = `badge review-${answer.case.review_status}`;
  }
  if (answer.finding) {
    const f = localId ? state.findings.find((x) => x.id === localId) : findFinding(answer.finding.id);
    if (f) {
      if (localId) f.serverId = answer.finding.id;
      const entry = body.client_ref ? state.entries.get(body.client_ref) : null;
      if (entry && entry.finding === f) {
        entry.before = f.server || null;
        entry.after = answer.finding;
      }
      f.server = answer.finding;
      const stillQueued = queue.items.some((it) => String(queue.resolveId(it.body.finding_id)) === String(answer.finding.id));
      if (!stillQueued) {
        const { id, ...server } = answer.finding;
        Object.assign(f, server);
        if (body.action === 'restore' && labelmap) labelmap.setMask(assignSegment(f), f.mask);
      }
    }
  }
  colourSegments();
  renderFindings();
}

function onRejected(body, message) {
  state.lastError = message;
  notice(`Not saved: ${message}`);
  // the server kept its state: show it rather than ours
  getJSON(config.reviewApi).then((review) => {
    state.caseInfo = review.case;
    for (const sf of review.findings) {
      const f = findFinding(sf.id);
      if (f) {
        const { id, ...rest } = sf;
        Object.assign(f, rest, { server: sf });
        if (labelmap) labelmap.setMask(assignSegment(f), f.mask);
      }
    }
    colourSegments();
    renderFindings();
  }).catch(() => {});
}

function showConflict(message) {
  state.conflict = message;
  $('#conflict-message').textContent = message;
  $('#conflict').hidden = false;
}

function setSaveStatus(status) {
  state.saveStatus = status;
  const el = $('#save-status');
  el.textContent = SAVE_TEXT[status] ?? status;
  el.dataset.state = status;
}

let noticeTimer;
function notice(text) {
  let el = $('#notice');
  if (!el) {
    el = document.createElement('div');
    el.id = 'notice';
    el.className = 'notice';
    el.setAttribute('role', 'status');
    $('.viewer-head').after(el);
  }
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 8000);
}

function accept() {
  const f = state.selected;
  if (f) change(f, { action: 'accept' }, { status: 'accepted', reject_reason: '' });
}

function reject(reason) {
  const f = state.selected;
  if (f) change(f, { action: 'reject', reason }, { status: 'rejected', reject_reason: reason });
}

function openRejectForm() {
  if (!state.selected) return;
  const form = $('#reject-form');
  form.hidden = false;
  $('#reject-reason').focus();
}

function addFinding(world) {
  if (!canEdit()) return;
  const diameter = Math.max(2, Number($('#brush-size').value) * 1.2);
  const f = {
    id: `new-${Date.now()}-${state.nextLocal++}`, series_uid: state.series.seriesUid, source: 'radiologist',
    status: 'accepted', label: 'nodule', centre_mm: [...world], diameter_mm: diameter,
    bbox_min_mm: world.map((v) => v - diameter / 2), bbox_max_mm: world.map((v) => v + diameter / 2),
    score: null, uncertainty: null, volume_ml: null, mean_hu: null, comment: '', reject_reason: '', mask: null,
  };
  state.findings.push(f);
  let mask = null;
  if (labelmap) {
    const seg = assignSegment(f);
    const useHu = $('#brush-threshold').checked;
    labelmap.paintBall(world, diameter, seg, {
      huRange: useHu ? [Number($('#brush-hu-min').value), Number($('#brush-hu-max').value)] : null,
      huAt: (i, j, k) => viewer.huAtIndex(i, j, k),
    });
    mask = labelmap.getMask(seg);
    f.mask = mask;
  }
  const entry = newEntry(f, 'add');
  const body = { action: 'add', series_uid: f.series_uid, centre_mm: f.centre_mm, diameter_mm: diameter, label: 'nodule', local_id: f.id };
  if (mask) body.mask = mask;
  act(body, entry);
  setTool('wl');
  select(f);
}

// Undo and redo are new revisions: `restore` to the server's state before (undo) or after (redo)
// the action. Undoing an added finding rejects it: it had no state before.
function restore(entry, which) {
  const f = entry.finding;
  const target = entry[which];
  if (target) {
    const { id, ...rest } = target;
    Object.assign(f, rest);
    if (labelmap) labelmap.setMask(assignSegment(f), f.mask);
  }
  act({ action: 'restore', finding_id: f.serverId ?? f.id, restore_ref: entry.ref, restore_which: which });
  colourSegments();
  renderFindings();
}

function undo() {
  if (!canEdit()) return;
  const entry = state.undo.pop();
  if (!entry) return;
  state.redo.push(entry);
  const f = entry.finding;
  if (entry.action === 'add') {
    const reason = 'Added in error (undone)';
    Object.assign(f, { status: 'rejected', reject_reason: reason });
    act({ action: 'reject', finding_id: f.serverId ?? f.id, reason });
    colourSegments();
    renderFindings();
  } else {
    restore(entry, 'before');
  }
  select(f, { jump: true });
}

function redo() {
  if (!canEdit()) return;
  const entry = state.redo.pop();
  if (!entry) return;
  state.undo.push(entry);
  restore(entry, 'after');
  select(entry.finding, { jump: true });
}

// ---- selection and panel -------------------------------------------------------------------------

function select(f, { jump = false } = {}) {
  state.selected = f || null;
  if (f && jump && f.centre_mm) viewer.goTo(f.centre_mm, { centre: true });
  renderFindings();
}

function renderFindings() {
  const shown = shownFindings();
  const candidates = state.findings.filter((f) => f.flagged === false && f.status === 'proposed').length;
  $('#candidates-toggle').hidden = candidates === 0;
  $('#candidates-count').textContent = String(candidates);
  renderList($('#findings-list'), shown, state.selected,
    candidates ? "No findings above the AI's operating point." : 'No findings for this series.');
  colourSegments();
  renderDetail($('#finding-detail'), state.selected, { editable: !!queue });
  wireDetail();
  scheduleDraw();
}

function wireDetail() {
  const f = state.selected;
  if (!f) return;
  $('#accept-finding')?.addEventListener('click', accept);
  $('#reject-finding')?.addEventListener('click', openRejectForm);
  $('#reject-form')?.addEventListener('submit', (e) => { e.preventDefault(); reject($('#reject-reason').value.trim()); });
  $('#finding-label')?.addEventListener('change', (e) => change(f, { action: 'label', label: e.target.value }, { label: e.target.value }));
  $('#edit-form')?.addEventListener('submit', (e) => {
    e.preventDefault();
    const fd = new FormData(e.target);
    const centre = ['x', 'y', 'z'].map((k) => Number(fd.get(k)));
    const diameter = Number(fd.get('diameter'));
    if (centre.some((v) => !Number.isFinite(v)) || !(diameter > 0)) { notice('Centre and diameter must be numbers (mm).'); return; }
    change(f, { action: 'edit', centre_mm: centre, diameter_mm: diameter }, {
      centre_mm: centre, diameter_mm: diameter, status: 'edited',
      bbox_min_mm: centre.map((v) => v - diameter / 2), bbox_max_mm: centre.map((v) => v + diameter / 2),
    });
  });
  $('#centre-here')?.addEventListener('click', () => {
    const p = viewer.currentWorldPoint();
    const form = $('#edit-form');
    ['x', 'y', 'z'].forEach((k, i) => { form.elements[k].value = p[i].toFixed(1); });
  });
  $('#finding-comment-save')?.addEventListener('click', () => {
    const text = $('#finding-comment').value;
    f.comment = text;
    act({ action: 'comment', finding_id: f.serverId ?? f.id, text });
  });
}

// ---- keyboard ------------------------------------------------------------------------------------

function onKey(e) {
  if (e.key === 'Escape') { toggleHelp(false); $('#reject-form') && ($('#reject-form').hidden = true); e.target.blur?.(); return; }
  if (!state.ready) return;
  const k = e.key;
  const editingText = e.target.closest('textarea, input:not([type=checkbox]):not([type=range])');
  if ((e.ctrlKey || e.metaKey) && !editingText) {
    if (k === 'z' || k === 'Z') { e.preventDefault(); e.shiftKey ? redo() : undo(); return; }
    if (k === 'y' || k === 'Y') { e.preventDefault(); redo(); return; }
  }
  if (e.target.closest('input, textarea, select')) return;
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const step = e.shiftKey ? 10 : 1;
  const handlers = {
    ArrowUp: () => viewer.scroll(-step), ArrowLeft: () => viewer.scroll(-step), PageUp: () => viewer.scroll(-10),
    ArrowDown: () => viewer.scroll(step), ArrowRight: () => viewer.scroll(step), PageDown: () => viewer.scroll(10),
    Home: () => viewer.scrollTo(0), End: () => viewer.scrollTo(1e9),
    1: () => applyPreset(1), 2: () => applyPreset(2), 3: () => applyPreset(3), 4: () => applyPreset(4),
    w: () => setTool('wl'), p: () => setTool('pan'), z: () => setTool('zoom'), l: () => setTool('length'),
    c: () => setTool('crosshairs'), b: () => setTool('brush'), e: () => setTool('eraser'), n: () => setTool('add'),
    ' ': () => viewer.reset(), a: accept, r: openRejectForm, '?': () => toggleHelp(),
    j: () => stepFinding(1), k: () => stepFinding(-1),
    '[': () => stepBrush(-0.5), ']': () => stepBrush(0.5),
    t: () => { $('#brush-threshold').checked = !$('#brush-threshold').checked; },
  };
  const h = handlers[k] || handlers[k.toLowerCase()];
  if (h) { e.preventDefault(); h(); }
}

function stepFinding(d) {
  const shown = shownFindings();
  if (!shown.length) return;
  const i = shown.indexOf(state.selected);
  const next = shown[(i + d + shown.length) % shown.length];
  select(next, { jump: true });
}

function stepBrush(d) {
  const el = $('#brush-size');
  el.value = Math.max(Number(el.min), Math.min(Number(el.max), Number(el.value) + d));
  updateBrushLabel();
}

// ---- for tests and benchmarks ------------------------------------------------------------------

window.radloopViewer = {
  get ready() { return state.ready; },
  get loaded() { return state.loaded; },
  get error() { return state.error; },
  get mode() { return viewer?.mode ?? null; },
  get mprReason() { return state.series?.mprReason ?? null; },
  sliceIndex: (name) => viewer.sliceInfo(name || viewer.names[0])?.index,
  sliceCount: (name) => viewer.sliceInfo(name || viewer.names[0])?.count,
  windowLevel: () => ({ center: viewer.voi.center, width: viewer.voi.width }),
  findings: () => state.findings.map((f) => ({ ...snapshot(f), selected: f === state.selected })),
  selectedFinding: () => (state.selected ? snapshot(state.selected) : null),
  saveStatus: () => state.saveStatus,
  queueLength: () => queue?.length ?? 0,
  revision: () => queue?.revision ?? null,
  conflict: () => state.conflict,
  lastError: () => state.lastError,
  maskVoxels: (key) => {
    const f = findFinding(key);
    return f && labelmap && state.segIndex.has(f) ? labelmap.count(state.segIndex.get(f)) : 0;
  },
  huAt: (world) => viewer.huAt(world),
  // page coordinates (CSS px) of a patient point in a view, for tests that click on a finding
  pagePoint: (name, world) => {
    const [x, y] = viewer.worldToCanvas(name, world);
    const rect = viewer.elements[name].getBoundingClientRect();
    return [rect.left + x, rect.top + y];
  },
  viewportNames: () => viewer.names,
  geometry: () => state.series?.geometry ?? null,
  goTo: (world) => viewer.goTo(world),
  timings: () => ({
    ...Object.fromEntries(performance.getEntriesByType('mark')
      .filter((m) => m.name.startsWith('radloop:')).map((m) => [m.name, m.startTime])),
    ...Object.fromEntries(performance.getEntriesByType('measure')
      .filter((m) => m.name.startsWith('radloop:')).map((m) => [m.name, m.duration])),
  }),
};

export function start(pre) {
  return open(pre).catch((err) => {
    console.error(err);
    state.error = err instanceof HttpError ? `${err.status}: ${err.message}` : String(err.message || err);
    setLoading('');
    app.dataset.error = '1';
    notice(`The viewer could not open this study: ${state.error}`);
  });
}
