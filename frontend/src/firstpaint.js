// The first image, drawn before Cornerstone is even evaluated: the page's tiny entry (main.js)
// fetches the series metadata and the middle slice at once and paints that slice, windowed like the
// viewer will show it, on a plain 2D canvas in the stack view. Cornerstone's own stack viewport
// replaces it as soon as it has rendered (app.js calls viewerShown()). Only uncompressed
// single-frame greyscale slices are painted this way; anything else waits for Cornerstone.
import { firstSliceIndex, sliceRecord, sortSlices } from './slices.js';

export const FRAME_ACCEPT = 'multipart/related; type=application/octet-stream; transfer-syntax=*';
export const LUNG = { center: -600, width: 1500 };
const NATIVE = new Set(['1.2.840.10008.1.2.1', '1.2.840.10008.1.2']);

let viewerHasShown = false;
let canvas = null;

// Marks the first image on screen (whichever drew it) once; `by` says which.
function markFirstImage(by) {
  if (performance.getEntriesByName('radloop:first-image', 'mark').length) return;
  performance.mark('radloop:first-image', { detail: { by } });
  performance.measure('radloop:time-to-first-image', { start: 0, end: 'radloop:first-image' });
}

// Called by the viewer when Cornerstone has rendered its first image: the preview goes away.
export function viewerShown() {
  viewerHasShown = true;
  canvas?.remove();
  canvas = null;
  markFirstImage('viewer');
}

function findHeaderEnd(bytes) {
  for (let i = 0; i + 3 < Math.min(bytes.length, 4096); i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) return i;
  }
  return -1;
}

// Hounsfield (modality) values of the first part of a WADO-RS multipart frame answer, or null when
// the frame is not native little-endian greyscale.
function modalityValues(bytes, s) {
  const end = findHeaderEnd(bytes);
  if (end < 0) return null;
  const head = new TextDecoder().decode(bytes.subarray(0, end));
  const ts = /transfer-syntax=\s*"?([\d.]+)/i.exec(head)?.[1] || '1.2.840.10008.1.2.1';
  if (!NATIVE.has(ts)) return null;
  const n = s.rows * s.columns;
  const bpp = s.bitsAllocated / 8;
  const start = end + 4;
  if (!(n > 0) || start + n * bpp > bytes.length) return null;
  const raw = bytes.slice(start, start + n * bpp).buffer;
  const stored = bpp === 1 ? new Uint8Array(raw) : (s.pixelRepresentation ? new Int16Array(raw) : new Uint16Array(raw));
  const slope = Number.isFinite(s.slope) ? s.slope : 1;
  const intercept = Number.isFinite(s.intercept) ? s.intercept : 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = stored[i] * slope + intercept;
  return out;
}

// The same picture Cornerstone's stack viewport shows at first: the whole slice fitted into the view
// (pixel spacing respected), centred on black, linear window [c - w/2, c + w/2].
function draw(host, values, s, voi) {
  const { rows, columns } = s;
  const lo = voi.center - voi.width / 2;
  const k = 255 / voi.width;
  const invert = s.photometric === 'MONOCHROME1';
  const img = new ImageData(columns, rows);
  const px = img.data;
  for (let i = 0, o = 0; i < values.length; i++, o += 4) {
    let g = (values[i] - lo) * k;
    g = g < 0 ? 0 : g > 255 ? 255 : g;
    if (invert) g = 255 - g;
    px[o] = g; px[o + 1] = g; px[o + 2] = g; px[o + 3] = 255;
  }
  const src = document.createElement('canvas');
  src.width = columns;
  src.height = rows;
  src.getContext('2d').putImageData(img, 0, 0);
  const rect = host.getBoundingClientRect();
  if (rect.width < 2 || rect.height < 2) return false;
  const dpr = window.devicePixelRatio || 1;
  const c = document.createElement('canvas');
  c.className = 'vp-preview';
  c.width = Math.round(rect.width * dpr);
  c.height = Math.round(rect.height * dpr);
  const ctx = c.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, c.width, c.height);
  const [dy, dx] = s.spacing?.length === 2 ? s.spacing : [1, 1];
  const w = columns * dx;
  const h = rows * dy;
  const scale = Math.min(c.width / w, c.height / h);
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(src, (c.width - w * scale) / 2, (c.height - h * scale) / 2, w * scale, h * scale);
  host.after(c); // over the image area, under the view's label and scrollbar
  canvas = c;
  return true;
}

// Paints the middle slice of a series from its metadata (a promise of the DICOM JSON array).
// Resolves true when it painted, false when it left the first image to Cornerstone.
export async function paintFirstImage({ root, studyUid, seriesUid, instances, host }) {
  const list = await instances;
  if (!list?.length || viewerHasShown) return false;
  const slices = list.map(sliceRecord);
  if (slices.some((s) => s.frames > 1)) return false;
  const s0 = slices[0]; // the viewer's default window comes from the first instance, as series.js does
  const voi = Number.isFinite(s0.windowCenter) && Number.isFinite(s0.windowWidth)
    ? { center: s0.windowCenter, width: s0.windowWidth } : LUNG;
  sortSlices(slices);
  const s = slices[firstSliceIndex(slices.length)];
  if (s.samplesPerPixel !== 1 || ![8, 16].includes(s.bitsAllocated) || !s.sop) return false;
  // The same URL and Accept header as the image loader: its request for this slice is then
  // answered from the HTTP cache (frames are immutable).
  const url = `${root}/studies/${studyUid}/series/${seriesUid}/instances/${s.sop}/frames/1`;
  const response = await fetch(url, { credentials: 'same-origin', headers: { Accept: FRAME_ACCEPT } });
  if (!response.ok || viewerHasShown) return false;
  const values = modalityValues(new Uint8Array(await response.arrayBuffer()), s);
  if (!values || viewerHasShown || !draw(host, values, s, voi)) return false;
  await new Promise((resolve) => requestAnimationFrame(resolve)); // on screen from this frame
  if (!viewerHasShown) markFirstImage('preview');
  return true;
}
