#!/usr/bin/env python3
"""Peak memory of a process that ingests a decompression bomb through the ingest service.

    .venv/bin/python bench/bomb.py [--deflate-mb 1024] [--j2k-size 8192] [--before]

Two bombs, written to a temporary folder:
  deflate  a 16×16 CT slice, Deflated Explicit VR Little Endian, whose pixel data inflates to
           --deflate-mb MB of zeros (the file is about a thousandth of that);
  j2k      a 16×16 CT slice whose JPEG 2000 codestream (a few hundred bytes) declares a
           --j2k-size² image (decodes to size² × 2 bytes).
Each is ingested by ``webapp.archive.services.ingest_path`` in a fresh child process; the child
prints its peak RSS (VmHWM) after loading Django and after the ingest, and the outcome.
--before also measures what the old code did with each file in a child (pydicom.dcmread of the
whole deflated file; decoding the J2K frame), for comparison.
Runs on a throw-away SQLite database and archive (DATABASE_URL is honoured if set). Asserts nothing.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_mb() -> float:
    """This process's peak RSS in MB: VmHWM (ru_maxrss would carry the parent's peak across exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def slice_dataset():
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "BOMB-1", "Bomb^Bench", "CT"
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.zeros((16, 16), np.uint16).tobytes()
    return ds


def make_deflate_bomb(path: Path, pixel_mb: int) -> None:
    """Preamble + file meta (deflated syntax) + a raw-deflate stream of the data set whose pixel
    data element declares ``pixel_mb`` MB of zeros, streamed so that the maker stays small."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = slice_dataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    plain = io.BytesIO()
    pydicom.dcmwrite(plain, ds, enforce_file_format=True)
    data = plain.getvalue()
    meta_end = 132 + 12 + struct.unpack_from("<L", data, 132 + 8)[0]
    pixel_at = data.rindex(b"\xe0\x7f\x10\x00OB") if b"\xe0\x7f\x10\x00OB" in data else data.rindex(b"\xe0\x7f\x10\x00OW")
    header = data[meta_end:pixel_at + 8]  # up to the pixel data element's length field
    pixel_bytes = pixel_mb * 2**20
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    meta = io.BytesIO()
    pydicom.dcmwrite(meta, ds, enforce_file_format=True)
    meta_bytes = meta.getvalue()[:132 + 12 + struct.unpack_from("<L", meta.getvalue(), 132 + 8)[0]]
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(2**20)
    with open(path, "wb") as out:
        out.write(meta_bytes)
        out.write(deflater.compress(header + struct.pack("<L", pixel_bytes)))
        for _ in range(pixel_mb):
            out.write(deflater.compress(zeros))
        out.write(deflater.flush())


def make_j2k_bomb(path: Path, size: int) -> None:
    import numpy as np
    import openjpeg
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    stream = openjpeg.encode(np.zeros((size, size), np.uint16), bits_stored=16)
    ds = slice_dataset()
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def child(kind: str, path: str, workdir: str) -> None:
    """Runs in a fresh process: ingest (or, for --before, the old code path) and report."""
    if kind.startswith("before-"):
        import pydicom

        before = peak_mb()
        start = time.perf_counter()
        try:
            if kind == "before-deflate":  # the old _deflated_pixel_length: read the whole data set
                outcome = f"read {len(pydicom.dcmread(path).PixelData)} pixel bytes"
            else:  # the old _check_compressed_decodes: decode the first frame
                from pydicom.pixels import pixel_array

                outcome = f"decoded {pixel_array(path, index=0).nbytes} bytes"
        except Exception as exc:  # the decoder may refuse after decoding
            outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
        print(json.dumps({"before_mb": before, "peak_mb": peak_mb(), "seconds": time.perf_counter() - start,
                          "outcome": outcome}))
        return
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{Path(workdir) / 'bench.sqlite3'}")
    os.environ["MEDIA_ROOT"] = str(Path(workdir) / "media")
    os.environ["RADLOOP_VAR_DIR"] = str(Path(workdir) / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "webapp.settings"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from webapp.archive import services

    before = peak_mb()
    start = time.perf_counter()
    (outcome,) = services.ingest_path(None, Path(path))
    print(json.dumps({"before_mb": before, "peak_mb": peak_mb(), "seconds": time.perf_counter() - start,
                      "outcome": f"{outcome.outcome}: {outcome.reason}"}))


def run_child(kind: str, path: Path, workdir: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", kind, str(path), str(workdir)],
                            capture_output=True, text=True, cwd=ROOT)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"before_mb": 0, "peak_mb": 0, "seconds": 0, "outcome": f"child failed: {result.stderr[-300:]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deflate-mb", type=int, default=1024)
    parser.add_argument("--j2k-size", type=int, default=8192)
    parser.add_argument("--before", action="store_true", help="also measure the old code path")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="radloop-bomb-") as tmp:
        workdir = Path(tmp)
        os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir / 'bench.sqlite3'}")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True,
                       env={**os.environ, "MEDIA_ROOT": str(workdir / "media"), "RADLOOP_VAR_DIR": str(workdir / "var")})
        bombs = {"deflate": workdir / "deflate-bomb.dcm", "j2k": workdir / "j2k-bomb.dcm"}
        make_deflate_bomb(bombs["deflate"], args.deflate_mb)
        make_j2k_bomb(bombs["j2k"], args.j2k_size)
        implied = {"deflate": f"{args.deflate_mb} MB of pixels", "j2k": f"{args.j2k_size}² × 2 bytes = "
                   f"{args.j2k_size ** 2 * 2 / 2**20:.0f} MB decoded"}
        print(f"{'bomb':8} {'file':>10} {'inflates to':>28}  {'path':8} {'RSS before':>10} {'peak RSS':>9} {'time':>7}  outcome")
        for kind, path in bombs.items():
            paths = ["ingest"] + (["before"] if args.before else [])
            for which in paths:
                r = run_child(kind if which == "ingest" else f"before-{kind}", path, workdir)
                print(f"{kind:8} {path.stat().st_size / 1024:>8.1f}KB {implied[kind]:>28}  {which:8} "
                      f"{r['before_mb']:>8.0f}MB {r['peak_mb']:>7.0f}MB {r['seconds']:>6.2f}s  {r['outcome'][:110]}")


if __name__ == "__main__":
    main()
