"""Radiograph loading (DICOM, PNG, JPG) and the one-time resize to a vision-token budget.

* :func:`load_image` turns any supported file into an 8-bit PIL image, mode ``"L"`` (grayscale) or
  ``"RGB"``. DICOM goes through pydicom: the modality LUT (rescale slope/intercept), then the VOI
  LUT or the Window Center/Width when the file has them (min-max otherwise), then 8 bits, and
  MONOCHROME1 is inverted so that air is dark and bone bright. 16-bit PNGs are min-max scaled.
* :func:`smart_resize` computes the size Qwen2.5-VL's image processor would use for a pixel budget
  (both sides multiples of 28, pixel count within ``[min_pixels, max_pixels]``, aspect ratio kept).
  An image already resized to that size passes through the processor unchanged, so the number of
  vision tokens, ``(h / 28) * (w / 28)``, is known before training (:func:`vision_tokens`).
* :class:`ImageCache` resizes each source once per budget and stores the result as PNG under
  ``cache_dir/px<min>-<max>/``, keyed by the source's absolute path (plus its size and mtime, so an
  edited file is not served stale).

Every failure to read an image raises :class:`~data_prep.errors.BadImageError` naming the file.
This module never imports torch.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# The vision-token geometry (FACTOR, the default budget, smart_resize) lives in cxr_io.boxes, where the
# Qwen2.5-VL box codec (which ``reward`` also uses) needs it; it is re-exported here.
from cxr_io.boxes import (  # noqa: F401
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_PIXELS,
    FACTOR,
    MAX_ASPECT_RATIO,
    smart_resize,
)
from data_prep.errors import BadImageError, DataPrepError

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
RASTER_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
_PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~30% faster than 3 for ~4% more bytes on radiographs
#: Integer images whose value range is at most this wide are mapped through a per-value table.
_MAX_TABLE = 1 << 20


# -- geometry --------------------------------------------------------------------------------------
def check_pixel_budget(min_pixels: int | None, max_pixels: int | None, *, where: str = "") -> None:
    """Validate a pixel budget where it is parsed (prepare, recipes, generate, serve, pairs, export).

    ``None`` means the processor's default. A set value must be a positive integer, ``max_pixels`` at
    least one vision token (28 x 28 = 784 pixels), and ``min_pixels <= max_pixels``; anything else is a
    :class:`~data_prep.errors.DataPrepError` naming the field and value.
    """
    src = f"{where}: " if where else ""
    for name, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise DataPrepError(f"{src}{name} must be a positive number of pixels", field=name, value=v)
    if max_pixels is not None and max_pixels < FACTOR * FACTOR:
        raise DataPrepError(f"{src}max_pixels must be at least {FACTOR * FACTOR} (one {FACTOR}x{FACTOR} vision token)",
                            field="max_pixels", value=max_pixels)
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise DataPrepError(f"{src}min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}); lower "
                            "min_pixels or raise max_pixels", field="min_pixels", value=min_pixels)


def vision_tokens(height: int, width: int, factor: int = FACTOR) -> int:
    """Vision tokens of an image already resized to multiples of ``factor``: ``(h/28) * (w/28)``."""
    return (height // factor) * (width // factor)


# -- loading ---------------------------------------------------------------------------------------
def bad_image(reason: str, path: Path, cause: BaseException | None = None, **kw) -> BadImageError:
    """A :class:`BadImageError` naming the file; ``.reason`` holds the short reason (for skip counts)."""
    msg = reason if cause is None else f"{reason} ({type(cause).__name__}: {cause})"
    err = BadImageError(msg, file=str(path), **kw)
    err.reason = reason  # type: ignore[attr-defined]
    return err


def is_dicom(path: str | os.PathLike) -> bool:
    """True for ``.dcm``-like names, or for files without a raster suffix that carry the DICM magic."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in RASTER_SUFFIXES:
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def _check_file(p: Path) -> None:
    if not p.exists():
        raise bad_image("image file not found", p)
    if not p.is_file():
        raise bad_image("not a regular file", p)
    if p.stat().st_size == 0:
        raise bad_image("image file is empty", p)


def load_image(path: str | os.PathLike) -> Image.Image:
    """Load a DICOM, PNG (8/16-bit) or JPG file as an 8-bit ``"L"`` or ``"RGB"`` PIL image."""
    p = Path(path)
    _check_file(p)
    return _load_dicom(p) if is_dicom(p) else _load_raster(p)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` read from the header only (no pixel decoding)."""
    p = Path(path)
    _check_file(p)
    if is_dicom(p):
        ds = _read_dicom(p, stop_before_pixels=True)
        try:
            return int(ds.Rows), int(ds.Columns)
        except (AttributeError, TypeError, ValueError):
            raise bad_image("DICOM lacks Rows/Columns", p) from None
    try:
        with Image.open(p) as im:
            w, h = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise bad_image("unreadable image", p, e) from None
    return h, w


def check_image(path: str | os.PathLike) -> None:
    """Decode ``path`` once (cheaply: JPEG at reduced scale) so a zero-byte, truncated or garbage file is
    found at ``prepare`` time, never in the middle of training. Raises :class:`BadImageError`."""
    p = Path(path)
    _check_file(p)
    if is_dicom(p):
        _read_dicom(p, stop_before_pixels=True)
        return
    try:
        with Image.open(p) as im:
            if im.format == "JPEG":
                im.draft("L", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise bad_image("unreadable or corrupt image", p, e) from None


#: Largest image (pixels) a trainer decodes: PIL's decompression-bomb limit (a cached image holds at most the
#: pixel budget; a raw one a few tens of megapixels).
MAX_DECODE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_TAILS = {"PNG": (b"IEND\xaeB`\x82",), "JPEG": (b"\xff\xd9",)}


def check_image_header(path: str | os.PathLike, *, max_pixels: int = MAX_DECODE_PIXELS,
                       max_aspect: float = MAX_ASPECT_RATIO) -> tuple[int, int]:
    """The cheap check a training dataset makes of every image when it is built (no pixel decoding): the file
    is there and not empty, its header opens, its size is within the decode limits (``max_pixels``: a
    decompression bomb; ``max_aspect``: the vision processor refuses a 1x30000 image) and a PNG/JPEG ends with
    its end marker (a truncated file does not). Returns ``(height, width)``; raises :class:`BadImageError`
    whose ``reason`` is the short cause."""
    p = Path(path)
    _check_file(p)
    try:
        with Image.open(p) as im:
            w, h = im.size
            fmt = im.format
    except Image.DecompressionBombError as e:
        raise bad_image("decompression bomb (too many pixels to decode)", p, e) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise bad_image("unreadable or corrupt image", p, e) from None
    if w < 1 or h < 1:
        raise bad_image(f"image has no pixels ({w}x{h})", p)
    if w * h > max_pixels:
        raise bad_image(f"decompression bomb: {w}x{h} = {w * h} pixels, above the decode limit of {max_pixels}", p)
    if max(w, h) / min(w, h) > max_aspect:
        raise bad_image(f"{w}x{h}: aspect ratio above {max_aspect:g}, which the vision processor refuses", p)
    tails = _TAILS.get(fmt or "")
    if tails:
        with open(p, "rb") as fh:
            fh.seek(max(0, p.stat().st_size - 64))
            tail = fh.read().rstrip(b"\x00\r\n ")
        if not any(tail.endswith(t) for t in tails):
            raise bad_image(f"truncated image (the {fmt} end marker is missing)", p)
    return h, w


def _minmax_uint8(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    a = arr.astype(np.float64, copy=False)
    lo = float(np.min(a)) if lo is None else float(lo)
    hi = float(np.max(a)) if hi is None else float(hi)
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out = (a - lo) * (255.0 / (hi - lo))
    np.clip(out, 0.0, 255.0, out=out)
    return np.rint(out).astype(np.uint8)


def _gray_or_rgb(rgb: np.ndarray) -> Image.Image:
    """An RGB array whose three channels are equal becomes ``"L"``; otherwise ``"RGB"``."""
    if rgb.ndim == 3 and rgb.shape[2] >= 3:
        rgb = rgb[:, :, :3]
        if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2]):
            return Image.fromarray(np.ascontiguousarray(rgb[:, :, 0]))
        return Image.fromarray(np.ascontiguousarray(rgb))
    return Image.fromarray(np.ascontiguousarray(rgb))


def _load_raster(p: Path) -> Image.Image:
    try:
        with Image.open(p) as im:
            im.load()
            mode = im.mode
            if mode == "L":
                return im.copy()
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                return Image.fromarray(_minmax_uint8(np.asarray(im)))
            if mode in ("1", "LA", "La"):
                return im.convert("L")
            return _gray_or_rgb(np.asarray(im.convert("RGB")))
    except BadImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise bad_image("unreadable or corrupt image", p, e) from None


def _read_dicom(p: Path, stop_before_pixels: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(p, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError) as e:
        raise bad_image("not a readable DICOM file", p, e) from None


def _first(value) -> float:
    """First value of a possibly multi-valued DICOM element."""
    if isinstance(value, list | tuple) or (hasattr(value, "__len__") and not isinstance(value, str | bytes)):
        return float(value[0])
    return float(value)


def _voi_range(arr: np.ndarray, ds) -> tuple[np.ndarray, float, float]:
    """Apply the VOI LUT or windowing when present; return the result and its nominal output range."""
    from pydicom.pixels import apply_voi, apply_windowing

    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        n_entries = int(item.LUTDescriptor[0]) or 65536
        first = int(item.LUTDescriptor[1])
        iarr = np.rint(arr).astype(np.int64) if not np.issubdtype(arr.dtype, np.integer) else arr
        out = apply_voi(iarr, ds)
        lut = apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds)
        return out, float(lut.min()), float(lut.max())
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        out = apply_windowing(arr.astype(np.float64), ds)
        span = 10.0 * max(abs(width), 1.0)
        probe = apply_windowing(np.array([center - span, center + span], dtype=np.float64), ds)
        return out, float(probe.min()), float(probe.max())
    return arr, float(np.min(arr)), float(np.max(arr))


def _load_dicom(p: Path) -> Image.Image:
    ds = _read_dicom(p)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise bad_image("DICOM file has no pixel data", p)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except Exception as e:  # decoder plugins raise many types (missing codec, truncated data, ...)
        raise bad_image("cannot decode DICOM pixel data", p, e) from None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1:
        arr = arr[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if arr.ndim == 3:  # colour (pydicom converts YBR to RGB)
        rgb = arr if arr.dtype == np.uint8 else _minmax_uint8(arr)
        return _gray_or_rgb(rgb)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise bad_image("unsupported Photometric Interpretation", p, field="PhotometricInterpretation",
                        value=photometric)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if np.issubdtype(arr.dtype, np.integer) and arr.size and int(arr.max()) - int(arr.min()) <= _MAX_TABLE:
                # integer stored values: run the value pipeline once per distinct value, then look up
                lo_v = int(arr.min())
                domain = np.arange(lo_v, int(arr.max()) + 1).astype(arr.dtype)
                table = _gray_values(domain, ds, photometric)
                idx = arr - arr.dtype.type(lo_v) if np.issubdtype(arr.dtype, np.unsignedinteger) else (
                    arr.astype(np.int64) - lo_v)
                out8 = table[idx]
            else:
                out8 = _gray_values(arr, ds, photometric)
    except BadImageError:
        raise
    except (ValueError, TypeError, AttributeError, IndexError) as e:
        raise bad_image("cannot apply DICOM value LUTs", p, e) from None
    return Image.fromarray(np.ascontiguousarray(out8))


def _gray_values(stored: np.ndarray, ds, photometric: str) -> np.ndarray:
    """Stored values -> 8-bit display values: modality LUT, VOI LUT/window (else min-max), inversion."""
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(stored, ds)
    try:
        out, lo, hi = _voi_range(values, ds)
    except (ValueError, NotImplementedError, AttributeError, TypeError, IndexError):
        out, lo, hi = values, float(np.min(values)), float(np.max(values))  # unusable VOI: min-max
    if float(np.min(out)) == float(np.max(out)) and float(np.min(values)) < float(np.max(values)):
        out, lo, hi = values, float(np.min(values)), float(np.max(values))  # the window hides everything
    out8 = _minmax_uint8(out, lo, hi)
    inverse = str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
    if (photometric == "MONOCHROME1") != inverse:
        out8 = 255 - out8
    return out8


# -- resizing and cache ----------------------------------------------------------------------------
def resize_to_budget(img: Image.Image, *, min_pixels: int = DEFAULT_MIN_PIXELS,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Resize (bicubic) to :func:`smart_resize`'s size; returns ``img`` itself when already there."""
    h, w = smart_resize(img.height, img.width, min_pixels=min_pixels, max_pixels=max_pixels)
    if (h, w) == (img.height, img.width):
        return img
    return img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0)


def load_resized(path: str | os.PathLike, *, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """:func:`load_image` then :func:`resize_to_budget`; a bad size or ratio is a BadImageError."""
    img = load_image(path)
    try:
        return resize_to_budget(img, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError as e:
        raise bad_image("size outside what the model accepts", Path(path), e) from None


@dataclass(frozen=True)
class CachedImage:
    """One cached, resized image: where it is, where it came from, its size and token count."""

    path: Path
    source: Path
    height: int
    width: int
    hit: bool

    @property
    def tokens(self) -> int:
        return vision_tokens(self.height, self.width)


class ImageCache:
    """Resize-once PNG cache for one pixel budget, safe to use from several threads.

    ``get(source)`` returns the cached PNG, creating it on the first call. Files are written to a
    temporary name and renamed, so an interrupted run never leaves a half-written image behind.
    """

    def __init__(self, cache_dir: str | os.PathLike, *, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        smart_resize(FACTOR, FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)  # validates the budget
        self.root = Path(cache_dir)
        self.min_pixels, self.max_pixels = int(min_pixels), int(max_pixels)
        self.dir = self.root / f"px{self.min_pixels}-{self.max_pixels}"
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def key(self, source: str | os.PathLike) -> str:
        """Hash of the absolute source path, its size and mtime, and the budget."""
        p = Path(source).resolve()
        try:
            st = p.stat()
        except OSError:
            raise bad_image("image file not found", p) from None
        raw = f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{self.min_pixels}\0{self.max_pixels}"
        return hashlib.sha1(raw.encode("utf-8")).hexdigest()

    def path_for(self, source: str | os.PathLike) -> Path:
        k = self.key(source)
        return self.dir / k[:2] / f"{k}.png"

    def relpath(self, cached: CachedImage) -> str:
        """The cached file's path relative to the cache root (the data root of prepared records)."""
        return cached.path.relative_to(self.root).as_posix()

    def get(self, source: str | os.PathLike) -> CachedImage:
        src = Path(source)
        _check_file(src)
        dest = self.path_for(src)
        if dest.is_file():
            try:
                h, w = check_image_header(dest)  # a truncated or emptied entry is rebuilt, not handed on
                with self._lock:
                    self.hits += 1
                return CachedImage(dest, src, h, w, True)
            except (BadImageError, OSError, SyntaxError):
                pass  # unreadable cache entry: rebuild it
        img = load_resized(src, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        img.save(tmp, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
        os.replace(tmp, dest)
        with self._lock:
            self.misses += 1
        return CachedImage(dest, src, img.height, img.width, False)
