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
    preload: tuple[str, ...]  # chunks the entry imports, also those it imports later with import()


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
    # The entry is tiny and imports the viewer proper (Cornerstone) with import() once the first
    # image is painted; <link rel=modulepreload> has the browser download and parse those chunks
    # meanwhile, so that import() only evaluates them.
    preload: list[str] = []
    seen = {ENTRY}
    todo = list(entry.get("imports", [])) + list(entry.get("dynamicImports", []))
    while todo:
        key = todo.pop(0)
        chunk = manifest.get(key)
        if key in seen or not chunk:
            continue
        seen.add(key)
        preload.append(f"{DIST}/{chunk['file']}")
        todo += list(chunk.get("imports", []))  # (codecs a chunk may import() stay on demand)
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
