// Finding masks as the review API sends them: a bool box [z][y][x] at origin_zyx, C-order, bits
// packed big-endian like numpy.packbits, base64-encoded.

export function unpackMask(mask) {
  const [d, h, w] = mask.shape_zyx;
  const n = d * h * w;
  const bytes = Uint8Array.from(atob(mask.bits_b64), (c) => c.charCodeAt(0));
  const bits = new Uint8Array(n);
  for (let i = 0; i < n; i++) bits[i] = (bytes[i >> 3] >> (7 - (i & 7))) & 1;
  return { origin: mask.origin_zyx, shape: mask.shape_zyx, bits };
}

// bits: Uint8Array(d*h*w) of 0/1 in C order (z, y, x).
export function packMask(origin, shape, bits) {
  const n = shape[0] * shape[1] * shape[2];
  const bytes = new Uint8Array(Math.ceil(n / 8));
  for (let i = 0; i < n; i++) if (bits[i]) bytes[i >> 3] |= 1 << (7 - (i & 7));
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return { origin_zyx: origin.map(Number), shape_zyx: shape.map(Number), bits_b64: btoa(s) };
}
