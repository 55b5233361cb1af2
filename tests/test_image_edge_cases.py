"""flowmo.data.images / flowmo.cli.io / ImageFolderDataset on hostile and unusual image input.

Found by a break-it tester: a named pipe with an image name hung the folder dataset; which
name a symlinked file was listed under depended on the directory order; a 1,000,000 x 1
PNG was upscaled into a MemoryError that killed training; a decompression bomb escaped the
CLI's header check; grey TIFFs with EXIF orientation 5-8 decoded scrambled; PNG colour keys
of 1/2/4-bit grey and 16-bit RGB were ignored; NaN grey images became NaN tensors. Every
expected value here is computed by hand (numpy rotations and flips, the PNG bytes written
here), not by the decoder under test.
"""

import logging
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowmo.data.image_sizes import DEFAULT_PIXEL_LIMIT, check_size, pixel_limit, resize_short_side, resized_size
from flowmo.data.image_modes import UnsupportedImageError
from flowmo.data.images import decode_image, image_to_tensor, open_image_file
from flowmo.cli.io import check_image_header, list_images, load_image
from flowmo.data.folders import ImageFolderDataset, _verify_image

ATOL = 1e-6
needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need POSIX")


# ------------------------------------------------------------------ writers and helpers
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _packed_row(row: np.ndarray, bits: int) -> bytes:
    """One row of samples at ``bits`` per sample, big-endian, MSB first (PNG packing)."""
    if bits == 16:
        return row.astype(">u2").tobytes()
    if bits == 8:
        return row.astype("u1").tobytes()
    out, acc, n = bytearray(), 0, 0
    for v in row.reshape(-1):
        acc, n = (acc << bits) | int(v), n + bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def _filtered(arr: np.ndarray, bits: int, channels: int) -> bytes:
    """Rows of ``arr`` with alternating filter types 0 (None) and 1 (Sub)."""
    bpp = max(1, bits * channels // 8)
    out = b""
    for y in range(arr.shape[0]):
        raw = _packed_row(arr[y], bits)
        if y % 2:
            out += b"\x01" + bytes((raw[i] - (raw[i - bpp] if i >= bpp else 0)) & 255 for i in range(len(raw)))
        else:
            out += b"\x00" + raw
    return out


_ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def write_png(path: Path, arr, color_type: int, bits: int, trns: bytes = None, interlace: bool = False) -> Path:
    """A PNG written byte by byte at any bit depth (grey 1/2/4/8/16, RGB 8/16), optionally
    with a tRNS chunk and Adam7 interlacing."""
    arr = np.asarray(arr)
    h, w = arr.shape[:2]
    channels = 3 if color_type == 2 else 1
    if interlace:
        data = b"".join(_filtered(arr[y0::dy, x0::dx], bits, channels) for x0, y0, dx, dy in _ADAM7
                        if arr[y0::dy, x0::dx].size)
    else:
        data = _filtered(arr, bits, channels)
    ihdr = struct.pack(">IIBBBBB", w, h, bits, color_type, 0, 0, int(interlace))
    chunks = _chunk(b"IHDR", ihdr) + (_chunk(b"tRNS", trns) if trns is not None else b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks + _chunk(b"IDAT", zlib.compress(data)) + _chunk(b"IEND", b""))
    return path


def rgb8(values) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(values, dtype=np.float64))
    return (v / 255 * 2 - 1).permute(2, 0, 1).float()


def grey8(values) -> torch.Tensor:
    return rgb8(np.repeat(np.asarray(values)[..., None], 3, -1))


def grey_unit(values) -> torch.Tensor:
    v = torch.as_tensor(np.asarray(values, dtype=np.float64)) * 2 - 1
    return v.float().unsqueeze(0).expand(3, -1, -1)


def decoded(path) -> torch.Tensor:
    return image_to_tensor(decode_image(path))


def _save_rgb(path: Path, value: int = 200, size=(8, 8)) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


class _NoHang:
    """Run ``fn`` in a thread; fail (and unblock any reader of ``fifo``) if it takes > 20 s."""

    def __init__(self, fifo: Path):
        self.fifo = fifo

    def __call__(self, fn, *args, **kwargs):
        box: dict = {}

        def run():
            try:
                box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - handed to the test
                box["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.start()
        t.join(20)
        if t.is_alive():  # a reader blocked on the pipe: open the write end once to release it
            os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            t.join(5)
            pytest.fail(f"{getattr(fn, '__name__', fn)} blocked on the named pipe {self.fifo}")
        if "error" in box:
            raise box["error"]
        return box.get("value")


# ------------------------------------------------------------------ 1. non-regular files, listing order
@needs_fifo
def test_named_pipe_with_an_image_name_never_blocks(tmp_path, caplog):
    _save_rgb(tmp_path / "a.png")
    fifo = tmp_path / "b.png"
    os.mkfifo(fifo)
    call = _NoHang(fifo)
    with caplog.at_level(logging.WARNING, logger="flowmo.data.folders"):
        ds = call(ImageFolderDataset, tmp_path, 8, train=False)
    # left out of the listing, but recorded, counted and logged like an unreadable file
    assert [p.name for p in ds.files] == ["a.png"]
    assert ds.skipped == 1 and ds.bad_paths == {fifo}
    assert "b.png" in caplog.text and "named pipe" in caplog.text
    torch.testing.assert_close(call(ds.__getitem__, 0), torch.full((3, 8, 8), 200 / 127.5 - 1), atol=ATOL, rtol=0)
    assert call(ds.scan_corrupt) == [fifo] and len(ds) == 1
    # every entry point refuses it with a clear error instead of reading it
    with pytest.raises(ValueError, match=r"'.*b\.png' is a named pipe \(FIFO\), not a regular file"):
        call(decode_image, fifo)
    with pytest.raises(ValueError, match=r"b\.png' is not a readable image .*named pipe"):
        call(load_image, fifo, 8)
    with pytest.raises(ValueError, match=r"b\.png' is not a readable image .*named pipe"):
        call(check_image_header, fifo)
    with pytest.raises(ValueError, match="named pipe"):
        call(open_image_file, fifo)
    assert "named pipe" in call(_verify_image, fifo)
    assert [f.name for f in call(list_images, tmp_path)] == ["a.png"]  # the CLI's folder listing
    with pytest.raises(ValueError, match="neither a file nor a folder"):
        call(list_images, fifo)


@needs_fifo
def test_file_replaced_by_a_named_pipe_after_listing_is_skipped(tmp_path, caplog):
    _save_rgb(tmp_path / "a.png", 10)
    _save_rgb(tmp_path / "b.png", 200)
    ds = ImageFolderDataset(tmp_path, 8, train=False)
    ds2 = ImageFolderDataset(tmp_path, 8, train=False)
    (tmp_path / "b.png").unlink()
    os.mkfifo(tmp_path / "b.png")
    call = _NoHang(tmp_path / "b.png")
    with caplog.at_level(logging.WARNING, logger="flowmo.data.folders"):
        x = call(ds.__getitem__, 1)  # the bad file is replaced by the next readable one
    torch.testing.assert_close(x, torch.full((3, 8, 8), 10 / 127.5 - 1), atol=ATOL, rtol=0)
    assert ds.bad_paths == {tmp_path / "b.png"} and "b.png" in caplog.text and "named pipe" in caplog.text
    assert [p.name for p in call(ds2.scan_corrupt)] == ["b.png"] and len(ds2) == 1


def test_folders_broken_links_and_devices_are_skipped_and_counted(tmp_path):
    _save_rgb(tmp_path / "a.png")
    (tmp_path / "sub.png").mkdir()  # a folder with an image name
    _save_rgb(tmp_path / "sub.png" / "inner.png", 100)
    os.symlink(tmp_path / "missing.png", tmp_path / "broken.png")
    names = {"broken.png"}
    if os.path.exists("/dev/zero"):
        os.symlink("/dev/zero", tmp_path / "zero.png")  # reading it would never end
        names.add("zero.png")
    ds = ImageFolderDataset(tmp_path, 8, train=False)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == ["a.png", "sub.png/inner.png"]
    assert {p.name for p in ds.bad_paths} == names and ds.skipped == len(names)
    assert {p.name for p in ds.scan_corrupt()} == names
    with pytest.raises(ValueError, match=r"sub\.png' is a folder, not a regular file"):
        decode_image(tmp_path / "sub.png")
    with pytest.raises(ValueError, match=r"sub\.png' is not a readable image .*folder"):
        load_image(tmp_path / "sub.png", 8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image(tmp_path / "broken.png", 8)
    if "zero.png" in names:
        with pytest.raises(ValueError, match=r"zero\.png' is a device, not a regular file"):
            decode_image(tmp_path / "zero.png")
    # only bad entries: a clear error, naming what was skipped
    only = tmp_path / "only"
    only.mkdir()
    os.symlink(tmp_path / "missing.png", only / "x.png")
    with pytest.raises(ValueError, match="no image files .* 1 entries that are not regular files skipped"):
        ImageFolderDataset(only, 8)


def _reversed_walk(real_walk):
    def walk(top, **kwargs):
        for dirpath, dirnames, filenames in real_walk(top, **kwargs):
            dirnames.reverse()  # the caller's in-place edits still steer the walk
            filenames.reverse()
            yield dirpath, dirnames, filenames

    return walk


@pytest.mark.parametrize("link, real", [("link", "real"), ("a_link", "z_real"), ("z_link", "a_real")])
def test_symlinked_folder_is_listed_under_the_same_name_in_any_directory_order(tmp_path, monkeypatch, link, real):
    (tmp_path / real).mkdir()
    _save_rgb(tmp_path / real / "x.png")
    _save_rgb(tmp_path / real / "y.png")
    os.symlink(real, tmp_path / link)
    _save_rgb(tmp_path / "m.png")
    first = min(link, real)  # the lexicographically first relative name is kept
    expected = sorted(["m.png", f"{first}/x.png", f"{first}/y.png"])
    listings = []
    for walk in (os.walk, _reversed_walk(os.walk)):
        monkeypatch.setattr(os, "walk", walk)
        ds = ImageFolderDataset(tmp_path, 8, train=False)
        listings.append([p.relative_to(tmp_path).as_posix() for p in ds.files])
    monkeypatch.undo()
    assert listings[0] == listings[1] == expected


def test_one_file_under_two_names_is_listed_once_under_the_first(tmp_path, monkeypatch):
    _save_rgb(tmp_path / "b.png")
    os.symlink("b.png", tmp_path / "alias.png")
    os.symlink("b.png", tmp_path / "z.png")
    (tmp_path / "sub").mkdir()
    os.symlink("../b.png", tmp_path / "sub" / "c.png")
    for walk in (os.walk, _reversed_walk(os.walk)):
        monkeypatch.setattr(os, "walk", walk)
        ds = ImageFolderDataset(tmp_path, 8)
        assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == ["alias.png"]


def test_symlink_loop_is_walked_once(tmp_path):
    _save_rgb(tmp_path / "a.png")
    (tmp_path / "d").mkdir()
    _save_rgb(tmp_path / "d" / "b.png")
    os.symlink("..", tmp_path / "d" / "up")  # d/up -> the root: a loop
    ds = ImageFolderDataset(tmp_path, 8)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == ["a.png", "d/b.png"]


# ------------------------------------------------------------------ 2. sizes: long thin images, huge sizes
def _wide_png(path: Path, w: int = 1_000_000, h: int = 1) -> Path:
    return write_png(path, np.zeros((h, w), np.uint8), 0, 8)


def test_a_1000000_by_1_png_is_refused_not_a_memory_error(tmp_path, caplog):
    wide = _wide_png(tmp_path / "b_wide.png")
    assert wide.stat().st_size < 5000  # a tiny file
    _save_rgb(tmp_path / "a_good.png", 50)
    too_big = r"'.*b_wide\.png': an image of 1000000x1 pixels .* 256000000x256 = 65536000000 pixels"
    with pytest.raises(UnsupportedImageError, match=too_big):
        resized_size(1_000_000, 1, 256, name=repr(str(wide)))
    with pytest.raises(UnsupportedImageError, match=r"^img: an image of 1000000x1 pixels"):
        resize_short_side(decode_image(wide), 256)
    refused = r"b_wide\.png' is not a readable image \(UnsupportedImageError: .*MAX_IMAGE_PIXELS"
    with pytest.raises(ValueError, match=refused):
        load_image(wide, 256)
    check_image_header(wide)  # no size: the header itself is fine
    with pytest.raises(ValueError, match=r"b_wide\.png' is not a readable image .*256000000x256"):
        check_image_header(wide, size=256)
    # training: skipped (the next readable file is returned), counted, logged
    with caplog.at_level(logging.WARNING, logger="flowmo.data.folders"):
        ds = ImageFolderDataset(tmp_path, 256, train=True)
        x = ds[1]
    torch.testing.assert_close(x, torch.full((3, 256, 256), 50 / 127.5 - 1), atol=ATOL, rtol=0)
    assert ds.bad_paths == {wide} and "b_wide.png" in caplog.text
    # scan_corrupt reports it (it used to call it fine)
    fresh = ImageFolderDataset(tmp_path, 256, train=False)
    assert fresh.scan_corrupt() == [wide] and len(fresh) == 1
    # at a small size it is a valid image: 1000000x1 -> short side 1, nothing upscaled
    small = ImageFolderDataset(tmp_path, 1, train=False)
    assert small[1].shape == (3, 1, 1) and small.scan_corrupt() == []
    # the release protocol's own transform is guarded the same way
    from flowmo.data.eval_images import release_image_folder

    rel = release_image_folder(tmp_path, 256)
    assert rel[1].shape == (3, 256, 256) and rel.bad_paths == {wide}


def test_trainer_item_loader_reports_a_long_thin_image(tmp_path):
    from flowmo.train.sampler import _Indexed

    _save_rgb(tmp_path / "a.png", 50, size=(64, 64))
    wide = _wide_png(tmp_path / "b.png", 2_000_000, 1)
    image, newly_bad = _Indexed(ImageFolderDataset(tmp_path, 64, train=True))[(0, 1)]
    assert newly_bad == [str(wide)] and image.shape == (3, 64, 64)


def test_any_transform_error_of_one_file_skips_that_file(tmp_path, caplog):
    _save_rgb(tmp_path / "a.png", 10)
    _save_rgb(tmp_path / "b.png", 200, size=(9, 8))
    fail_on = {(9, 8)}

    class Fragile(ImageFolderDataset):
        def _transform(self, img, index):
            if img.size in fail_on:
                raise MemoryError("cannot allocate")
            return super()._transform(img, index)

    with caplog.at_level(logging.WARNING, logger="flowmo.data.folders"):
        ds = Fragile(tmp_path, 8, train=False)
        x = ds[1]
    torch.testing.assert_close(x, torch.full((3, 8, 8), 10 / 127.5 - 1), atol=ATOL, rtol=0)
    assert ds.bad_paths == {tmp_path / "b.png"} and "b.png" in caplog.text and "MemoryError" in caplog.text
    fail_on.add((8, 8))  # every file fails: a clear error with the last reason
    with pytest.raises(RuntimeError, match="all 2 failed to load .*last error: MemoryError"):
        Fragile(tmp_path, 8, train=False)[0]


@pytest.mark.parametrize("size", [2**40, 60000, 9460, 0, -1, True, 2.0, "256"])
def test_sizes_are_bounded_with_an_error_naming_size(tmp_path, size):
    one = _save_rgb(tmp_path / "one.png", size=(1, 1))
    with pytest.raises(ValueError, match=r"^size must be a positive int"):
        load_image(one, size)
    with pytest.raises(ValueError, match=r"^size must be a positive int"):
        resize_short_side(Image.new("RGB", (1, 1)), size)
    with pytest.raises(ValueError, match=r"^size must be a positive int"):
        check_image_header(one, size=size)
    with pytest.raises(ValueError, match=r"^image_size must be a positive int"):
        ImageFolderDataset(tmp_path, size)


def test_the_size_bound_is_pillows_pixel_limit(monkeypatch):
    assert pixel_limit() == Image.MAX_IMAGE_PIXELS == DEFAULT_PIXEL_LIMIT == 89_478_485
    assert check_size(9459) == 9459 and resized_size(1, 1, 9459) == (9459, 9459)  # 89,472,681 pixels
    assert resized_size(349_000, 256, 256) == (349_000, 256)  # 89,344,000 pixels: within the limit
    with pytest.raises(UnsupportedImageError, match="more than Pillow's decompression-bomb limit"):
        resized_size(350_000, 256, 256)  # 89,600,000 pixels
    assert resized_size(640, 480, 240) == (320, 240) and resized_size(3, 1000, 10) == (10, 3333)
    with pytest.raises(UnsupportedImageError, match="no pixels"):
        resized_size(0, 5, 4)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the limit follows Pillow's setting
    assert pixel_limit() == 10_000 and check_size(100) == 100
    with pytest.raises(ValueError, match="at most 100"):
        check_size(101)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # bomb check disabled: resizing stays bounded
    assert pixel_limit() == DEFAULT_PIXEL_LIMIT


# ------------------------------------------------------------------ 3. decompression bombs
def _bomb(path: Path) -> Path:
    """A 20000 x 20000 grey PNG header (400 M pixels: over twice Pillow's limit) with little data."""
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_refused_by_every_entry_point(tmp_path):
    bomb = _bomb(tmp_path / "b_bomb.png")
    _save_rgb(tmp_path / "a.png")
    with pytest.raises(Image.DecompressionBombError):
        decode_image(bomb)  # documented
    for call in (lambda: check_image_header(bomb), lambda: check_image_header(bomb, size=8),
                 lambda: load_image(bomb, 8)):
        with pytest.raises(ValueError, match=r"b_bomb\.png' is not a readable image \(DecompressionBombError"):
            call()
    ds = ImageFolderDataset(tmp_path, 8)
    assert ds[1].shape == (3, 8, 8) and ds.bad_paths == {bomb}
    assert ImageFolderDataset(tmp_path, 8).scan_corrupt() == [bomb]


@pytest.mark.parametrize("make, fragment", [
    (_bomb, "DecompressionBombError"),
    (_wide_png, "UnsupportedImageError"),
])
def test_cli_refuses_bombs_and_long_thin_images_with_one_line_and_exit_2(tmp_path, capsys, make, fragment):
    import flowmo
    from flowmo import cli

    model = tmp_path / "model"
    flowmo.build(flowmo.flowmo_tiny()).save_pretrained(model)
    bad = make(tmp_path / "bad.png")
    for cmd in (["reconstruct", "--output", str(tmp_path / "out"), "--steps", "1"],
                ["tokenize", "--output", str(tmp_path / "t.safetensors")]):
        rc = cli.main([cmd[0], "--model", str(model), "--input", str(bad), *cmd[1:]])
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert rc == 2 and len(lines) == 1, err
        assert "bad.png' is not a readable image" in err and fragment in err


@needs_fifo
def test_cli_refuses_a_named_pipe_input(tmp_path, capsys):
    from flowmo import cli

    import flowmo

    os.mkfifo(tmp_path / "p.png")
    flowmo.build(flowmo.flowmo_tiny()).save_pretrained(tmp_path / "model")  # tokenize loads the model first
    rc = _NoHang(tmp_path / "p.png")(cli.main, ["tokenize", "--model", str(tmp_path / "model"), "--input",
                                                str(tmp_path / "p.png"), "--output", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert rc == 2 and "p.png" in err and "neither a file nor a folder" in err


# ------------------------------------------------------------------ 4. EXIF orientation of TIFFs
UPRIGHT = {  # EXIF orientation -> what makes the stored array upright, by hand
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: np.swapaxes(a, 0, 1),  # transposed (main diagonal)
    6: lambda a: np.rot90(a, -1),  # rotate 90 clockwise to display
    7: lambda a: np.rot90(a, 2).swapaxes(0, 1),  # transversed (anti-diagonal)
    8: lambda a: np.rot90(a, 1),  # rotate 90 counter-clockwise to display
}


def test_orientation_6_grey_tiff_reported_case(tmp_path):
    a = np.arange(20, dtype=np.uint8).reshape(4, 5)
    im = Image.fromarray(a)
    ex = im.getexif()
    ex[0x0112] = 6
    im.save(tmp_path / "o6.tif", exif=ex)
    expected = np.array([[15, 10, 5, 0], [16, 11, 6, 1], [17, 12, 7, 2], [18, 13, 8, 3], [19, 14, 9, 4]])
    np.testing.assert_array_equal(np.rot90(a, -1), expected)  # the helper's rule, spelled out
    torch.testing.assert_close(decoded(tmp_path / "o6.tif"), grey8(expected), atol=ATOL, rtol=0)


def _tiff_cases():
    a8 = (np.arange(4 * 5) * 12 + 3).astype(np.uint8).reshape(4, 5)
    a16 = (np.arange(4 * 5) * 3211 + 7).astype(np.uint16).reshape(4, 5)
    rgba = np.stack([a8, a8[::-1], 255 - a8, np.full_like(a8, 255)], -1)
    return {
        "L": (a8, lambda t: grey8(t)),
        "I;16": (a16, lambda t: grey_unit(t / 65535)),
        "RGBA": (rgba, lambda t: rgb8(t[..., :3])),
    }


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
@pytest.mark.parametrize("mode", ["L", "I;16", "RGBA"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_1_to_8_by_hand(tmp_path, mode, orientation, compression):
    arr, expect = _tiff_cases()[mode]
    im = Image.fromarray(arr)
    assert im.mode == mode
    ex = im.getexif()
    ex[0x0112] = orientation
    path = tmp_path / "o.tif"
    im.save(path, exif=ex, **({"compression": compression} if compression else {}))
    want = np.ascontiguousarray(UPRIGHT[orientation](arr))
    torch.testing.assert_close(decoded(path), expect(want), atol=ATOL, rtol=0)
    with open(path, "rb") as f:  # a file object decodes the same
        torch.testing.assert_close(image_to_tensor(decode_image(f)), expect(want), atol=ATOL, rtol=0)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("dtype, big_endian", [(np.uint8, False), (np.uint16, False), (np.uint16, True)])
def test_hand_written_tiff_orientation_1_to_8(tmp_path, orientation, dtype, big_endian):
    from test_image_modes import write_tiff

    arr = (np.arange(3 * 7) * 997 % (256 if dtype == np.uint8 else 65536)).astype(dtype).reshape(3, 7)
    write_tiff(tmp_path / "o.tif", arr, photometric=1, big_endian=big_endian, orientation=orientation)
    want = UPRIGHT[orientation](arr)
    expected = grey8(want) if dtype == np.uint8 else grey_unit(want / 65535)
    torch.testing.assert_close(decoded(tmp_path / "o.tif"), expected, atol=ATOL, rtol=0)
    # the dataset (resize to the same short side: unchanged; centre crop) agrees
    ds = ImageFolderDataset(tmp_path, 3, train=False)
    torch.testing.assert_close(ds[0], expected[:, :, 2:5] if want.shape[0] == 3 else expected[:, 2:5, :],
                               atol=ATOL, rtol=0)


def test_orientation_that_cannot_be_applied_is_refused_not_scrambled(tmp_path, monkeypatch):
    """If the decoded size disagrees with the TIFF header and its orientation (here faked by
    applying the orientation a second time), the file is refused rather than returned."""
    import flowmo.data.images as images

    im = Image.fromarray(np.zeros((4, 5), np.uint8))
    ex = im.getexif()
    ex[0x0112] = 6
    im.save(tmp_path / "o.tif", exif=ex)
    monkeypatch.setattr(images, "_orientation", lambda _im: 6)
    with pytest.raises(UnsupportedImageError, match=r"o\.tif': the TIFF's EXIF orientation 6 was not applied"):
        decode_image(tmp_path / "o.tif")


# ------------------------------------------------------------------ 5. PNG colour keys at every depth
@pytest.mark.parametrize("bits", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("interlace", [False, True])
def test_grey_png_transparent_level_at_every_bit_depth(tmp_path, bits, interlace):
    top = 2**bits - 1
    key = top // 3 if bits > 1 else 1
    row = [0, key, top, key, top - 1 if bits > 1 else 0, (key + 1) % (top + 1)]
    arr = np.array([row, row[::-1], row[2:] + row[:2]], dtype=np.uint16)
    path = write_png(tmp_path / "g.png", arr, 0, bits, trns=struct.pack(">H", key), interlace=interlace)
    unit = arr / top
    unit[arr == key] = 1.0  # the transparent level -> white
    x = decoded(path)
    if bits == 16:
        torch.testing.assert_close(x, grey_unit(unit), atol=ATOL, rtol=0)
    else:  # 8-bit output: the stored level scaled exactly (v * 255 / top is an integer)
        torch.testing.assert_close(x, grey8(np.round(unit * 255)), atol=ATOL, rtol=0)
    assert (x[:, arr == key] == 1).all() and (x[:, arr != key] < 1).any()


def test_4bit_grey_key_5_reported_case(tmp_path):
    path = write_png(tmp_path / "g4.png", np.array([[0, 5]], np.uint8), 0, 4, trns=struct.pack(">H", 5))
    torch.testing.assert_close(decoded(path), grey8([[0, 255]]), atol=ATOL, rtol=0)  # was [0, 85]


def test_png_key_bits_above_the_sample_depth_are_ignored(tmp_path):
    """As in libpng: a 4-bit image's key 0x15 means the stored level 5."""
    path = write_png(tmp_path / "g4.png", np.array([[0, 5, 15]], np.uint8), 0, 4, trns=struct.pack(">H", 0x15))
    torch.testing.assert_close(decoded(path), grey8([[0, 255, 255]]), atol=ATOL, rtol=0)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("interlace", [False, True])
def test_rgb_png_transparent_colour_at_8_and_16_bits(tmp_path, bits, interlace):
    if bits == 8:
        key = (10, 20, 30)
        near = [(10, 20, 31), (11, 20, 30), (10, 21, 30)]
    else:
        key = (1000, 2000, 3000)  # high bytes (3, 7, 11)
        near = [(1000, 2000, 3001), (1001, 2000, 3000), (1000, 2001, 3000), (1000, 1999, 3000)]  # same high bytes
    pixels = [key, *near, (0, 0, 0), (2**bits - 1, 0, 2**bits - 1)]
    arr = np.array([pixels, pixels[::-1], pixels[3:] + pixels[:3]], dtype=np.uint16)
    path = write_png(tmp_path / "c.png", arr, 2, bits, trns=struct.pack(">HHH", *key), interlace=interlace)
    eight = arr >> 8 if bits == 16 else arr  # 16-bit colour keeps its high byte (documented)
    expected = eight.astype(np.float64)
    transparent = np.all(arr == np.array(key), axis=-1)
    expected[transparent] = 255
    x = decoded(path)
    torch.testing.assert_close(x, rgb8(expected), atol=ATOL, rtol=0)
    assert transparent.sum() == 3 and (x[:, ~transparent] < 1).any()


def test_16bit_rgb_key_from_a_file_object_and_load_image(tmp_path):
    key = (513, 1027, 65535)
    arr = np.array([[key, (513, 1027, 65534), (512, 1027, 65535)]], dtype=np.uint16)
    path = write_png(tmp_path / "c.png", arr, 2, 16, trns=struct.pack(">HHH", *key))
    expected = rgb8([[(255, 255, 255), (2, 4, 255), (2, 4, 255)]])
    with open(path, "rb") as f:
        torch.testing.assert_close(image_to_tensor(decode_image(f)), expected, atol=ATOL, rtol=0)
    torch.testing.assert_close(load_image(path, 1), expected[:, :, 1:2], atol=ATOL, rtol=0)


# ------------------------------------------------------------------ 6. non-finite grey images
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_image_to_tensor_refuses_non_finite_grey(bad):
    arr = np.array([[0.0, 0.5], [bad, 1.0]], np.float32)
    with pytest.raises(ValueError, match=r"^img \(mode 'F'\) holds NaN or infinite values"):
        image_to_tensor(Image.fromarray(arr))
    torch.testing.assert_close(image_to_tensor(Image.fromarray(np.array([[0.0, 0.5]], np.float32))),
                               grey_unit([[0.0, 0.5]]), atol=ATOL, rtol=0)
