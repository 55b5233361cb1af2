"""The IDX reader (examples.fashion.idx): files written here byte by byte with struct/numpy,
independently of the reader; corrupt and truncated files refused with the reason."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.fashion.idx import IDXFormatError, read_idx

CODES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def idx_bytes(arr: np.ndarray, code: int) -> bytes:
    """An IDX file's bytes: 00 00 <code> <ndim>, big-endian uint32 sizes, big-endian values."""
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + np.ascontiguousarray(arr).astype(CODES[code]).tobytes()


def test_hand_written_bytes(tmp_path):
    p = tmp_path / "a"
    p.write_bytes(b"\x00\x00\x08\x02" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x03" + bytes([0, 1, 2, 3, 4, 255]))
    a = read_idx(p)
    assert a.dtype == np.uint8 and a.shape == (2, 3)
    assert a.tolist() == [[0, 1, 2], [3, 4, 255]]
    # int16 big-endian: 01 02 = 258, ff fe = -2
    p.write_bytes(b"\x00\x00\x0b\x01\x00\x00\x00\x02\x01\x02\xff\xfe")
    a = read_idx(p)
    assert a.dtype == np.int16 and a.tolist() == [258, -2]
    assert a.dtype.byteorder in ("=", "|") or a.dtype.isnative
    a[0] = 1  # writable


@settings(max_examples=40)
@given(st.sampled_from(sorted(CODES)), st.lists(st.integers(0, 5), min_size=1, max_size=4),
       st.integers(0, 2**31 - 1), st.booleans())
def test_round_trip_every_type(tmp_path_factory, code, shape, seed, compress):
    rng = np.random.default_rng(seed)
    dt = np.dtype(CODES[code]).newbyteorder("=")
    if dt.kind == "f":
        arr = rng.normal(size=shape).astype(dt)
    else:
        info = np.iinfo(dt)
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dt)
    data = idx_bytes(arr, code)
    p = tmp_path_factory.mktemp("idx") / "x-idx"
    p.write_bytes(gzip.compress(data) if compress else data)
    got = read_idx(p)
    assert got.dtype == dt and got.shape == tuple(shape)
    assert np.array_equal(got, arr)


def test_gzip_recognised_by_content_not_name(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(arr, 0x08))
    (tmp_path / "compressed").write_bytes(gzip.compress(idx_bytes(arr, 0x08)))
    assert np.array_equal(read_idx(tmp_path / "plain.gz"), arr)
    assert np.array_equal(read_idx(tmp_path / "compressed"), arr)


GOOD = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08)


@pytest.mark.parametrize("data, message", [
    (b"", "truncated: the 4-byte magic"),
    (b"\x00\x00\x08", "truncated: the 4-byte magic"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "not an IDX file"),
    (b"\x00\x00\x0a\x01\x00\x00\x00\x01\x05", "unknown IDX type code 0x0A"),
    (b"\x00\x00\x08\x00", "0 dimensions"),
    (GOOD[:10], "truncated: the 3 dimension sizes"),
    (GOOD[:-1], r"truncated: the data of shape \(2, 3, 4\) .* needs 24 bytes, the file has 23"),
    (GOOD + b"\x00", "trailing bytes"),
    # a header announcing 2^32-1 x 2^32-1 values: refused as truncated, nothing allocated
    (b"\x00\x00\x0e\x02\xff\xff\xff\xff\xff\xff\xff\xff", "truncated"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_files_refused(tmp_path, data, message, compress):
    p = tmp_path / "bad"
    p.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(IDXFormatError, match=message) as info:
        read_idx(p)
    assert str(p) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_truncated_gzip_refused(tmp_path):
    z = gzip.compress(GOOD)
    p = tmp_path / "cut.gz"
    p.write_bytes(z[: len(z) // 2])
    with pytest.raises(IDXFormatError, match="gzip stream is corrupt or truncated|truncated"):
        read_idx(p)


def test_corrupt_gzip_refused(tmp_path):
    z = bytearray(gzip.compress(bytes(range(256)) * 20 + GOOD, compresslevel=9))
    # damage the stored CRC32 (the 8-byte trailer's first 4 bytes): the data decompress, the check fails
    z[-8] ^= 0xFF
    p = tmp_path / "crc.gz"
    p.write_bytes(bytes(z))
    with pytest.raises(IDXFormatError, match="gzip"):
        read_idx(p)
    # garbage after the gzip magic
    p.write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    with pytest.raises(IDXFormatError, match="gzip"):
        read_idx(p)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        read_idx("/nonexistent/train-images-idx3-ubyte")
