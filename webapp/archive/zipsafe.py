"""Open zip uploads without trusting them: no path tricks, no zip bombs, junk skipped with a reason.

The whole archive is judged from its central directory before anything is extracted (counts,
sizes, offsets, compression methods, ratios); entries are then streamed one at a time (zipfile
never yields more than an entry's declared size), and an entry that turns out corrupt while it
is read (a CRC or size lie, a broken deflate stream) is refused on its own with the reason.
"""
from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO, Callable

from .dicomerrors import InvalidDicom

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
NESTED_ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"}
MIN_BYTES_FOR_RATIO_CHECK = 64 * 1024
SUPPORTED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate",
                     zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
EOCD = b"PK\x05\x06"
LOCAL_HEADER = b"PK\x03\x04"
# Whatever zipfile raises on a corrupt archive or entry.
READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError,
               RuntimeError, struct.error, KeyError, OverflowError, UnicodeDecodeError, LookupError)


class UnsafeZip(Exception):
    """The whole zip is refused; nothing from it is extracted."""


@dataclass
class ZipEntry:
    name: str
    size: int
    open: Callable[[], BinaryIO]
    skip_reason: str = ""
    unsafe: bool = False  # skipped because it is dangerous (reported as rejected), not just junk


def looks_like_zip(fp: BinaryIO) -> bool:
    head = fp.read(4)
    return head in (b"PK\x03\x04", b"PK\x05\x06")


def open_entries(fp: BinaryIO, *, max_total_bytes: int, max_entries: int, max_ratio: int) -> list[ZipEntry]:
    try:
        archive = zipfile.ZipFile(fp)
        all_infos = archive.infolist()
    except READ_ERRORS as exc:
        raise UnsafeZip(f"not a readable zip file: {exc}") from None
    _check_structure(fp, all_infos)
    infos = [i for i in all_infos if not i.is_dir()]
    if len(infos) > max_entries:
        raise UnsafeZip(f"zip holds {len(infos)} files, more than the limit of {max_entries}")
    total = sum(i.file_size for i in infos)
    if total > max_total_bytes:
        raise UnsafeZip(
            f"zip would unpack to {total / 2**20:.0f} MB, more than the limit of {max_total_bytes / 2**20:.0f} MB"
        )
    packed = sum(i.compress_size for i in infos)
    if total > MIN_BYTES_FOR_RATIO_CHECK and total > max_ratio * max(packed, 1):
        raise UnsafeZip(f"zip compression ratio {total / max(packed, 1):.0f}:1 exceeds {max_ratio}:1 (zip bomb?)")
    entries = []
    for info in infos:
        entry = ZipEntry(info.filename, info.file_size, _opener(archive, info))
        entry.skip_reason, entry.unsafe = _judge(info, max_ratio)
        entries.append(entry)
    return entries


def _check_structure(fp: BinaryIO, infos: list[zipfile.ZipInfo]) -> None:
    """The central directory agrees with itself and with the file: the end record's entry count,
    every entry's local header inside the file and where it says, known compression methods."""
    fp.seek(0, 2)
    size = fp.tell()
    tail_start = max(0, size - 65535 - 22)
    fp.seek(tail_start)
    tail = fp.read()
    at = tail.rfind(EOCD)
    if at >= 0 and at + 22 <= len(tail):
        on_disk, total = struct.unpack_from("<HH", tail, at + 8)
        if total != 0xFFFF and (on_disk != total or total != len(infos)):
            raise UnsafeZip(
                f"corrupt zip: the end record counts {total} entries but the central directory holds {len(infos)}"
            )
    for info in infos:
        if info.compress_type not in SUPPORTED_METHODS:
            raise UnsafeZip(
                f"zip entry {info.filename[:100]!r} uses compression method {info.compress_type}, which is not "
                f"supported (use {', '.join(SUPPORTED_METHODS.values())})"
            )
        end = info.header_offset + 30 + len(info.filename.encode("utf-8", "replace")) + info.compress_size
        if info.header_offset < 0 or end > size:
            raise UnsafeZip(f"corrupt zip: entry {info.filename[:100]!r} lies past the end of the file (truncated?)")
        fp.seek(info.header_offset)
        if fp.read(4) != LOCAL_HEADER:
            raise UnsafeZip(f"corrupt zip: entry {info.filename[:100]!r} has no local header where the directory says")


class _EntryReader:
    """Reads one zip entry; whatever zipfile raises on corrupt data becomes InvalidDicom (the entry
    is refused with the reason, the rest of the zip goes on)."""

    def __init__(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo):
        self.archive, self.info, self.stream = archive, info, None

    def read(self, size: int = -1) -> bytes:
        try:
            if self.stream is None:
                self.stream = self.archive.open(self.info)
            return self.stream.read(size)
        except READ_ERRORS as exc:
            raise InvalidDicom(f"corrupt zip entry: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.close()
            except READ_ERRORS:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    return lambda: _EntryReader(archive, info)


def _judge(info: zipfile.ZipInfo, max_ratio: int) -> tuple[str, bool]:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "refused: absolute path inside the zip", True
    if ".." in parts:
        return "refused: '..' in a path inside the zip", True
    if info.flag_bits & 0x1:
        return "refused: encrypted zip entry", True
    if info.file_size > MIN_BYTES_FOR_RATIO_CHECK and info.file_size > max_ratio * max(info.compress_size, 1):
        return f"refused: compression ratio above {max_ratio}:1 (zip bomb?)", True
    return skip_reason(name, inside_zip=True), False


def skip_reason(name: str, *, inside_zip: bool = False) -> str:
    """Why a file is passed over without being read (metadata and index files), or ''."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    base = parts[-1] if parts else name
    if "__MACOSX" in parts or base.startswith("._") or base.lower() in JUNK_NAMES:
        return "skipped: operating-system metadata file, not an image"
    if base.upper() == "DICOMDIR":
        return "skipped: DICOMDIR is an index of the other files, not an image"
    if inside_zip and PurePosixPath(base).suffix.lower() in NESTED_ARCHIVE_SUFFIXES:
        return "skipped: archives inside a zip are not unpacked; upload them on their own"
    return ""
