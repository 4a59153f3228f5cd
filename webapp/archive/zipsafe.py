"""Open zip uploads without trusting them: no path tricks, no zip bombs, junk skipped with a reason.

The whole archive is judged from its central directory before anything is extracted; entries are
then streamed one at a time (zipfile never yields more than an entry's declared size).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO, Callable

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}
NESTED_ARCHIVE_SUFFIXES = {".zip", ".tar", ".gz", ".tgz", ".7z", ".rar", ".bz2", ".xz"}
MIN_BYTES_FOR_RATIO_CHECK = 64 * 1024


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
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnsafeZip(f"not a readable zip file: {exc}") from None
    infos = [i for i in archive.infolist() if not i.is_dir()]
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


def _opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], BinaryIO]:
    return lambda: archive.open(info)


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
