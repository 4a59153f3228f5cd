// Finding masks as one Cornerstone labelmap over the series (segment index per finding), and the
// app's own brush and eraser: paint a disc of a given radius in mm in the plane of the view, only
// on voxels inside an optional HU window, never over another finding's voxels.
import { cache, imageLoader } from '@cornerstonejs/core';
import { Enums as toolEnums, segmentation } from '@cornerstonejs/tools';
import { dot, sub } from './geometry.js';
import { packMask, unpackMask } from './mask.js';

const LABELMAP = toolEnums.SegmentationRepresentations.Labelmap;

export class FindingLabelmap {
  constructor(series) {
    this.series = series;
    this.g = series.geometry;
    this.segmentationId = `radloop-seg-${series.seriesUid}`;
    const images = imageLoader.createAndCacheDerivedLabelmapImages(series.imageIds);
    this.imageIds = images.map((im) => im.imageId);
    segmentation.addSegmentations([{
      segmentationId: this.segmentationId,
      representation: { type: LABELMAP, data: { imageIds: this.imageIds } },
    }]);
    this.boxes = new Map(); // segment index -> [[k0, j0, i0], [k1, j1, i1]] inclusive, where it may have voxels
    this.viewportIds = [];
    this.opacity = 0.45;
  }

  slice(k) {
    const image = cache.getImage(this.imageIds[k]);
    return image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
  }

  async attach(viewportIds) {
    this.viewportIds = viewportIds;
    for (const viewportId of viewportIds) {
      await segmentation.addLabelmapRepresentationToViewport(viewportId, [{ segmentationId: this.segmentationId }]);
    }
    this.setOpacity(this.opacity);
  }

  setOpacity(alpha) {
    this.opacity = alpha;
    segmentation.config.style.setStyle({ type: LABELMAP }, {
      fillAlpha: alpha, fillAlphaInactive: alpha, outlineOpacity: Math.min(1, alpha + 0.4),
      outlineOpacityInactive: Math.min(1, alpha + 0.4), renderOutline: true, outlineWidth: 1,
    }, true);
    this.modified();
  }

  setColor(segIndex, rgba) {
    for (const viewportId of this.viewportIds) {
      segmentation.config.color.setSegmentIndexColor(viewportId, this.segmentationId, segIndex, rgba);
    }
  }

  modified() {
    segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(this.segmentationId);
  }

  grow(segIndex, lo, hi) {
    const box = this.boxes.get(segIndex);
    if (!box) this.boxes.set(segIndex, [[...lo], [...hi]]);
    else for (let a = 0; a < 3; a++) { box[0][a] = Math.min(box[0][a], lo[a]); box[1][a] = Math.max(box[1][a], hi[a]); }
  }

  // Clears a segment and writes an API mask ({origin_zyx, shape_zyx, bits_b64}) into it.
  setMask(segIndex, mask) {
    this.clear(segIndex);
    if (!mask) { this.modified(); return; }
    const { origin, shape, bits } = unpackMask(mask);
    const [d, h, w] = shape;
    const cols = this.g.columns;
    for (let z = 0; z < d; z++) {
      const k = origin[0] + z;
      if (k < 0 || k >= this.g.slices) continue;
      const data = this.slice(k);
      for (let y = 0; y < h; y++) {
        const j = origin[1] + y;
        if (j < 0 || j >= this.g.rows) continue;
        for (let x = 0; x < w; x++) {
          const i = origin[2] + x;
          if (i < 0 || i >= cols) continue;
          if (bits[(z * h + y) * w + x] && data[j * cols + i] === 0) data[j * cols + i] = segIndex;
        }
      }
    }
    this.grow(segIndex, origin, [origin[0] + d - 1, origin[1] + h - 1, origin[2] + w - 1]);
    this.modified();
  }

  clear(segIndex) {
    const box = this.boxes.get(segIndex);
    if (!box) return;
    this.forBox(box, (data, idx) => { if (data[idx] === segIndex) data[idx] = 0; });
    this.boxes.delete(segIndex);
  }

  forBox([[k0, j0, i0], [k1, j1, i1]], fn) {
    const cols = this.g.columns;
    for (let k = Math.max(0, k0); k <= Math.min(this.g.slices - 1, k1); k++) {
      const data = this.slice(k);
      for (let j = Math.max(0, j0); j <= Math.min(this.g.rows - 1, j1); j++) {
        for (let i = Math.max(0, i0); i <= Math.min(cols - 1, i1); i++) fn(data, j * cols + i, k, j, i);
      }
    }
  }

  // The segment as an API mask cropped to its voxels, or null when it is empty.
  getMask(segIndex) {
    const box = this.boxes.get(segIndex);
    if (!box) return null;
    const lo = [Infinity, Infinity, Infinity];
    const hi = [-1, -1, -1];
    this.forBox(box, (data, idx, k, j, i) => {
      if (data[idx] !== segIndex) return;
      lo[0] = Math.min(lo[0], k); lo[1] = Math.min(lo[1], j); lo[2] = Math.min(lo[2], i);
      hi[0] = Math.max(hi[0], k); hi[1] = Math.max(hi[1], j); hi[2] = Math.max(hi[2], i);
    });
    if (hi[0] < 0) return null;
    const shape = [hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1];
    const bits = new Uint8Array(shape[0] * shape[1] * shape[2]);
    this.forBox([lo, hi], (data, idx, k, j, i) => {
      if (data[idx] === segIndex) bits[((k - lo[0]) * shape[1] + (j - lo[1])) * shape[2] + (i - lo[2])] = 1;
    });
    this.boxes.set(segIndex, [lo, hi]);
    return packMask(lo, shape, bits);
  }

  count(segIndex) {
    let n = 0;
    const box = this.boxes.get(segIndex);
    if (box) this.forBox(box, (data, idx) => { if (data[idx] === segIndex) n += 1; });
    return n;
  }

  // Paints (or erases) a disc of radiusMm around world point p in the plane with normal n, one
  // voxel thick. huAt(i, j, k) gives Hounsfield units for the optional window [lo, hi].
  // Returns how many voxels changed.
  paintDisc(p, n, radiusMm, segIndex, { erase = false, huRange = null, huAt = null } = {}) {
    const g = this.g;
    const c = g.worldToIndex(p);
    const axes = [g.rowDir, g.colDir, g.normal];
    const along = axes.map((a) => Math.abs(dot(a, n)));
    const halfThickness = 0.5 * g.spacing[along.indexOf(Math.max(...along))] + 1e-6;
    const reach = g.spacing.map((s) => Math.ceil(radiusMm / s) + 1);
    const lo = [Math.round(c[2]) - reach[2], Math.round(c[1]) - reach[1], Math.round(c[0]) - reach[0]];
    const hi = [Math.round(c[2]) + reach[2], Math.round(c[1]) + reach[1], Math.round(c[0]) + reach[0]];
    let changed = 0;
    const touched = [[Infinity, Infinity, Infinity], [-1, -1, -1]];
    this.forBox([lo, hi], (data, idx, k, j, i) => {
      const d = sub(g.indexToWorld([i, j, k]), p);
      const dn = dot(d, n);
      if (Math.abs(dn) > halfThickness || dot(d, d) - dn * dn > radiusMm * radiusMm) return;
      if (erase) {
        if (data[idx] !== segIndex) return;
        data[idx] = 0;
      } else {
        if (data[idx] !== 0) return;
        if (huRange) {
          const hu = huAt(i, j, k);
          if (hu == null || hu < huRange[0] || hu > huRange[1]) return;
        }
        data[idx] = segIndex;
        touched[0] = [Math.min(touched[0][0], k), Math.min(touched[0][1], j), Math.min(touched[0][2], i)];
        touched[1] = [Math.max(touched[1][0], k), Math.max(touched[1][1], j), Math.max(touched[1][2], i)];
      }
      changed += 1;
    });
    if (!erase && touched[1][0] >= 0) this.grow(segIndex, touched[0], touched[1]);
    if (changed) this.modified();
    return changed;
  }

  // A ball of diameterMm around p (a new finding's first mask), inside the optional HU window.
  paintBall(p, diameterMm, segIndex, { huRange = null, huAt = null } = {}) {
    const g = this.g;
    const r = diameterMm / 2;
    const c = g.worldToIndex(p);
    const reach = g.spacing.map((s) => Math.ceil(r / s) + 1);
    const lo = [Math.round(c[2]) - reach[2], Math.round(c[1]) - reach[1], Math.round(c[0]) - reach[0]];
    const hi = [Math.round(c[2]) + reach[2], Math.round(c[1]) + reach[1], Math.round(c[0]) + reach[0]];
    let changed = 0;
    this.forBox([lo, hi], (data, idx, k, j, i) => {
      const d = sub(g.indexToWorld([i, j, k]), p);
      if (dot(d, d) > r * r || data[idx] !== 0) return;
      if (huRange) {
        const hu = huAt(i, j, k);
        if (hu == null || hu < huRange[0] || hu > huRange[1]) return;
      }
      data[idx] = segIndex;
      changed += 1;
    });
    this.grow(segIndex, lo.map((v) => Math.max(0, v)), hi);
    this.modified();
    return changed;
  }
}
