"""The one image decode: every mode a camera or an export tool writes becomes the RGB it
means, EXIF turns it upright, and truncated files, non-images and bombs are Unreadable
(the bombs from their header alone)."""

import io
import struct
import subprocess
import sys
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from otrt_core.data.decode import MAX_PIXELS, Unreadable, decode, header

WHITE = (255, 255, 255)


def encoded(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(np.int64)  # (H, W, 3)


def gradient(width: int = 32, height: int = 24) -> Image.Image:
    """An RGB image whose every pixel differs: a lossless round trip shows any mix-up."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def png_claiming(width: int, height: int, *, full: bool = False) -> bytes:
    """A grey PNG claiming ``width`` x ``height`` pixels. ``full``: its data really holds them
    (zeros, deflated about a thousand to one); else it holds a few rows only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    deflate, row = zlib.compressobj(9), b"\0" * (1 + width)  # a filter byte, then the row
    idat = b"".join(deflate.compress(row) for _ in range(height if full else 10))
    idat += deflate.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- formats and modes -----------------------------------------------------------------


@pytest.mark.parametrize("format", ["PNG", "BMP", "TIFF", "WEBP"])
def test_a_lossless_format_gives_back_the_rgb_it_holds(format):
    original = gradient()
    options = {"lossless": True} if format == "WEBP" else {}
    decoded = decode(encoded(original, format, **options))
    np.testing.assert_array_equal(pixels(decoded), pixels(original))
    assert header(encoded(original, format, **options)).format == format


def test_a_jpeg_decodes_close_to_its_original():
    original = gradient()
    decoded = decode(encoded(original, "JPEG", quality=95))
    assert decoded.size == original.size
    assert np.abs(pixels(decoded) - pixels(original)).mean() < 4


def test_grey_gives_three_equal_channels():
    grey = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    decoded = pixels(decode(encoded(grey, "PNG")))
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], np.asarray(grey))
    assert header(encoded(grey, "PNG")).mode == "L"


def test_a_one_bit_image_is_black_and_white():
    bits = Image.new("1", (8, 8), 0)
    bits.putpixel((3, 3), 1)
    decoded = pixels(decode(encoded(bits, "PNG")))
    assert tuple(decoded[3, 3]) == WHITE and tuple(decoded[0, 0]) == (0, 0, 0)


def test_transparent_pixels_show_as_white_and_half_transparent_ones_blend():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200  # red everywhere, even where hidden
    rgba[0, 0, 3] = 255  # opaque
    rgba[0, 1, 3] = 0  # transparent
    rgba[0, 2, 3] = 128  # half
    decoded = pixels(decode(encoded(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert tuple(decoded[0, 0]) == (200, 0, 0)
    assert tuple(decoded[0, 1]) == WHITE
    np.testing.assert_allclose(decoded[0, 2], [227.5, 127.5, 127.5], atol=1.5)


def test_grey_with_alpha_is_composited_over_white():
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (0, 255))
    decoded = pixels(decode(encoded(la, "PNG")))
    assert tuple(decoded[0, 0]) == WHITE and tuple(decoded[0, 1]) == (0, 0, 0)


def test_a_palette_gives_its_colours_and_its_transparent_index_white():
    palette = Image.new("P", (3, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50, 0, 0, 0])
    palette.putdata([0, 1, 2])
    decoded = pixels(decode(encoded(palette, "PNG", transparency=2)))
    assert [tuple(p) for p in decoded[0]] == [(10, 20, 30), (200, 100, 50), WHITE]
    gif = pixels(decode(encoded(palette, "GIF", transparency=2)))
    assert [tuple(p) for p in gif[0]] == [(10, 20, 30), (200, 100, 50), WHITE]


def test_a_cmyk_jpeg_decodes_to_the_colour_it_was_made_from():
    original = Image.new("RGB", (16, 16), (200, 60, 30))
    data = encoded(original.convert("CMYK"), "JPEG", quality=95)  # Adobe's inverted CMYK
    assert header(data).mode == "CMYK"
    np.testing.assert_allclose(pixels(decode(data)).mean(axis=(0, 1)), [200, 60, 30], atol=3)


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_sixteen_bit_grey_is_scaled_not_clipped(format):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    data = encoded(Image.fromarray(values), format)
    assert header(data).mode == "I;16"
    decoded = pixels(decode(data))[..., 0]
    np.testing.assert_array_equal(decoded[0], [0, 1, 128, 255])


def test_big_endian_sixteen_bit_grey_is_scaled_too():
    values = np.array([[0, 32896, 65535]], dtype=">u2")
    image = Image.frombuffer("I;16B", (3, 1), values.tobytes(), "raw", "I;16B", 0, 1)
    data = encoded(image, "TIFF")
    assert header(data).mode == "I;16B"
    np.testing.assert_array_equal(pixels(decode(data))[0, :, 0], [0, 128, 255])


def test_float_images_are_read_as_zero_to_one():
    values = np.array([[0.0, 0.5, 1.0, 7.0]], dtype=np.float32)
    decoded = pixels(decode(encoded(Image.fromarray(values, "F"), "TIFF")))[..., 0]
    np.testing.assert_array_equal(decoded[0], [0, 128, 255, 255])


def test_lab_is_converted_to_srgb():
    lab = Image.new("LAB", (2, 2), (128, 128, 128))  # L* 50, a* = b* = 0: a mid grey
    decoded = pixels(decode(encoded(lab, "TIFF")))
    assert np.ptp(decoded[0, 0]) <= 2 and 100 < decoded[0, 0, 0] < 140


def test_an_animation_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in [(255, 0, 0), (0, 0, 255)]]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(pixels(decode(data))[4, 4]) == (255, 0, 0)


# --- orientation -----------------------------------------------------------------------


def test_exif_orientation_turns_the_image_upright():
    stored = Image.new("RGB", (40, 20), (0, 0, 0))  # 40 wide, 20 high
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # a red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise
    data = encoded(stored, "JPEG", exif=exif, quality=95)
    head = header(data)
    assert (head.width, head.height) == (20, 40)
    upright = pixels(decode(data))
    assert upright.shape == (40, 20, 3)
    # A clockwise quarter turn takes the top-left corner to the top-right.
    assert upright[3, 16, 0] > 200 and upright[3, 16, 2] < 60
    assert upright[3, 3, 0] < 60


# --- reduced-scale JPEG decoding ---------------------------------------------------------


def test_a_large_jpeg_decodes_at_reduced_scale_keeping_the_short_side():
    data = encoded(gradient(2000, 1600), "JPEG", quality=90)
    reduced = decode(data, min_side=128)
    assert 128 <= min(reduced.size) < 1600
    assert reduced.size == (250, 200)  # 1/8: the smallest DCT scale that keeps 128
    assert decode(data, min_side=1000).size == (2000, 1600)  # 1/2 would leave 800
    assert decode(data).size == (2000, 1600)


def test_min_side_changes_nothing_for_other_formats():
    assert decode(encoded(gradient(64, 48), "PNG"), min_side=8).size == (64, 48)


# --- what is refused ---------------------------------------------------------------------


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_a_truncated_file_is_unreadable(format):
    data = encoded(gradient(64, 64), format)
    with pytest.raises(Unreadable, match=r"^truncated"):
        decode(data[: len(data) // 2])


def test_zero_bytes_text_and_other_formats_are_unreadable():
    with pytest.raises(Unreadable, match=r"^zero bytes$"):
        header(b"")
    with pytest.raises(Unreadable, match=r"^not an image"):
        decode(b"label,file\ncat,1.jpg\n")
    with pytest.raises(Unreadable, match=r"^not an image"):  # PPM: a format PIL reads
        decode(encoded(gradient(), "PPM"))


def test_truncated_files_are_never_loaded_half_grey():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_too_many_pixels_is_refused_from_the_header():
    data = encoded(gradient(100, 100), "PNG")
    with pytest.raises(Unreadable, match=r"^too many pixels \(100x100 > 5000\)"):
        header(data, max_pixels=5000)
    with pytest.raises(Unreadable, match=r"^too many pixels"):
        decode(data, max_pixels=5000)
    assert decode(data, max_pixels=10_000).size == (100, 100)


def test_pils_bomb_guard_is_unreadable_and_never_a_warning(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decode(encoded(gradient(40, 40), "PNG")).size == (40, 40)  # PIL warns here
    assert caught == []
    with pytest.raises(Unreadable, match=r"^too many pixels"):  # PIL refuses past twice
        decode(encoded(gradient(50, 50), "PNG"))


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (pytest,
# hundreds of MB), which would hide the child's own growth.
MEASURE = """
import sys
from otrt_core.data.decode import Unreadable, decode, header
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
data, max_pixels = open(sys.argv[1], "rb").read(), int(sys.argv[2])
before = peak()
for read in (header, decode):
    try:
        read(data, max_pixels=max_pixels)
        print("decoded")
    except Unreadable as error:
        print(error.reason)
print(peak() - before)
"""


def peak_growth(path, max_pixels: int) -> tuple[list[str], int]:
    """What header and decode say of the file at ``path`` in a fresh process, and how far
    its peak memory grew meanwhile (MiB)."""
    command = [sys.executable, "-c", MEASURE, str(path), str(max_pixels)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    *said, growth_kib = done.stdout.splitlines()  # VmHWM is in KiB
    return said, int(growth_kib) // 1024


def test_a_bomb_is_refused_from_its_header_at_no_memory_cost(tmp_path):
    """9000 x 9000 grey in 80 KB: 81 MB once decoded, 243 MB as RGB. Under a limit that
    admits it, decoding it costs that; under ``MAX_PIXELS`` it costs nothing."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(9000, 9000, full=True))
    assert bomb.stat().st_size < 100_000 and MAX_PIXELS < 9000 * 9000
    said, growth = peak_growth(bomb, 100_000_000)
    assert said[1:] == ["decoded"] and growth > 80  # the bomb is real
    said, growth = peak_growth(bomb, MAX_PIXELS)
    assert len(said) == 2 and all(reason.startswith("too many pixels") for reason in said)
    assert growth < 10


def test_a_header_past_pils_own_guard_is_refused_too(tmp_path):
    """100000 x 100000 (10 GB): PIL's guard refuses it whatever the limit asked."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(100_000, 100_000))
    said, growth = peak_growth(bomb, 10**12)
    assert len(said) == 2 and all(reason.startswith("too many pixels") for reason in said)
    assert growth < 10
