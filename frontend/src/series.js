// Series of a study over DICOMweb: QIDO-RS list, WADO-RS metadata registered with the image loader,
// slices sorted along their normal, and whether the series can be reconstructed into MPR views.
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import { getJSON } from './api.js';
import { Geometry, cross, dot, norm, sub } from './geometry.js';

const DICOM_JSON = 'application/dicom+json';
const first = (inst, tag) => inst[tag]?.Value?.[0];
const all = (inst, tag) => inst[tag]?.Value;

export async function listSeries(root, studyUid) {
  const rows = await getJSON(`${root}/studies/${studyUid}/series`, DICOM_JSON);
  return (rows || [])
    .map((r) => ({
      seriesUid: first(r, '0020000E'),
      modality: first(r, '00080060') || '',
      description: first(r, '0008103E') || '',
      number: first(r, '00200011'),
      numInstances: Number(first(r, '00201209') || 0),
    }))
    .sort((a, b) => (a.number ?? 1e9) - (b.number ?? 1e9));
}

// Picks the series to open first: the CT series with the most images.
export function defaultSeries(list) {
  const ct = list.filter((s) => s.modality === 'CT');
  return [...(ct.length ? ct : list)].sort((a, b) => b.numInstances - a.numInstances)[0];
}

export async function loadSeries(root, studyUid, seriesUid) {
  const instances = await getJSON(`${root}/studies/${studyUid}/series/${seriesUid}/metadata`, DICOM_JSON);
  const slices = [];
  for (const inst of instances) {
    const sop = first(inst, '00080018');
    const imageId = `wadors:${root}/studies/${studyUid}/series/${seriesUid}/instances/${sop}/frames/1`;
    dicomImageLoader.wadors.metaDataManager.add(imageId, inst);
    slices.push({
      imageId,
      position: all(inst, '00200032')?.map(Number),
      orientation: all(inst, '00200037')?.map(Number),
      spacing: all(inst, '00280030')?.map(Number), // [between rows (y), between columns (x)]
      rows: Number(first(inst, '00280010')),
      columns: Number(first(inst, '00280011')),
      frames: Number(first(inst, '00280008') || 1),
      instanceNumber: Number(first(inst, '00200013') || 0),
      windowCenter: Number(first(inst, '00281050')),
      windowWidth: Number(first(inst, '00281051')),
    });
  }
  if (!slices.length) throw new Error('This series has no images.');
  const reason = notReconstructable(slices);
  const s0 = slices[0];
  let normal = [0, 0, 1];
  if (s0.orientation?.length === 6) normal = cross(s0.orientation.slice(0, 3), s0.orientation.slice(3));
  if (slices.every((s) => s.position?.length === 3)) {
    slices.sort((a, b) => dot(a.position, normal) - dot(b.position, normal));
  } else {
    slices.sort((a, b) => a.instanceNumber - b.instanceNumber);
  }
  const positions = slices.map((s, k) => s.position || [0, 0, k]);
  const gaps = positions.slice(1).map((p, k) => dot(sub(p, positions[k]), normal));
  const sliceSpacing = gaps.length ? gaps.reduce((a, b) => a + b, 0) / gaps.length : 1;
  const ps = s0.spacing || [1, 1];
  const geometry = new Geometry({
    origin: positions[0],
    rowDir: s0.orientation ? s0.orientation.slice(0, 3) : [1, 0, 0],
    colDir: s0.orientation ? s0.orientation.slice(3) : [0, 1, 0],
    normal,
    spacing: [ps[1], ps[0], sliceSpacing],
    rows: s0.rows,
    columns: s0.columns,
    slices: slices.length,
    positions,
  });
  return {
    seriesUid,
    imageIds: slices.map((s) => s.imageId),
    geometry,
    mprReason: reason, // null when MPR is possible, else a sentence for the radiologist
    defaultVoi: Number.isFinite(s0.windowCenter) && Number.isFinite(s0.windowWidth)
      ? { center: s0.windowCenter, width: s0.windowWidth } : null,
  };
}

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
