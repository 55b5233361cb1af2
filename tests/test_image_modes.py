"""flowmo.data.images: every image mode Pillow opens decodes by the documented rules.

Each test writes a real file (with Pillow, or byte by byte for layouts Pillow cannot write:
16-bit colour PNGs, unsigned 32-bit and min-is-white TIFFs), loads it through the library
(``decode_image`` + ``image_to_tensor``, ``flowmo.cli.io.load_image``, ``ImageFolderDataset``) and
compares with values in [-1, 1] computed here by hand from the documented formulas.
Unconvertible files are skipped and counted by the datasets and refused by the command line.
"""

import io
import logging
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, features

from flowmo.data.image_modes import BACKGROUND, UnsupportedImageError
from flowmo.data.image_sizes import center_crop, resize_short_side
from flowmo.data.images import decode_image, image_to_tensor
from flowmo.cli.io import check_image_header, load_image
from flowmo.data.folders import ImageFolderDataset

ATOL = 1e-6  # float32 rounding (e.g. of v / 65535 * 2 - 1); 8-bit levels are 0.0078 apart


# ------------------------------------------------------------------ writers and helpers
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png(path, arr, color_type, bit_depth=8, chunks=()):
    """A PNG written byte by byte (filter 0, no interlace): any colour type and bit depth,
    extra chunks (e.g. tRNS) placed before the image data."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + arr[y].astype(dtype).tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    body = _chunk(b"IHDR", ihdr) + b"".join(_chunk(k, d) for k, d in chunks)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))
    return path


def write_tiff(path, arr, photometric, sample_format=1, big_endian=False, orientation=None):
    """An uncompressed baseline TIFF written byte by byte, one strip; the sample type is
    ``arr``'s dtype (BitsPerSample = its size), ``sample_format`` 1 unsigned, 2 signed, 3 float."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    spp = 1 if arr.ndim == 2 else arr.shape[2]
    bo = ">" if big_endian else "<"
    data = arr.astype(arr.dtype.newbyteorder(bo)).tobytes()
    bits = arr.dtype.itemsize * 8
    tags = {256: (4, [w]), 257: (4, [h]), 258: (3, [bits] * spp), 259: (3, [1]), 262: (3, [photometric]),
            273: (4, [0]), 277: (3, [spp]), 278: (4, [h]), 279: (4, [len(data)]), 339: (3, [sample_format] * spp)}
    if orientation is not None:
        tags[274] = (3, [orientation])
    n = len(tags)
    ifd_end = 8 + 2 + 12 * n + 4
    extra = b""
    entries = []
    for tag in sorted(tags):
        kind, values = tags[tag]
        fmt = bo + ("H" if kind == 3 else "I") * len(values)
        packed = struct.pack(fmt, *values)
        if len(packed) <= 4:
            entries.append((tag, kind, len(values), packed.ljust(4, b"\x00"), None))
        else:
            entries.append((tag, kind, len(values), struct.pack(bo + "I", ifd_end + len(extra)), None))
            extra += packed
    data_offset = ifd_end + len(extra)
    out = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(bo + "I", 8) + struct.pack(bo + "H", n)
    for tag, kind, count, value, _ in entries:
        if tag == 273:
            value = struct.pack(bo + "I", data_offset)
        out += struct.pack(bo + "HHI", tag, kind, count) + value
    path.write_bytes(out + struct.pack(bo + "I", 0) + extra + data)
    return path


def decoded(path) -> torch.Tensor:
    """The library's decoding of ``path`` at its own size: float32 (3, H, W) in [-1, 1]."""
    return image_to_tensor(decode_image(path))


def rgb8(values) -> torch.Tensor:
    """Expected tensor of 8-bit RGB values (H, W, 3) by hand: v / 255 * 2 - 1."""
    v = torch.as_tensor(np.asarray(values, dtype=np.float64))
    return (v / 255 * 2 - 1).permute(2, 0, 1).float()


def grey_unit(values) -> torch.Tensor:
    """Expected tensor of grey values x in [0, 1] (H, W): 2 x - 1 in all three channels."""
    v = torch.as_tensor(np.asarray(values, dtype=np.float64)) * 2 - 1
    return v.float().unsqueeze(0).expand(3, -1, -1)


def opened_mode(path) -> str:
    with Image.open(path) as im:
        return im.mode


GRADIENT16 = np.array([[0, 1, 255, 256], [32767, 32768, 40000, 65535]], dtype=np.uint16)


# ------------------------------------------------------------------ the reported fault
def test_mid_grey_16bit_png_is_mid_grey_not_white(tmp_path):
    """Issue 16: a 16-bit PNG (Pillow mode I;16) of 32768 everywhere loaded as +1.0 (white)."""
    Image.fromarray(np.full((12, 16), 32768, np.uint16)).save(tmp_path / "grey16.png")
    assert opened_mode(tmp_path / "grey16.png") == "I;16"
    expected = 32768 / 65535 * 2 - 1  # 1.5259e-05
    for train in (True, False):
        ds = ImageFolderDataset(tmp_path, 8, train=train)  # resized 12x16 -> 8x10, then cropped
        x = ds[0]
        assert x.shape == (3, 8, 8) and ds.skipped == 0
        torch.testing.assert_close(x, torch.full((3, 8, 8), expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(load_image(tmp_path / "grey16.png", 12), torch.full((3, 12, 12), expected),
                               atol=ATOL, rtol=0)


# ------------------------------------------------------------------ 16-bit and 32-bit grey
def _i16_png(p):
    Image.fromarray(GRADIENT16).save(p)


def _i16_tiff(p):
    Image.fromarray(GRADIENT16).save(p)


def _i16b_tiff(p):
    Image.frombytes("I;16B", (4, 2), GRADIENT16.astype(">u2").tobytes()).save(p)


def _i16l_tiff(p):
    Image.frombytes("I;16L", (4, 2), GRADIENT16.astype("<u2").tobytes()).save(p)


def _i16b_tiff_by_hand(p):
    write_tiff(p, GRADIENT16, photometric=1, big_endian=True)


def _i16_pgm(p):
    Image.fromarray(GRADIENT16).save(p)  # a P5 PGM with maxval 65535: Pillow opens it as mode I


CASES16 = {
    "I;16 PNG": ("grey.png", _i16_png, "I;16"),
    "I;16 TIFF": ("grey.tif", _i16_tiff, "I;16"),
    "I;16B TIFF (Pillow)": ("grey.tif", _i16b_tiff, "I;16B"),
    "I;16B TIFF (big-endian file)": ("grey.tif", _i16b_tiff_by_hand, "I;16B"),
    "I;16L TIFF": ("grey.tif", _i16l_tiff, "I;16"),
    "I PGM 16-bit": ("grey.pgm", _i16_pgm, "I"),
}


@pytest.mark.parametrize("case", list(CASES16))
def test_16bit_grey_is_scaled_by_1_over_65535(tmp_path, case):
    name, write, mode = CASES16[case]
    write(tmp_path / name)
    assert opened_mode(tmp_path / name) == mode
    torch.testing.assert_close(decoded(tmp_path / name), grey_unit(GRADIENT16 / 65535), atol=ATOL, rtol=0)


@pytest.mark.skipif(not features.check("jpg_2000"), reason="Pillow built without OpenJPEG")
def test_16bit_grey_jpeg2000(tmp_path):
    Image.fromarray(GRADIENT16).save(tmp_path / "grey.jp2")  # lossless by default
    assert opened_mode(tmp_path / "grey.jp2") == "I;16"
    torch.testing.assert_close(decoded(tmp_path / "grey.jp2"), grey_unit(GRADIENT16 / 65535), atol=ATOL, rtol=0)


def test_pgm_with_small_maxval(tmp_path):
    """maxval 1000: Pillow rescales to 0..65535 (rounded), so x = v / 1000 within 1/65535."""
    v = np.array([[0, 1, 500], [999, 1000, 250]], dtype=">u2")
    (tmp_path / "m.pgm").write_bytes(b"P5\n3 2\n1000\n" + v.tobytes())
    assert opened_mode(tmp_path / "m.pgm") == "I"
    torch.testing.assert_close(decoded(tmp_path / "m.pgm"), grey_unit(v / 1000), atol=2 / 65535, rtol=0)


def test_unsigned_32bit_tiff_uses_its_bit_depth(tmp_path):
    v = np.array([[0, 1, 2**31 - 1], [2**31, 3_000_000_000, 2**32 - 1]], dtype=np.uint32)
    write_tiff(tmp_path / "u32.tif", v, photometric=1)
    assert opened_mode(tmp_path / "u32.tif") == "I"
    torch.testing.assert_close(decoded(tmp_path / "u32.tif"), grey_unit(v / (2**32 - 1)), atol=ATOL, rtol=0)


def test_float_tiff_in_unit_range_is_taken_as_is(tmp_path):
    v = np.array([[0.0, 0.25, 0.5], [0.75, 1.0, 1 / 3]], dtype=np.float32)
    Image.fromarray(v).save(tmp_path / "f.tif")
    assert opened_mode(tmp_path / "f.tif") == "F"
    torch.testing.assert_close(decoded(tmp_path / "f.tif"), grey_unit(v), atol=ATOL, rtol=0)


def test_min_is_white_tiffs_are_inverted(tmp_path):
    """PhotometricInterpretation 0: 0 is white. Pillow inverts 8-bit data itself; flowmo
    inverts the modes it converts (16-bit, 32-bit integer, float)."""
    write_tiff(tmp_path / "w16.tif", GRADIENT16, photometric=0)
    torch.testing.assert_close(decoded(tmp_path / "w16.tif"), grey_unit(1 - GRADIENT16 / 65535), atol=ATOL, rtol=0)
    v8 = np.array([[0, 40, 255]], dtype=np.uint8)
    write_tiff(tmp_path / "w8.tif", v8, photometric=0)
    torch.testing.assert_close(decoded(tmp_path / "w8.tif"), grey_unit((255 - v8) / 255), atol=ATOL, rtol=0)
    f = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    write_tiff(tmp_path / "wf.tif", f, photometric=0, sample_format=3)
    assert opened_mode(tmp_path / "wf.tif") == "F"
    torch.testing.assert_close(decoded(tmp_path / "wf.tif"), grey_unit(1 - f), atol=ATOL, rtol=0)


def test_16bit_grey_transparent_level_becomes_white(tmp_path):
    v = np.array([[40000, 5], [5, 40000]], dtype=np.uint16)
    write_png(tmp_path / "t.png", v, 0, 16, [(b"tRNS", struct.pack(">H", 40000))])
    assert opened_mode(tmp_path / "t.png") == "I;16"
    expected = np.where(v == 40000, 1.0, v / 65535)
    torch.testing.assert_close(decoded(tmp_path / "t.png"), grey_unit(expected), atol=ATOL, rtol=0)


# ------------------------------------------------------------------ 8-bit modes
def test_bilevel(tmp_path):
    bits = np.array([[True, False, True], [False, False, True]])
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert opened_mode(tmp_path / "b.png") == "1"
    torch.testing.assert_close(decoded(tmp_path / "b.png"), grey_unit(bits.astype(float)), atol=ATOL, rtol=0)


@pytest.mark.parametrize("ext", ["png", "tif", "bmp", "jpg"])
def test_grey_8bit(tmp_path, ext):
    v = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)
    Image.fromarray(v).save(tmp_path / f"g.{ext}", **({"quality": 100} if ext == "jpg" else {}))
    assert opened_mode(tmp_path / f"g.{ext}") == "L"
    tol = 3 / 127.5 if ext == "jpg" else ATOL  # JPEG is lossy
    torch.testing.assert_close(decoded(tmp_path / f"g.{ext}"), rgb8(np.stack([v] * 3, -1)), atol=tol, rtol=0)


PALETTE = [10, 20, 30, 200, 100, 50, 0, 255, 0] + [0] * (3 * 253)


def _palette_image(indices):
    im = Image.fromarray(np.asarray(indices, dtype=np.uint8), "P")
    im.putpalette(PALETTE)
    return im


@pytest.mark.parametrize("ext", ["png", "gif", "tif", "bmp"])
def test_palette_without_transparency(tmp_path, ext):
    idx = np.array([[0, 1], [2, 1]])
    _palette_image(idx).save(tmp_path / f"p.{ext}")
    assert opened_mode(tmp_path / f"p.{ext}") == "P"
    colours = np.array(PALETTE[:9]).reshape(3, 3)
    torch.testing.assert_close(decoded(tmp_path / f"p.{ext}"), rgb8(colours[idx]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("ext", ["png", "gif"])
def test_palette_with_a_transparent_index_is_white_there(tmp_path, ext):
    idx = np.array([[0, 1], [2, 1]])
    _palette_image(idx).save(tmp_path / f"p.{ext}", transparency=1)
    with Image.open(tmp_path / f"p.{ext}") as im:
        assert im.mode == "P" and im.info.get("transparency") == 1
    colours = np.array(PALETTE[:9]).reshape(3, 3)
    expected = colours[idx]
    expected[idx == 1] = BACKGROUND
    torch.testing.assert_close(decoded(tmp_path / f"p.{ext}"), rgb8(expected), atol=ATOL, rtol=0)


def test_palette_with_alpha_table(tmp_path):
    """A PNG palette with a partial tRNS table (per-index alpha): composited by hand."""
    idx = np.array([[0, 1, 2]], dtype=np.uint8)
    plte = bytes(PALETTE[:9])
    write_png(tmp_path / "pa.png", idx, 3, 8, [(b"PLTE", plte), (b"tRNS", bytes([255, 128, 0]))])
    alpha = np.array([255, 128, 0])[idx]
    colours = np.array(PALETTE[:9]).reshape(3, 3)[idx]
    expected = (colours * alpha[..., None] + 255 * (255 - alpha[..., None]) + 127) // 255
    torch.testing.assert_close(decoded(tmp_path / "pa.png"), rgb8(expected), atol=ATOL, rtol=0)


def test_pa_tiff(tmp_path):
    im = Image.new("PA", (2, 1))
    im.putpalette(PALETTE)
    im.putpixel((0, 0), (1, 255))
    im.putpixel((1, 0), (1, 64))
    im.save(tmp_path / "pa.tif")
    assert opened_mode(tmp_path / "pa.tif") == "PA"
    c, a = np.array([200, 100, 50]), 64
    half = (c * a + 255 * (255 - a) + 127) // 255  # (200*64 + 255*191 + 127) // 255 = 241 for R
    torch.testing.assert_close(decoded(tmp_path / "pa.tif"), rgb8([[c, half]]), atol=ATOL, rtol=0)


def test_rgba_pixel_over_white_by_hand(tmp_path):
    px = np.array([[[255, 0, 0, 128], [12, 34, 56, 0], [1, 2, 3, 255], [100, 200, 50, 1]]], dtype=np.uint8)
    Image.fromarray(px, "RGBA").save(tmp_path / "a.png")
    # (255, 0, 0, 128): R = (255*128 + 255*127)/255 = 255, G = B = 255*127/255 = 127.
    # (12, 34, 56, 0) is fully transparent: white. (1, 2, 3, 255) is opaque: unchanged.
    # (100, 200, 50, 1): (100 + 255*254)/255 = 254.39 -> 254, (200 + 64770)/255 = 254.78 -> 255, 254.2 -> 254.
    expected = [[[255, 127, 127], [255, 255, 255], [1, 2, 3], [254, 255, 254]]]
    torch.testing.assert_close(decoded(tmp_path / "a.png"), rgb8(expected), atol=ATOL, rtol=0)
    for fmt in ("tif", "webp"):  # the same rule from other containers (WebP lossless)
        Image.fromarray(px, "RGBA").save(tmp_path / f"a.{fmt}", **({"lossless": True} if fmt == "webp" else {}))
        assert opened_mode(tmp_path / f"a.{fmt}") == "RGBA"
    torch.testing.assert_close(decoded(tmp_path / "a.tif"), rgb8(expected), atol=ATOL, rtol=0)


def test_la_over_white_by_hand(tmp_path):
    Image.fromarray(np.array([[[100, 50], [0, 0], [200, 255]]], dtype=np.uint8), "LA").save(tmp_path / "la.png")
    assert opened_mode(tmp_path / "la.png") == "LA"
    # (100, 50): (100*50 + 255*205) / 255 = 224.6 -> 225; (0, 0) -> white; (200, 255) -> 200.
    torch.testing.assert_close(decoded(tmp_path / "la.png"), rgb8([[[225] * 3, [255] * 3, [200] * 3]]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode,colour", [("L", 100), ("RGB", (1, 2, 3)), ("1", 1)])
def test_transparent_colour_key_is_white(tmp_path, mode, colour):
    im = Image.new(mode, (2, 1), colour)
    im.putpixel((1, 0), 0)
    im.save(tmp_path / "k.png", transparency=colour)
    with Image.open(tmp_path / "k.png") as opened:
        assert opened.mode == mode and "transparency" in opened.info
    expected = [[[255, 255, 255], [0, 0, 0]]]
    torch.testing.assert_close(decoded(tmp_path / "k.png"), rgb8(expected), atol=ATOL, rtol=0)


def test_rgb_8bit_is_exact(tmp_path):
    v = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for ext in ("png", "tif", "bmp", "ppm", "tga"):
        Image.fromarray(v).save(tmp_path / f"c.{ext}")
        assert opened_mode(tmp_path / f"c.{ext}") == "RGB"
        torch.testing.assert_close(decoded(tmp_path / f"c.{ext}"), rgb8(v), atol=ATOL, rtol=0)


def test_cmyk_uses_pillows_conversion(tmp_path):
    cmyk = np.array([[[10, 20, 30, 40], [0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    assert opened_mode(tmp_path / "c.tif") == "CMYK"
    # Pillow: R = (255 - C)(255 - K) / 255, rounded; likewise G with M, B with Y.
    c, k = cmyk[..., :3].astype(float), cmyk[..., 3:].astype(float)
    expected = np.floor((255 - c) * (255 - k) / 255 + 0.5)  # (245*215/255 = 206.6 -> 207, ...)
    torch.testing.assert_close(decoded(tmp_path / "c.tif"), rgb8(expected), atol=1 / 127.5, rtol=0)


def test_ycbcr_tiff(tmp_path):
    ycc = np.array([[[100, 120, 140], [128, 128, 128], [235, 128, 128]]], dtype=np.uint8)
    Image.fromarray(ycc, "YCbCr").save(tmp_path / "y.tif")
    assert opened_mode(tmp_path / "y.tif") == "YCbCr"
    y, cb, cr = (ycc[..., i].astype(float) for i in range(3))
    # JFIF full-range BT.601
    expected = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
                         y + 1.772 * (cb - 128)], -1)
    torch.testing.assert_close(decoded(tmp_path / "y.tif"), rgb8(np.clip(expected, 0, 255)), atol=1.01 / 127.5, rtol=0)


def test_lab_tiff(tmp_path):
    lab = np.array([[[50, 120, 140], [128, 128, 128], [200, 128, 128]]], dtype=np.uint8)
    # merged band by band: fromarray(..., "LAB") would read a*, b* as signed bytes
    Image.merge("LAB", [Image.fromarray(np.ascontiguousarray(lab[..., i])) for i in range(3)]).save(tmp_path / "l.tif")
    assert opened_mode(tmp_path / "l.tif") == "LAB"
    # CIELab (D50; Pillow stores L* * 255/100 and a*, b* + 128) -> XYZ -> Bradford-adapted sRGB
    L, a, b = lab[..., 0] / 255 * 100, lab[..., 1] - 128.0, lab[..., 2] - 128.0
    fy = (L + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200
    d = 6 / 29
    finv = lambda t: np.where(t > d, t**3, 3 * d * d * (t - 4 / 29))  # noqa: E731
    xyz = np.stack([0.96422 * finv(fx), finv(fy), 0.82521 * finv(fz)], -1)
    m = np.array([[3.1338561, -1.6168667, -0.4906146], [-0.9787684, 1.9161415, 0.0334540],
                  [0.0719453, -0.2289914, 1.4052427]])
    lin = np.clip(xyz @ m.T, 0, 1)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055) * 255
    torch.testing.assert_close(decoded(tmp_path / "l.tif"), rgb8(srgb), atol=1.01 / 127.5, rtol=0)


# ------------------------------------------------------------------ 16-bit colour (8-bit precision)
RGB16 = np.array([[[40000, 65535, 257], [1, 2, 3]], [[65535, 0, 32768], [255, 256, 511]]], dtype=np.uint16)


def test_16bit_rgb_png_and_tiff_keep_the_high_byte(tmp_path):
    """Pillow opens 16-bit colour as 8-bit RGB, keeping v >> 8: scaled right, 8-bit precision."""
    write_png(tmp_path / "c16.png", RGB16, 2, 16)
    write_tiff(tmp_path / "c16.tif", RGB16, photometric=2)
    for name in ("c16.png", "c16.tif"):
        assert opened_mode(tmp_path / name) == "RGB"
        x = decoded(tmp_path / name)
        torch.testing.assert_close(x, rgb8(RGB16 >> 8), atol=ATOL, rtol=0)
        # never clipped: within one 8-bit level of the exact v / 65535
        exact = torch.from_numpy(RGB16 / 65535 * 2 - 1).permute(2, 0, 1).float()
        assert float((x - exact).abs().max()) <= 2 / 255 + ATOL


def test_16bit_rgba_and_la_png_are_composited(tmp_path):
    alpha = np.full((2, 2, 1), 30000, np.uint16)
    write_png(tmp_path / "c16a.png", np.concatenate([RGB16, alpha], -1), 6, 16)
    write_png(tmp_path / "la16.png", np.concatenate([RGB16[..., :1], alpha], -1), 4, 16)
    a = 30000 >> 8  # 117
    c = (RGB16 >> 8).astype(np.int64)
    expected = (c * a + 255 * (255 - a) + 127) // 255
    torch.testing.assert_close(decoded(tmp_path / "c16a.png"), rgb8(expected), atol=ATOL, rtol=0)
    grey = np.repeat(expected[..., :1], 3, -1)
    torch.testing.assert_close(decoded(tmp_path / "la16.png"), rgb8(grey), atol=ATOL, rtol=0)


# ------------------------------------------------------------------ orientation and geometry
def test_exif_orientation_is_applied(tmp_path):
    v = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(v).save(tmp_path / "o.png", exif=exif)
    x = decoded(tmp_path / "o.png")
    torch.testing.assert_close(x, rgb8(np.rot90(v, k=-1).copy()), atol=ATOL, rtol=0)


def test_orientation_and_min_is_white_together_on_16bit_tiff(tmp_path):
    write_tiff(tmp_path / "o16.tif", GRADIENT16, photometric=0, orientation=3)  # rotate 180
    expected = np.rot90(1 - GRADIENT16 / 65535, 2).copy()
    torch.testing.assert_close(decoded(tmp_path / "o16.tif"), grey_unit(expected), atol=ATOL, rtol=0)


def test_high_depth_images_are_resized_without_8bit_rounding(tmp_path):
    Image.fromarray(np.full((30, 45), 12345, np.uint16)).save(tmp_path / "big.png")
    img = center_crop(resize_short_side(decode_image(tmp_path / "big.png"), 8), 8)
    assert img.mode == "F" and img.size == (8, 8)
    torch.testing.assert_close(image_to_tensor(img), torch.full((3, 8, 8), 12345 / 65535 * 2 - 1), atol=1e-5, rtol=0)
    ramp = np.tile(np.linspace(0, 65535, 40).astype(np.uint16), (40, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    x = load_image(tmp_path / "ramp.png", 16)  # bicubic may overshoot: clamped to [-1, 1]
    assert x.shape == (3, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    levels = (x + 1) * 127.5  # integers if the pixels had been rounded to 8 bits on the way
    assert float((levels - levels.round()).abs().max()) > 0.01


# ------------------------------------------------------------------ what is refused
def _signed16(p):
    write_tiff(p, np.array([[-5, 0], [100, 30000]], dtype=np.int16), photometric=1, sample_format=2)


def _signed32(p):
    Image.fromarray(np.array([[-5, 0], [100, 30000]], dtype=np.int32)).save(p)


def _float_out_of_range(p):
    Image.fromarray(np.array([[0.0, 2.0], [0.5, 255.0]], dtype=np.float32)).save(p)


def _float_nan(p):
    Image.fromarray(np.array([[0.0, np.nan], [0.5, 1.0]], dtype=np.float32)).save(p)


def _float_negative(p):
    Image.fromarray(np.array([[-0.5, 0.0], [0.5, 1.0]], dtype=np.float32)).save(p)


REFUSED = {
    "signed 16-bit TIFF": (_signed16, "signed", True),
    "signed 32-bit TIFF": (_signed32, "signed", True),
    "float TIFF outside [0, 1]": (_float_out_of_range, "not in \\[0, 1\\]", False),
    "float TIFF with NaN": (_float_nan, "NaN or infinity", False),
    "float TIFF with negative values": (_float_negative, "not in \\[0, 1\\]", False),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unconvertible_files_are_refused_with_the_file_named(tmp_path, case):
    write, needle, by_header = REFUSED[case]
    path = tmp_path / "bad.tif"
    write(path)
    with pytest.raises(UnsupportedImageError, match=needle) as info:
        decode_image(path)
    assert str(path) in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(ValueError, match="bad.tif' is not a readable image .*UnsupportedImageError"):
        load_image(path, 2)
    if by_header:  # refused before any model work by the CLI's header check
        with pytest.raises(ValueError, match="not a readable image"):
            check_image_header(path)
    else:
        check_image_header(path)  # float range needs the pixels: refused at decode time


@pytest.mark.filterwarnings("ignore:IM image format is deprecated:DeprecationWarning")
def test_mode_i_of_unknown_depth_is_refused(tmp_path):
    """Pillow's own IM format stores 32-bit integers with no white level."""
    try:
        Image.fromarray(np.array([[0, 40000]], dtype=np.int32)).save(tmp_path / "x.im")
    except (KeyError, ValueError, OSError):  # the IM format is deprecated (removal planned in Pillow 15)
        pytest.skip("this Pillow cannot write IM files")
    assert opened_mode(tmp_path / "x.im") == "I"
    with pytest.raises(UnsupportedImageError, match="no known bit depth"):
        decode_image(tmp_path / "x.im")


def test_unconvertible_files_are_skipped_and_counted_in_training_and_evaluation(tmp_path, caplog):
    good = np.full((8, 8), 32768, np.uint16)
    Image.fromarray(good).save(tmp_path / "a_good.tif")
    _float_out_of_range(tmp_path / "b_float.tif")
    _signed32(tmp_path / "c_signed.tif")
    (tmp_path / "d_corrupt.tif").write_bytes(b"II*\x00garbage")
    with caplog.at_level(logging.WARNING, logger="flowmo.data.folders"):
        ds = ImageFolderDataset(tmp_path, 8, train=True, extensions=("tif",))
        for i in range(len(ds)):  # the bad files are replaced by the good one, never a crash
            torch.testing.assert_close(ds[i], torch.full((3, 8, 8), 32768 / 65535 * 2 - 1), atol=ATOL, rtol=0)
    bad = {"b_float.tif", "c_signed.tif", "d_corrupt.tif"}
    assert ds.skipped == 3 and {p.name for p in ds.bad_paths} == bad
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "b_float.tif" in logged and "UnsupportedImageError" in logged and "not in [0, 1]" in logged
    # scan_corrupt finds them up front too
    fresh = ImageFolderDataset(tmp_path, 8, train=False, extensions=("tif",))
    assert {p.name for p in fresh.scan_corrupt()} == bad and len(fresh) == 1 and fresh.skipped == 3

    # evaluation (flowmo eval --data FOLDER): the bad files are skipped and listed, never replaced
    from flowmo.data.eval_images import folder_batches

    ev = ImageFolderDataset(tmp_path, 8, train=False, extensions=("tif",))
    skipped: list = []
    batches = list(folder_batches(ev, range(len(ev)), 4, 0, skipped))
    assert sum(len(ids) for _, ids in batches) == 1
    assert sorted(p.rsplit("/", 1)[-1] for p in skipped) == sorted(bad)


def test_trainer_item_loader_reports_unconvertible_files(tmp_path):
    from flowmo.train.trainer import _Indexed

    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(tmp_path / "a.png")
    _float_out_of_range(tmp_path / "b.tif")
    ds = ImageFolderDataset(tmp_path, 8, train=True, extensions=("png", "tif"))
    image, newly_bad = _Indexed(ds)[(0, 1)]
    assert newly_bad == [str(tmp_path / "b.tif")]
    torch.testing.assert_close(image, torch.full((3, 8, 8), 1000 / 65535 * 2 - 1), atol=ATOL, rtol=0)


def test_cli_reconstructs_16bit_and_refuses_unconvertible(tmp_path, capsys):
    import flowmo
    from flowmo import cli

    model = tmp_path / "model"
    flowmo.build(flowmo.flowmo_tiny()).save_pretrained(model)
    size = flowmo.flowmo_tiny().image_size
    Image.fromarray(np.full((size, size), 32768, np.uint16)).save(tmp_path / "grey16.png")
    out = tmp_path / "out"
    rc = cli.main(["reconstruct", "--model", str(model), "--input", str(tmp_path / "grey16.png"),
                   "--output", str(out), "--steps", "1"])
    assert rc == 0 and (out / "grey16.png").is_file()
    capsys.readouterr()
    for write, name in ((_signed32, "signed.tif"), (_float_out_of_range, "float.tif")):
        write(tmp_path / name)
        rc = cli.main(["tokenize", "--model", str(model), "--input", str(tmp_path / name),
                       "--output", str(tmp_path / "t.safetensors")])
        err = capsys.readouterr().err
        assert rc == 2 and name in err and "not a readable image" in err
        assert len([ln for ln in err.splitlines() if ln.strip()]) == 1


# ------------------------------------------------------------------ properties
_files = settings(max_examples=40, deadline=None, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])


@_files
@given(arr=arrays(np.uint16, st.tuples(st.integers(1, 6), st.integers(1, 6))), ext=st.sampled_from(["png", "tif"]))
def test_random_16bit_grey_round_trips_to_value_over_65535(tmp_path, arr, ext):
    path = tmp_path / f"r.{ext}"
    Image.fromarray(arr).save(path)
    torch.testing.assert_close(decoded(path), grey_unit(arr / 65535), atol=ATOL, rtol=0)


@_files
@given(arr=arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  elements=st.floats(0, 1, width=32)))
def test_random_unit_floats_round_trip_exactly(tmp_path, arr):
    Image.fromarray(arr).save(tmp_path / "f.tif")
    torch.testing.assert_close(decoded(tmp_path / "f.tif"), grey_unit(arr.astype(np.float64)), atol=ATOL, rtol=0)


@_files
@given(arr=arrays(np.uint8, st.tuples(st.integers(1, 5), st.integers(1, 5), st.just(4))))
def test_random_rgba_composites_over_white_by_the_formula(tmp_path, arr):
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    c, a = arr[..., :3].astype(np.int64), arr[..., 3:].astype(np.int64)
    expected = np.rint((c * a + 255 * (255 - a)) / 255)
    torch.testing.assert_close(decoded(tmp_path / "a.png"), rgb8(expected), atol=ATOL, rtol=0)


# ------------------------------------------------------------------ API errors
def test_decoder_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="source must be a path or a binary file object"):
        decode_image(3)
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="img must be a decoded image of mode 'RGB' or 'F'"):
        image_to_tensor(Image.new("L", (2, 2)))
    with pytest.raises(TypeError, match="img must be a PIL.Image.Image"):
        image_to_tensor(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="size must be a positive int"):
        resize_short_side(Image.new("RGB", (4, 4)), 0)
    with pytest.raises(ValueError, match="size must be a positive int no larger"):
        center_crop(Image.new("RGB", (4, 4)), 5)
    buf = io.BytesIO()
    Image.fromarray(np.full((2, 2), 65535, np.uint16)).save(buf, format="PNG")
    buf.seek(0)
    torch.testing.assert_close(decoded(buf), torch.ones(3, 2, 2), atol=ATOL, rtol=0)  # file objects work too


def test_folders_read_every_listed_extension_by_default(tmp_path):
    """Training, `flowmo eval --data` and the CLI's folder inputs list the same extensions
    (flowmo.data.images.IMAGE_EXTENSIONS); TIFF, GIF, BMP and PGM were silently left out before."""
    from flowmo.data.images import IMAGE_EXTENSIONS
    from flowmo.cli.io import list_images

    grey = np.full((8, 8), 32768, np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.tif")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "b.gif")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "c.bmp")
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "d.pgm")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / "e.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert {"tif", "tiff", "gif", "bmp", "pgm", "png", "jpg", "jpeg", "webp"} <= set(IMAGE_EXTENSIONS)
    ds = ImageFolderDataset(tmp_path, 8, train=False)
    assert sorted(p.name for p in ds.files) == ["a.tif", "b.gif", "c.bmp", "d.pgm", "e.png"]
    torch.testing.assert_close(ds[0], torch.full((3, 8, 8), 32768 / 65535 * 2 - 1), atol=ATOL, rtol=0)
    assert sorted(f.path.name for f in list_images(tmp_path)) == ["a.tif", "b.gif", "c.bmp", "d.pgm", "e.png"]


def test_release_protocol_loader_keeps_16bit_grey(tmp_path):
    """`flowmo eval --protocol release` crashed on a 16-bit grey PNG (mode F after decoding);
    it now gives 2 v - 1 on all three channels, as the standard loader."""
    from flowmo.data.eval_images import release_image_folder

    Image.fromarray(np.full((40, 48), 32768, np.uint16)).save(tmp_path / "grey16.png")
    x = release_image_folder(tmp_path, 32)[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.full((3, 32, 32), 32768 / 65535 * 2 - 1), atol=ATOL, rtol=0)
