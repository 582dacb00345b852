"""Image loading (DICOM windowing, MONOCHROME1, 16-bit PNG), budget resizing and the PNG cache."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from data_prep.errors import BadImageError
from data_prep.images import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    FACTOR,
    ImageCache,
    image_size,
    is_dicom,
    load_image,
    load_resized,
    resize_to_budget,
    smart_resize,
    vision_tokens,
)
from tests.builders.repo import require_shared


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **elements) -> str:
    """A minimal uncompressed single-frame DICOM file with the given pixels and extra elements."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated = bits
    ds.BitsStored = elements.pop("BitsStored", bits)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    for k, v in elements.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return str(path)


# -- real radiographs --------------------------------------------------------------------------------
def _strip_means(a: np.ndarray) -> tuple[float, float, float]:
    h, w = a.shape
    rows = slice(int(0.3 * h), int(0.7 * h))
    center = a[rows, int(0.45 * w):int(0.55 * w)].mean()
    left = a[rows, int(0.20 * w):int(0.35 * w)].mean()
    right = a[rows, int(0.65 * w):int(0.80 * w)].mean()
    return float(center), float(left), float(right)


def test_monochrome1_radiograph_has_dark_lungs_and_bright_mediastinum():
    path = require_shared("images", "RG1_UNCI.dcm")
    img = load_image(path)
    assert img.mode == "L" and img.size == (1841, 1955)
    center, left, right = _strip_means(np.asarray(img, dtype=np.float64))
    # mediastinum/spine (centre column) brighter than both lung fields after MONOCHROME1 inversion
    assert center > left + 20 and center > right + 20
    # the stored values read naively (no inversion) show the opposite, so the inversion is what fixes it
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    c_raw, l_raw, r_raw = _strip_means(raw)
    assert c_raw < l_raw and c_raw < r_raw


def test_siim_pair_same_stored_pixels_opposite_photometric():
    mono2 = require_shared("images", "siim_pneumothorax_cr.dcm")
    mono1 = require_shared("images", "siim_pneumothorax_cr_monochrome1.dcm")
    stored1 = pydicom.dcmread(mono1).pixel_array
    stored2 = pydicom.dcmread(mono2).pixel_array
    assert np.array_equal(stored1, stored2)  # the pair differs only in its Photometric Interpretation tag
    a = np.asarray(load_image(mono2), dtype=np.int16)
    b = np.asarray(load_image(mono1), dtype=np.int16)
    assert np.array_equal(b, 255 - a)  # so correct loading shows them as each other's negative


def test_monochrome1_reencoding_of_same_anatomy_loads_to_same_pixels(tmp_path):
    """The same anatomy stored the MONOCHROME1 way (inverted values + tag) loads to the same pixels."""
    mono2 = require_shared("images", "siim_pneumothorax_cr.dcm")
    stored = pydicom.dcmread(mono2).pixel_array
    p = write_dicom(tmp_path / "m1.dcm", (255 - stored).astype(np.uint8), photometric="MONOCHROME1")
    a = np.asarray(load_image(mono2), dtype=np.int16)
    b = np.asarray(load_image(p), dtype=np.int16)
    assert np.abs(a - b).max() <= 1


def test_nih_png_loads_unchanged_and_resizes_to_budget():
    path = require_shared("images", "00000001_000.png")
    img = load_image(path)
    with Image.open(path) as ref:
        assert img.mode == "L"
        assert np.array_equal(np.asarray(img), np.asarray(ref.convert("L")))
    small = load_resized(path, min_pixels=DEFAULT_MIN_PIXELS, max_pixels=64 * FACTOR * FACTOR)
    assert small.width % FACTOR == 0 and small.height % FACTOR == 0
    assert small.width * small.height <= 64 * FACTOR * FACTOR
    h, w = image_size(path)
    assert vision_tokens(*smart_resize(h, w, max_pixels=64 * FACTOR * FACTOR)) == vision_tokens(small.height, small.width)


# -- synthetic DICOM: windowing, rescale, VOI LUT, min-max ----------------------------------------
def test_window_center_width_applied_after_rescale(tmp_path):
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))  # 8 x 256, stored 0..4080
    # rescale: value = 2*stored - 1000 -> -1000..7160; window [0, 4000] (center 2000, width 4000)
    p = write_dicom(tmp_path / "w.dcm", ramp, BitsStored=12, RescaleSlope=2, RescaleIntercept=-1000,
                    WindowCenter=2000, WindowWidth=4000)
    a = np.asarray(load_image(p), dtype=np.int32)[0]
    value = 2 * ramp[0].astype(np.int64) - 1000
    assert (a[value <= 0] == 0).all()
    assert (a[value >= 4000] == 255).all()
    mid = np.argmin(np.abs(value - 2000))
    assert abs(int(a[mid]) - 128) <= 2
    inside = (value > 0) & (value < 4000)
    assert (np.diff(a[inside]) >= 0).all() and a[inside].max() > a[inside].min()


def test_window_on_monochrome1_is_inverted(tmp_path):
    ramp = np.tile(np.arange(0, 1024, 4, dtype=np.uint16), (4, 1))
    p2 = write_dicom(tmp_path / "m2.dcm", ramp, BitsStored=10, WindowCenter=512, WindowWidth=512)
    p1 = write_dicom(tmp_path / "m1.dcm", ramp, photometric="MONOCHROME1", BitsStored=10,
                     WindowCenter=512, WindowWidth=512)
    a2 = np.asarray(load_image(p2), dtype=np.int16)
    a1 = np.asarray(load_image(p1), dtype=np.int16)
    assert np.array_equal(a1, 255 - a2)
    assert a2[0, 0] == 0 and a2[0, -1] == 255


def test_voi_lut_sequence_preferred_over_window(tmp_path):
    ramp = np.tile(np.arange(0, 256, dtype=np.uint16), (4, 1))
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [256, 0, 16])
    lut = (np.arange(256)[::-1] * 16).astype(np.uint16)  # a decreasing LUT over 0..4080
    item.add_new("LUTData", "US", lut.tolist())
    p = write_dicom(tmp_path / "lut.dcm", ramp, BitsStored=16, WindowCenter=10, WindowWidth=2)
    ds = pydicom.dcmread(p)
    ds.VOILUTSequence = [item]
    ds.save_as(p)
    a = np.asarray(load_image(p), dtype=np.int16)[0]
    # the LUT (not the narrow window) decides: output decreases from 255 to 0 across the ramp
    assert a[0] == 255 and a[-1] == 0 and (np.diff(a) <= 0).all()


def test_value_table_shortcut_equals_direct_pipeline(tmp_path, monkeypatch):
    """Integer images go through a per-value lookup table; it must give the same pixels as the direct path."""
    import data_prep.images as images

    signed = (np.random.default_rng(3).integers(-1024, 3000, (64, 48))).astype(np.int16)
    files = [write_dicom(tmp_path / "s.dcm", signed, photometric="MONOCHROME1", RescaleSlope=1,
                         RescaleIntercept=-24, WindowCenter=40, WindowWidth=400),
             write_dicom(tmp_path / "u.dcm", (signed.astype(np.int32) + 2000).astype(np.uint16), BitsStored=13)]
    rg1 = require_shared("images", "RG1_UNCI.dcm")
    files.append(str(rg1))
    fast = [np.asarray(load_image(f)) for f in files]
    monkeypatch.setattr(images, "_MAX_TABLE", -1)
    slow = [np.asarray(load_image(f)) for f in files]
    for a, b in zip(fast, slow):
        assert np.array_equal(a, b)
    assert fast[0].min() == 0 and fast[0].max() == 255  # the narrow window saturates both ends


def test_no_window_means_min_max(tmp_path):
    data = np.array([[100, 200], [300, 1100]], dtype=np.uint16)
    p = write_dicom(tmp_path / "mm.dcm", data, BitsStored=12)
    a = np.asarray(load_image(p))
    assert a.min() == 0 and a.max() == 255 and a[0, 1] == round(100 / 1000 * 255)


# -- raster formats ----------------------------------------------------------------------------------
def test_16bit_png_min_max(tmp_path):
    data = (np.arange(64 * 48, dtype=np.uint32).reshape(48, 64) * 7 + 1000).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(data).save(p)
    with Image.open(p) as check:
        assert check.mode.startswith("I")  # really a 16-bit PNG
    a = np.asarray(load_image(p))
    assert a.dtype == np.uint8 and a.min() == 0 and a.max() == 255
    assert (np.diff(a.ravel().astype(int)) >= 0).all()


def test_rgb_gray_jpg_becomes_L_and_colour_stays_RGB(tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)
    p1 = tmp_path / "g.png"
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(p1)
    assert load_image(p1).mode == "L"
    col = np.zeros((40, 30, 3), dtype=np.uint8)
    col[..., 0] = 200
    p2 = tmp_path / "c.jpg"
    Image.fromarray(col).save(p2, quality=95)
    assert load_image(p2).mode == "RGB"


# -- bad input ---------------------------------------------------------------------------------------
def test_corrupt_dicom_names_the_file(tmp_path):
    p = tmp_path / "broken.dcm"
    p.write_bytes(os.urandom(4000))
    with pytest.raises(BadImageError, match="broken.dcm"):
        load_image(p)


def test_dicom_without_pixels_and_truncated_pixels(tmp_path):
    src = write_dicom(tmp_path / "ok.dcm", np.zeros((32, 32), dtype=np.uint16), BitsStored=12)
    ds = pydicom.dcmread(src)
    del ds.PixelData
    ds.save_as(tmp_path / "nopix.dcm")
    with pytest.raises(BadImageError, match="no pixel data") as e:
        load_image(tmp_path / "nopix.dcm")
    assert "nopix.dcm" in str(e.value)
    data = open(src, "rb").read()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 1500])
    with pytest.raises(BadImageError, match="cut.dcm"):
        load_image(tmp_path / "cut.dcm")


def test_truncated_png_and_missing_and_empty(tmp_path):
    src = require_shared("images", "00027426_000.png")
    data = src.read_bytes()
    p = tmp_path / "half.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadImageError, match="half.png"):
        load_image(p)
    with pytest.raises(BadImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImageError, match="empty"):
        load_image(tmp_path / "empty.jpg")


def test_dicom_detected_without_suffix(tmp_path):
    p = write_dicom(tmp_path / "x.dcm", np.full((8, 8), 3, dtype=np.uint16), BitsStored=12)
    q = tmp_path / "noext"
    shutil.copy(p, q)
    assert is_dicom(q) and image_size(q) == (8, 8)
    assert load_image(q).size == (8, 8)


# -- smart_resize ------------------------------------------------------------------------------------
sizes = st.integers(min_value=8, max_value=5000)
budgets = st.tuples(st.integers(1, 64), st.integers(1, 2048)).map(
    lambda t: (min(t) * FACTOR * FACTOR, max(t) * FACTOR * FACTOR))


@settings(max_examples=300, deadline=None)
@given(sizes, sizes, budgets)
def test_smart_resize_properties(h, w, budget):
    lo, hi = budget
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(ValueError):
            smart_resize(h, w, min_pixels=lo, max_pixels=hi)
        return
    th, tw = smart_resize(h, w, min_pixels=lo, max_pixels=hi)
    assert th % FACTOR == 0 and tw % FACTOR == 0 and th >= FACTOR and tw >= FACTOR
    if lo <= th * tw <= hi:  # within budget: the model's processor will not resize it again
        assert smart_resize(th, tw, min_pixels=lo, max_pixels=hi) == (th, tw)
    beta = (h * w / hi) ** 0.5
    if h * w > 2 * hi and min(h, w) / beta >= FACTOR:  # too big: scaled down into the budget
        assert th * tw <= hi


@settings(max_examples=300, deadline=None)
@given(st.integers(56, 5000), st.integers(56, 5000))
def test_default_budget_gives_fixed_points_with_kept_aspect(h, w):
    if max(h, w) / min(h, w) > 20:
        return
    th, tw = smart_resize(h, w)
    assert DEFAULT_MIN_PIXELS <= th * tw <= DEFAULT_MAX_PIXELS
    assert smart_resize(th, tw) == (th, tw)
    assert 4 <= vision_tokens(th, tw) <= 512
    # rounding to 28-pixel steps keeps the aspect ratio within one step on the shorter side
    assert abs(th / tw - h / w) <= (h / w) * (FACTOR / min(th, tw)) * 1.01 + 1e-9


def test_smart_resize_matches_transformers():
    qwen = pytest.importorskip("transformers.models.qwen2_vl.image_processing_qwen2_vl")
    rng = np.random.default_rng(1)
    for _ in range(2000):
        h, w = (int(x) for x in rng.integers(20, 4000, 2))
        if max(h, w) / min(h, w) > 200:
            continue
        lo = int(rng.integers(1, 16)) * FACTOR * FACTOR
        hi = int(rng.integers(16, 2048)) * FACTOR * FACTOR
        assert smart_resize(h, w, min_pixels=lo, max_pixels=hi) == qwen.smart_resize(
            h, w, factor=FACTOR, min_pixels=lo, max_pixels=hi), (h, w, lo, hi)


@pytest.mark.parametrize("module", ["image_processing_qwen2_vl", "image_processing_pil_qwen2_vl"])
def test_smart_resize_matches_transformers_from_one_pixel(module):
    """Every side from 1 px (where rounding to 28 gives 0 and the min_pixels branch takes over), e.g. 331x7."""
    import importlib

    qwen = importlib.import_module(f"transformers.models.qwen2_vl.{module}")
    assert smart_resize(331, 7) == qwen.smart_resize(331, 7, factor=FACTOR, min_pixels=DEFAULT_MIN_PIXELS,
                                                      max_pixels=DEFAULT_MAX_PIXELS)
    budgets = [(DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS), (FACTOR * FACTOR, FACTOR * FACTOR),
               (FACTOR * FACTOR, 16 * FACTOR * FACTOR), (56 * 56, 28 * 28 * 1280)]
    for lo, hi in budgets:
        for h in range(1, 61):
            for w in [*range(1, 121), 331, 997, 4000, 11999]:
                if max(h, w) / min(h, w) > 200:
                    with pytest.raises(ValueError):
                        smart_resize(h, w, min_pixels=lo, max_pixels=hi)
                    continue
                want = qwen.smart_resize(h, w, factor=FACTOR, min_pixels=lo, max_pixels=hi)
                assert smart_resize(h, w, min_pixels=lo, max_pixels=hi) == want, (h, w, lo, hi)
                assert smart_resize(w, h, min_pixels=lo, max_pixels=hi) == want[::-1], (w, h, lo, hi)


def test_resize_to_budget_is_noop_at_target_size():
    img = Image.new("L", (28 * 10, 28 * 12), 7)
    assert resize_to_budget(img) is img
    big = Image.new("L", (3000, 2500), 7)
    out = resize_to_budget(big)
    assert out.width * out.height <= DEFAULT_MAX_PIXELS and vision_tokens(out.height, out.width) <= 512


# -- cache -------------------------------------------------------------------------------------------
def test_cache_resizes_once_and_keys_by_budget_and_file(tmp_path):
    src = tmp_path / "src.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (700, 600), dtype=np.uint8)).save(src)
    cache = ImageCache(tmp_path / "cache", max_pixels=100 * FACTOR * FACTOR)
    first = cache.get(src)
    assert not first.hit and first.path.is_file() and first.tokens <= 100
    with Image.open(first.path) as im:
        assert (im.height, im.width) == (first.height, first.width)
        expected = load_resized(src, max_pixels=100 * FACTOR * FACTOR)
        assert np.array_equal(np.asarray(im), np.asarray(expected))
    second = cache.get(src)
    assert second.hit and second.path == first.path and (cache.hits, cache.misses) == (1, 1)
    other = ImageCache(tmp_path / "cache", max_pixels=50 * FACTOR * FACTOR).get(src)
    assert other.path != first.path and other.tokens <= 50
    Image.fromarray(np.zeros((700, 600), dtype=np.uint8)).save(src)  # the source changes
    os.utime(src, ns=(first.path.stat().st_mtime_ns + 10**9,) * 2)
    third = cache.get(src)
    assert not third.hit and third.path != first.path
    assert cache.relpath(third).startswith(f"px{DEFAULT_MIN_PIXELS}-{100 * FACTOR * FACTOR}/")


def test_cache_rejects_bad_budget_and_bad_images(tmp_path):
    with pytest.raises(ValueError):
        ImageCache(tmp_path, min_pixels=10_000, max_pixels=1000)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all" * 10)
    with pytest.raises(BadImageError, match="bad.jpg"):
        ImageCache(tmp_path / "c").get(bad)
    assert not list((tmp_path / "c").rglob("*.png"))
