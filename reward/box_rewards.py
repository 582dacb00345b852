"""Box rewards for GRPO, registered as scorers (so a reward spec names them: ``{name: iou, kwargs: {family:
qwen2_5_vl}}``). A completion is decoded with the model family's codec (:mod:`cxr_io.boxes`); the
references come from dataset columns, one value per completion:

* ``boxes``: the reference boxes (a list of ``{x_min, y_min, x_max, y_max[, label]}`` fractions, or its JSON
  text; ``[]`` when the right answer is "not found");
* ``grounded_findings``: the reference grounded report (``[{text, boxes | null}]``, or its JSON text);
* ``image_size``: ``[width, height]`` of the original image (needed by ``qwen2_5_vl`` and ``maira2``).

Every box reward needs ``kwargs: {family: <model family>}`` (no default: a wrong family mis-scales every box).
Scorers (all in [0, 1]; a strange completion scores 0, never raises; an answer with a malformed box
fragment scores 0 in ``iou``, ``box_f1`` and ``grounded_report`` too, so partial garbage is not rewarded):

* ``iou``: the Hungarian matched IoU of :func:`reward.box_metrics.matched_iou` (continuous; the VLM-R1
  IoU reward when there is one box each);
* ``box_f1``: per-sample box F1 at IoU >= ``threshold`` (Hungarian matching);
* ``box_format``: 1 when the answer parses without a failed fragment and every box is inside the image
  with ordered corners (or it is an explicit "none"), else 0;
* ``grounded_report``: the RadFact-style grounded score of :func:`reward.box_metrics.grounded_report_score`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cxr_io.boxes import FAMILIES, box_problem, decode_boxes, decode_grounded
from reward.base import RewardError, Scorer, ScoreResult
from reward.box_metrics import box_f1, grounded_report_score, matched_iou

#: Image size assumed for families whose coordinates do not depend on it (0-1000 and fractions).
_NEUTRAL_SIZE = (1000, 1000)


def _parse_column(value: Any, name: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise RewardError(f"column '{name}' holds text that is not JSON: {value[:60]!r}") from None
    return value


class _BoxScorer(Scorer):
    needs_reference = False

    def __init__(self, family: str | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
                 threshold: float = 0.5) -> None:
        if family is None:  # no default: a wrong family silently mis-scales every box
            raise RewardError(f"reward '{self.name}' needs kwargs: {{family: ...}} (one of {', '.join(FAMILIES)}): "
                              "the model family whose box text the completions are in")
        if family not in FAMILIES:
            raise RewardError(f"{self.name}: unknown box family {family!r}; known: {', '.join(FAMILIES)}")
        self.family, self.min_pixels, self.max_pixels = family, min_pixels, max_pixels
        self.threshold = float(threshold)

    def _size(self, image_size: Sequence[Any] | None, i: int) -> tuple[int, int]:
        if image_size is None or image_size[i] is None:
            if self.family in ("qwen2_5_vl", "maira2"):
                raise RewardError(f"reward '{self.name}' with family {self.family} needs an 'image_size' column "
                                  "([width, height] of the original image)")
            return _NEUTRAL_SIZE
        size = _parse_column(image_size[i], "image_size")
        try:
            w, h = int(size[0]), int(size[1])
        except (TypeError, ValueError, IndexError):
            raise RewardError(f"column 'image_size' must be [width, height], got {size!r}") from None
        return w, h

    def _decode(self, text: str, size: tuple[int, int]):
        return decode_boxes(text, self.family, size, min_pixels=self.min_pixels, max_pixels=self.max_pixels)

    def _refs(self, boxes: Sequence[Any] | None, n: int) -> list[list[dict]]:
        if boxes is None:
            raise RewardError(f"reward '{self.name}' needs a 'boxes' column (the reference boxes)")
        out = []
        for v in boxes:
            v = _parse_column(v, "boxes")
            if v is None:
                v = []
            if not isinstance(v, list) or any(box_problem(b) for b in v):
                raise RewardError(f"column 'boxes' must hold lists of valid fraction boxes, got {str(v)[:80]}")
            out.append(v)
        return out


class IoUReward(_BoxScorer):
    name = "iou"

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, *, boxes: Sequence[Any] | None = None,
              image_size: Sequence[Any] | None = None) -> ScoreResult:
        ref = self._refs(boxes, len(hyps))
        scores, details = [], []
        for i, h in enumerate(hyps):
            got = self._decode(h, self._size(image_size, i))
            ok = got.ok or got.empty_answer
            scores.append(matched_iou(list(got), ref[i]) if ok else 0.0)
            details.append({"n_boxes": len(got), "n_failed": got.n_failed})
        return ScoreResult(scores, details)


class BoxF1Reward(_BoxScorer):
    name = "box_f1"

    def __init__(self, family: str | None = None, min_pixels: int | None = None, max_pixels: int | None = None,
                 threshold: float = 0.5, match_labels: bool = False) -> None:
        super().__init__(family, min_pixels, max_pixels, threshold)
        self.match_labels = bool(match_labels)

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, *, boxes: Sequence[Any] | None = None,
              image_size: Sequence[Any] | None = None) -> ScoreResult:
        ref = self._refs(boxes, len(hyps))
        scores, details = [], []
        for i, h in enumerate(hyps):
            got = self._decode(h, self._size(image_size, i))
            if not (got.ok or got.empty_answer):
                scores.append(0.0)
                details.append({"n_failed": got.n_failed})
                continue
            r = box_f1(list(got), ref[i], threshold=self.threshold, match_labels=self.match_labels)
            scores.append(r["f1"])
            details.append(r)
        return ScoreResult(scores, details)


class BoxFormatReward(_BoxScorer):
    name = "box_format"

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, *,
              image_size: Sequence[Any] | None = None) -> ScoreResult:
        scores = []
        for i, h in enumerate(hyps):
            got = self._decode(h, self._size(image_size, i))
            good = got.ok and (len(got) > 0 or got.empty_answer) and all(box_problem(b) is None for b in got)
            scores.append(1.0 if good else 0.0)
        return ScoreResult(scores)


class GroundedReportReward(_BoxScorer):
    name = "grounded_report"

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, *,
              grounded_findings: Sequence[Any] | None = None,
              image_size: Sequence[Any] | None = None) -> ScoreResult:
        if grounded_findings is None:
            raise RewardError("reward 'grounded_report' needs a 'grounded_findings' column (the reference report)")
        scores, details = [], []
        for i, h in enumerate(hyps):
            ref = _parse_column(grounded_findings[i], "grounded_findings") or []
            if not isinstance(ref, list):
                raise RewardError(f"column 'grounded_findings' must hold lists of {{text, boxes}}, got {str(ref)[:80]}")
            got = decode_grounded(h, self.family, self._size(image_size, i), min_pixels=self.min_pixels,
                                  max_pixels=self.max_pixels)
            r = grounded_report_score(list(got), ref, threshold=self.threshold)
            scores.append(r["score"] if got.ok else 0.0)
            details.append({**r, "n_failed": got.n_failed})
        return ScoreResult(scores, details)
