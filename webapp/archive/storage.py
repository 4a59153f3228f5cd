"""Archive storage: files appear under their final name only when complete (temp file + rename).

Behind Django's storage API so a later deployment can swap in object storage; the local
implementation guarantees that a reader never sees a half-written instance.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.files.storage import FileSystemStorage, storages

INCOMING_DIR = ".incoming"


class AtomicFileSystemStorage(FileSystemStorage):
    """FileSystemStorage with atomic writes and deterministic names (no '_abc123' suffixes)."""

    def get_available_name(self, name, max_length=None):
        return name  # archive paths are built from UIDs; an existing file is replaced atomically

    def _save(self, name, content):
        full_path = Path(self.path(name))
        full_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=full_path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in content.chunks():
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)  # var/ is private to the app's user (settings: RADLOOP_UMASK)
            os.replace(tmp, full_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return name

    def incoming_file(self) -> tuple[int, str]:
        """A new temporary file on the same filesystem as the archive (so a rename is atomic)."""
        incoming = Path(self.location) / INCOMING_DIR
        incoming.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=incoming, prefix="in-", suffix=".dcm")

    def commit_incoming(self, tmp_path: str, name: str) -> None:
        """Move a complete temporary file to its final name, atomically."""
        final = Path(self.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp_path, 0o600)
        os.replace(tmp_path, final)


def archive_storage() -> AtomicFileSystemStorage:
    return storages["archive"]
