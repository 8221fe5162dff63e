"""Generated image datasets: ImageFolder trees of JPEG/PNG images of varying sizes whose
classes a small network can tell apart (each class its own colour and stripe pattern),
and the awkward files a real folder holds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = [(200, 40, 40), (40, 180, 60), (50, 70, 210), (220, 200, 40)]


def class_image(label: int, height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image of class ``label``: its colour in stripes of its own period, plus noise."""
    rows = np.arange(height)[:, None]
    stripes = ((rows // (2 + 2 * label)) % 2).astype(np.float32)
    colour = np.array(COLOURS[label % len(COLOURS)], dtype=np.float32)
    pixels = stripes[..., None] * colour + (1 - stripes[..., None]) * (255 - colour) * 0.3
    pixels = pixels.repeat(width, axis=1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def image_tree(
    root: Path,
    *,
    classes: int = 3,
    per_class: int = 20,
    sizes: tuple[int, int] = (40, 120),
    split: str = "train",
    seed: int = 0,
) -> list[Path]:
    """``root/<split>/class_<k>/<n>.jpg|png`` of sizes drawn in ``sizes``; the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for label in range(classes):
        folder = root / split / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            height, width = (int(v) for v in rng.integers(*sizes, size=2))
            suffix = "png" if n % 4 == 0 else "jpg"
            path = folder / f"{n:03d}.{suffix}"
            class_image(label, height, width, rng).save(path, quality=90)
            paths.append(path)
    return paths


def awkward_files(folder: Path) -> dict[str, str]:
    """Files a real class folder holds besides good images, in ``folder``: name -> what
    a reader must make of it ("ok" for the odd but readable ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    good = class_image(0, 60, 80, rng)
    buffer = io.BytesIO()
    good.save(buffer, format="JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image")
    good.convert("CMYK").save(folder / "cmyk.jpg", quality=90)
    grey16 = (np.asarray(good.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "grey16.png")
    rgba = good.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated a quarter turn
    good.save(folder / "rotated.jpg", exif=exif, quality=90)
    return {
        "truncated.jpg": "unreadable",
        "empty.jpg": "unreadable",
        "notes.txt": "unreadable",
        "cmyk.jpg": "ok",
        "grey16.png": "ok",
        "rgba.png": "ok",
        "rotated.jpg": "ok",
    }


def photo_tree(
    root: Path, *, classes: int = 2, per_class: int = 20, sizes: tuple[int, int] = (1500, 4000)
) -> list[Path]:
    """``root/<class>/<n>.jpg``: camera-sized JPEGs (sides drawn in ``sizes``), made fast by
    enlarging a 16x smaller class image (smooth, so a few hundred kB each)."""
    rng = np.random.default_rng(0)
    paths = []
    for label in range(classes):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            height, width = (int(v) for v in rng.integers(*sizes, size=2))
            small = class_image(label, height // 16, width // 16, rng)
            path = folder / f"{n:03d}.jpg"
            small.resize((width, height), Image.BILINEAR).save(path, quality=85)
            paths.append(path)
    return paths
