// Pure helpers on a series' DICOM JSON metadata (no Cornerstone): slice records, their order along
// the slice normal, and whether they make a regular volume. Shared by the page's first paint
// (boot.js) and the viewer proper (series.js), so both pick the same first slice.
import { cross, dot, norm, sub } from './geometry.js';

export const first = (inst, tag) => inst[tag]?.Value?.[0];
export const all = (inst, tag) => inst[tag]?.Value;

export function sliceRecord(inst) {
  return {
    sop: first(inst, '00080018'),
    position: all(inst, '00200032')?.map(Number),
    orientation: all(inst, '00200037')?.map(Number),
    spacing: all(inst, '00280030')?.map(Number), // [between rows (y), between columns (x)]
    rows: Number(first(inst, '00280010')),
    columns: Number(first(inst, '00280011')),
    frames: Number(first(inst, '00280008') || 1),
    instanceNumber: Number(first(inst, '00200013') || 0),
    windowCenter: Number(first(inst, '00281050')),
    windowWidth: Number(first(inst, '00281051')),
    bitsAllocated: Number(first(inst, '00280100')),
    pixelRepresentation: Number(first(inst, '00280103') || 0),
    samplesPerPixel: Number(first(inst, '00280002') || 1),
    photometric: first(inst, '00280004') || 'MONOCHROME2',
    slope: Number(first(inst, '00281053') ?? 1),
    intercept: Number(first(inst, '00281052') ?? 0),
  };
}

export function sliceNormal(s0) {
  return s0.orientation?.length === 6 ? cross(s0.orientation.slice(0, 3), s0.orientation.slice(3)) : [0, 0, 1];
}

// Sorts in place: ascending along the normal when every slice has a position, else by instance number.
export function sortSlices(slices) {
  const normal = sliceNormal(slices[0]);
  if (slices.every((s) => s.position?.length === 3)) {
    slices.sort((a, b) => dot(a.position, normal) - dot(b.position, normal));
  } else {
    slices.sort((a, b) => a.instanceNumber - b.instanceNumber);
  }
  return normal;
}

// The slice shown first: the middle one.
export const firstSliceIndex = (n) => Math.floor(n / 2);

// Why the slices cannot be stacked into a regular volume, or null.
export function notReconstructable(slices) {
  const n = slices.length;
  if (slices.some((s) => s.frames > 1)) return 'multi-frame images are shown as a stack only';
  if (n === 1) return 'single slice: MPR needs a stack of slices';
  if (n < 3) return `only ${n} slices: MPR needs at least 3`;
  if (slices.some((s) => s.position?.length !== 3 || s.orientation?.length !== 6)) {
    return 'slices without position or orientation';
  }
  if (slices.some((s) => s.rows !== slices[0].rows || s.columns !== slices[0].columns)) {
    return 'slices of different sizes';
  }
  const o0 = slices[0].orientation;
  if (slices.some((s) => s.orientation.some((v, i) => Math.abs(v - o0[i]) > 1e-3))) {
    return 'slices with different orientations';
  }
  const normal = cross(o0.slice(0, 3), o0.slice(3));
  const sorted = [...slices].sort((a, b) => dot(a.position, normal) - dot(b.position, normal));
  const gaps = [];
  for (let k = 1; k < n; k++) {
    const d = sub(sorted[k].position, sorted[k - 1].position);
    const along = dot(d, normal);
    if (along < 1e-3) return 'two slices at the same position';
    const off = norm(sub(d, normal.map((v) => v * along)));
    if (off > 0.1 * along + 0.01) return 'slices shifted sideways (gantry tilt)';
    gaps.push(along);
  }
  const lo = Math.min(...gaps);
  const hi = Math.max(...gaps);
  if (hi - lo > Math.max(0.01, 0.05 * lo)) {
    return `irregular slice spacing (${lo.toFixed(2)}–${hi.toFixed(2)} mm)`;
  }
  return null;
}
