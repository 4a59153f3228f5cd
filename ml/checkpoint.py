"""Self-describing model files: weights + typed configs + preprocessing + training summary + metrics.

Layout of the dict saved with ``torch.save`` (loadable with ``weights_only=True``)::

    {"format": "radloop-ml/1", "version": str, "code_version": str,
     "models": {"detector": {"class": "UNet3D", "config": {...}, "state_dict": {...}},
                "segmenter": {...}},
     "preprocessing": {...}, "inference": {...}, "training": {...}, "metrics": {...}}
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .networks import UNet3D, UNetConfig

FORMAT = "radloop-ml/1"
ML_ROOT = Path(__file__).resolve().parent


def code_version() -> str:
    """Short SHA-256 of the ``ml/`` Python sources (phantom generator included, weights excluded)."""
    h = hashlib.sha256()
    for path in sorted(ML_ROOT.rglob("*.py")):
        h.update(str(path.relative_to(ML_ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def pack_model(net: UNet3D, half: bool = True) -> dict:
    """A network as ``{"class", "config", "state_dict"}``; ``half`` stores weights as float16 (half size)."""
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in net.state_dict().items()}
    return {"class": type(net).__name__, "config": net.config.to_dict(), "state_dict": state}


def unpack_model(entry: dict) -> UNet3D:
    """Rebuild a network from :func:`pack_model` output alone (float32 weights, eval mode)."""
    if entry["class"] != "UNet3D":
        raise ValueError(f"unknown network class {entry['class']!r}")
    net = UNet3D(UNetConfig.from_dict(entry["config"]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in entry["state_dict"].items()})
    return net.eval()


def save_model_file(path, payload: dict) -> Path:
    """Write a model file atomically; ``payload`` gets ``format`` and ``code_version`` if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "code_version": code_version(), **payload}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_model_file(path) -> dict:
    """Read a model file (no network access, no pickled code: ``weights_only=True``)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} model file")
    return payload


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (a model file's identity), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
