"""Hostile dataset files: tiny on disk, gigabytes once decoded."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def image_bomb(path: Path, side: int = 6000) -> Path:
    """An ImageFolder zip of two side x side black PNGs (a few KB; ~1 GB decoded as float32)."""
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG", optimize=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/a/0.png", buffer.getvalue())
        archive.writestr("train/b/0.png", buffer.getvalue())
    return path


def npz_bomb(path: Path, megabytes: int = 256) -> Path:
    """``savez_compressed`` of ``megabytes`` MB of float64 zeros (about 1/1000 of that on disk)."""
    rows = megabytes * 1024 * 1024 // (8 * 1024)
    np.savez_compressed(
        path, x_train=np.zeros((rows, 1024)), y_train=np.zeros(rows, dtype=np.int64)
    )
    return path
