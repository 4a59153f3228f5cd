// Series geometry in patient LPS millimetres. Voxel index (i, j, k) = (column, row, slice) with
// slices sorted ascending along the slice normal: exactly ml.volumes.load_series' order and the
// review API's mask grid (z = k, y = j, x = i).

export const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
export const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
export const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
export const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
export const norm = (a) => Math.sqrt(dot(a, a));
export const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

export class Geometry {
  // origin: ImagePositionPatient of slice 0; rowDir/colDir: ImageOrientationPatient; spacing: [x, y, z] mm
  constructor({ origin, rowDir, colDir, normal, spacing, rows, columns, slices, positions }) {
    Object.assign(this, { origin, rowDir, colDir, normal, spacing, rows, columns, slices, positions });
  }

  indexToWorld([i, j, k]) {
    // k may be fractional; between slices the position is interpolated from the real positions
    const k0 = Math.max(0, Math.min(this.slices - 1, Math.floor(k)));
    const base = this.positions[k0];
    const extra = this.slices > 1 ? (k - k0) * this.spacing[2] : 0;
    return add(add(add(base, scale(this.rowDir, i * this.spacing[0])), scale(this.colDir, j * this.spacing[1])), scale(this.normal, extra));
  }

  // Continuous index of a world point (slice index from the nearest real slice positions).
  worldToIndex(p) {
    const along = dot(p, this.normal);
    const k = this.sliceAt(along);
    const k0 = Math.max(0, Math.min(this.slices - 1, Math.round(k)));
    const d = sub(p, this.positions[k0]);
    return [dot(d, this.rowDir) / this.spacing[0], dot(d, this.colDir) / this.spacing[1], k];
  }

  // Fractional slice index for a distance along the normal.
  sliceAt(along) {
    const z = this.positions.map((pos) => dot(pos, this.normal));
    if (this.slices === 1) return (along - z[0]) / (this.spacing[2] || 1);
    if (along <= z[0]) return (along - z[0]) / (z[1] - z[0]);
    for (let k = 1; k < z.length; k++) {
      if (along <= z[k]) return k - 1 + (along - z[k - 1]) / (z[k] - z[k - 1]);
    }
    const n = z.length;
    return n - 1 + (along - z[n - 1]) / (z[n - 1] - z[n - 2]);
  }

  contains([i, j, k]) {
    return i >= 0 && j >= 0 && k >= 0 && i < this.columns && j < this.rows && k < this.slices;
  }

  get voxelVolumeMl() {
    return (this.spacing[0] * this.spacing[1] * this.spacing[2]) / 1000;
  }
}
