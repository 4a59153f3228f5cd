"""The Vite manifest (static/dist/.vite/manifest.json): hashed file names of the built viewer."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.contrib.staticfiles import finders

ENTRY = "src/main.js"
DIST = "dist"


class BundleMissing(RuntimeError):
    """The viewer was not built: `make setup` (npm ci && npm run build in frontend/) makes it."""


@dataclass(frozen=True)
class Bundle:
    script: str  # static path of the entry module, e.g. "dist/assets/viewer-1a2b3c.js"
    css: tuple[str, ...]
    preload: tuple[str, ...]  # static chunks the entry imports


def _manifest_path() -> Path | None:
    found = finders.find(f"{DIST}/.vite/manifest.json")
    if found:
        return Path(found)
    collected = Path(settings.STATIC_ROOT) / DIST / ".vite" / "manifest.json"
    return collected if collected.exists() else None


def _read(path: Path, mtime: float) -> Bundle:
    manifest = json.loads(path.read_text())
    entry = manifest.get(ENTRY)
    if entry is None:
        raise BundleMissing(f"{path} has no entry for {ENTRY}")
    preload = []
    for key in entry.get("imports", []):
        chunk = manifest.get(key)
        if chunk:
            preload.append(f"{DIST}/{chunk['file']}")
    return Bundle(
        script=f"{DIST}/{entry['file']}",
        css=tuple(f"{DIST}/{c}" for c in entry.get("css", [])),
        preload=tuple(preload),
    )


_cached = lru_cache(maxsize=2)(_read)


def viewer_bundle() -> Bundle:
    """The built viewer's files; re-read when the manifest changes (a rebuild while running)."""
    path = _manifest_path()
    if path is None:
        raise BundleMissing("The viewer is not built: run `make setup` (npm ci and npm run build in frontend/).")
    return _cached(path, path.stat().st_mtime)
