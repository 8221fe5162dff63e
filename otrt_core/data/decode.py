"""The one image decode of otrt: untrusted bytes in, an RGB image out, within a pixel limit.

Every file a dataset holds goes through :func:`header` (while inspecting) and
:func:`decode` (while converting and training). What they promise:

- the pixel count is read from the header and checked against ``max_pixels``
  before a single pixel is decoded: a 2 KB PNG that claims 100000 x 100000
  costs nothing;
- only JPEG (with its multi-picture variant MPO), PNG, WebP, BMP, TIFF and GIF
  are opened: no plugin that hands bytes to another program (EPS) is reachable;
- a truncated or corrupt file is :class:`Unreadable`, never a half-grey image
  (PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False);
- PIL's warnings never show (its decompression-bomb warning, below the limit
  that counts here; a corrupt EXIF block): a file decodes or is
  :class:`Unreadable`. PIL's bomb error is :class:`Unreadable` too: PIL
  refuses more than ``2 * Image.MAX_IMAGE_PIXELS`` (179 M by default)
  whatever ``max_pixels`` says.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

# 50 M pixels: every camera photo up to 48 MP (8000 x 6000) passes, a 10000 x 10000
# bomb (300 MB as RGB) does not. What one decode may cost: 150 MB as RGB.
MAX_PIXELS = 50_000_000

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
ORIENTATION = 0x0112  # the EXIF tag
# EXIF orientation -> the transpose that shows the image upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
WHITE = (255, 255, 255, 255)
# What PIL raises on data it cannot decode (a cut stream, a bad chunk, a wrong length).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


class Unreadable(Exception):
    """A file that is not a decodable image within the limits; ``reason`` says why, shortly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says: the size as shown (after its EXIF orientation), the mode
    as stored (``"RGB"``, ``"L"``, ``"I;16"``, ``"CMYK"``, ...) and PIL's format name."""

    width: int
    height: int
    mode: str
    format: str
    orientation: int = 1  # EXIF's: 1 upright, 2-8 mirrored and/or turned


def header(data: bytes, max_pixels: int = MAX_PIXELS) -> ImageHeader:
    """The header of ``data``, read without decoding its pixels.

    Raises :class:`Unreadable` for zero bytes, anything but a JPEG, PNG, WebP,
    BMP, TIFF or GIF, and more than ``max_pixels`` pixels.
    """
    with _quiet():
        image = _open(data, max_pixels)
        orientation = _orientation(image)
    width, height = image.size
    if orientation in (5, 6, 7, 8):  # a quarter turn: width and height swap
        width, height = height, width
    return ImageHeader(width, height, image.mode, image.format or "", orientation)


def decode(
    data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int | None = None
) -> Image.Image:
    """``data`` decoded to an upright ``"RGB"`` PIL image (first frame of an animation).

    ``min_side``: the shorter side wanted at least; a JPEG is then decoded at
    1/2, 1/4 or 1/8 scale (its DCT scaling, PIL's ``draft``) when that still
    leaves ``min_side`` pixels, which is several times faster and smaller.
    Other formats decode at full size.

    Every mode becomes RGB by what it means, not by dropping bands:

    - grey (``1``, ``L``) gives three equal channels; palettes their colours;
    - transparency (``RGBA``, ``LA``, ``PA``, a palette's or a colour key's) is
      composited over white, as a viewer shows it (dropping alpha would turn
      the transparent background of a product photo into whatever colour the
      hidden pixels hold, often black);
    - 16-bit grey (``I;16``, ``I;16B``, ``I``) is scaled by 1/257 (65535 -> 255),
      not clipped; ``I`` is read as 16-bit data (PIL's mode for 16-bit files);
    - 32-bit float (``F``) is read as 0..1 (what GIMP and Photoshop export) and
      scaled to 0..255, clipped;
    - ``CMYK`` (Adobe's inverted JPEGs included), ``YCbCr`` and ``HSV`` by PIL's
      conversion, ``LAB`` through LittleCMS to sRGB.

    Raises :class:`Unreadable` as :func:`header` does, for a truncated or
    corrupt file (``"truncated or corrupt (…)"``) and for a mode none of these
    covers (``"unsupported mode …"``).
    """
    with _quiet():
        image = _open(data, max_pixels)
        orientation = _orientation(image)
        if min_side is not None and image.format in ("JPEG", "MPO"):
            _draft(image, min_side)
        try:
            image.load()
            rgb = _to_rgb(image)
        except DECODE_ERRORS as error:
            raise Unreadable(f"truncated or corrupt ({error})") from None
    if orientation in UPRIGHT:
        rgb = rgb.transpose(UPRIGHT[orientation])
    return rgb


def _quiet() -> warnings.catch_warnings:
    """PIL's warnings dropped: the file decodes or is :class:`Unreadable`, and a warning
    per file (a corrupt EXIF block, common in camera photos; PIL's bomb warning, below the
    limit checked here) would only flood the logs."""
    return warnings.catch_warnings(action="ignore")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """``data`` opened (its header read, nothing decoded) and its pixel count checked."""
    if not data:
        raise Unreadable("zero bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as error:
        raise Unreadable(f"too many pixels ({error})") from None
    except UnidentifiedImageError:
        raise Unreadable("not an image (JPEG, PNG, WebP, BMP, TIFF or GIF)") from None
    except DECODE_ERRORS as error:  # a header cut short or malformed
        raise Unreadable(f"truncated or corrupt ({error})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise Unreadable(f"too many pixels ({width}x{height} > {max_pixels})")
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1: upright), read from the header.

    A PNG's EXIF counts only when its chunk precedes the pixels: PIL would
    decode the whole image to look for one after them.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        return int(image.getexif().get(ORIENTATION, 1))
    except (*DECODE_ERRORS, TypeError):  # a malformed EXIF block: shown as stored
        return 1


def _draft(image: Image.Image, min_side: int) -> None:
    """Asks the JPEG decoder for the smallest DCT scale that keeps ``min_side`` pixels on
    the shorter side (``draft`` picks a scale whose result is at least the size asked)."""
    width, height = image.size
    shorter = min(width, height)
    if min_side >= shorter:
        return
    image.draft("RGB", (-(-width * min_side // shorter), -(-height * min_side // shorter)))


def _to_rgb(image: Image.Image) -> Image.Image:
    """A loaded image of any mode as RGB (see :func:`decode` for what each mode becomes)."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in SIXTEEN_BIT:
        grey = np.clip(np.asarray(image, dtype=np.int64), 0, 65535)
        return Image.fromarray(((grey + 128) // 257).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        value = np.clip(np.asarray(image, dtype=np.float32) * 255.0 + 0.5, 0, 255)
        return Image.fromarray(value.astype(np.uint8)).convert("RGB")
    if image.mode == "LAB":
        to_srgb = ImageCms.buildTransform(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
        )
        return ImageCms.applyTransform(image, to_srgb)
    try:
        if "A" in image.getbands() or "transparency" in image.info:
            rgba = image.convert("RGBA")
            return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba).convert("RGB")
        return image.convert("RGB")
    except ValueError:  # PIL has no conversion from this mode
        raise Unreadable(f"unsupported mode {image.mode}") from None
