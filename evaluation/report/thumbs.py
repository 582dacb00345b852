"""Thumbnails of the radiographs, inlined as small grayscale JPEG data URIs (cached per path, and on disk
with ``--thumb-cache``); an image that is missing or unreadable is counted, never fatal."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path

from cxr_io import InputError, atomic_write
from evaluation.report.options import DEFAULT_THUMB, ReportOptionError


@dataclass
class Thumbs:
    """Thumbnail encoder with a per-path cache and counters of what could not be shown."""

    size: int = DEFAULT_THUMB
    quality: int = 70
    cache_dir: Path | None = None  # on-disk thumbnails, keyed by source path, size, mtime and thumbnail settings
    cache: dict[str, str | None] = field(default_factory=dict)
    missing: int = 0
    unreadable: int = 0
    encoded: int = 0
    disk_hits: int = 0
    bytes_out: int = 0

    def data_uri(self, path: Path) -> tuple[str | None, str | None]:
        """(``data:image/jpeg;base64,...``, None) or (None, reason)."""
        key = str(path)
        if key in self.cache:
            uri = self.cache[key]
            return (uri, None) if uri else (None, "unreadable")
        if not path.is_file():
            self.missing += 1
            return None, "missing"
        dest = self._cache_path(path)
        if dest is not None and dest.is_file():
            self.disk_hits += 1
            uri = self._data_uri(dest.read_bytes())
        else:
            try:
                data = self._jpeg(path)
            except Exception:  # any decoder error: a placeholder, counted (never fails the report)  # noqa: BLE001
                self.unreadable += 1
                self.cache[key] = None
                return None, "unreadable"
            if dest is not None:
                try:
                    with atomic_write(dest, "wb", flag="--thumb-cache") as fh:
                        fh.write(data)
                except (InputError, OSError) as e:
                    raise ReportOptionError(f"--thumb-cache {self.cache_dir}: cannot write a thumbnail ({e})") from None
            uri = self._data_uri(data)
        self.cache[key] = uri
        return uri, None

    def _cache_path(self, path: Path) -> Path | None:
        if self.cache_dir is None:
            return None
        import hashlib

        p = path.resolve()
        st = p.stat()
        key = hashlib.sha1(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{self.size}\0{self.quality}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.jpg"

    def _data_uri(self, data: bytes) -> str:
        self.bytes_out += len(data)
        return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    def _jpeg(self, path: Path) -> bytes:
        from PIL import Image

        from data_prep.images import load_image

        if path.suffix.lower() in (".jpg", ".jpeg"):
            with Image.open(path) as im:
                im.draft("L", (self.size * 2, self.size * 2))  # JPEG: decode at a reduced scale
                img = im.convert("L")
        else:
            img = load_image(path).convert("L")  # DICOM (windowing, MONOCHROME1), 8/16-bit PNG
        img.thumbnail((self.size, self.size), Image.Resampling.BILINEAR, reducing_gap=2.0)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        self.encoded += 1
        return buf.getvalue()


