// Series of a study over DICOMweb: QIDO-RS list, WADO-RS metadata registered with the image loader,
// slices sorted along their normal, and whether the series can be reconstructed into MPR views.
import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import { getJSON } from './api.js';
import { Geometry, dot, sub } from './geometry.js';
import { first, notReconstructable, sliceNormal, sliceRecord, sortSlices } from './slices.js';

export { notReconstructable };
const DICOM_JSON = 'application/dicom+json';

// rows: the QIDO-RS answer when the page already asked for it (a promise).
export async function listSeries(root, studyUid, rows = null) {
  rows = await (rows || getJSON(`${root}/studies/${studyUid}/series`, DICOM_JSON));
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

// instances: the series' WADO-RS metadata when the page already has it (boot.js fetched it early).
export async function loadSeries(root, studyUid, seriesUid, instances = null) {
  instances = instances || await getJSON(`${root}/studies/${studyUid}/series/${seriesUid}/metadata`, DICOM_JSON);
  const slices = [];
  for (const inst of instances) {
    const s = sliceRecord(inst);
    s.imageId = `wadors:${root}/studies/${studyUid}/series/${seriesUid}/instances/${s.sop}/frames/1`;
    dicomImageLoader.wadors.metaDataManager.add(s.imageId, inst);
    slices.push(s);
  }
  if (!slices.length) throw new Error('This series has no images.');
  const reason = notReconstructable(slices);
  const s0 = slices[0];
  const normal = sliceNormal(s0);
  sortSlices(slices);
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

