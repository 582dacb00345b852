"""The phantom data set: :func:`make_phantom` plans patients, splits and hallucinations, draws each study
and writes ``studies.jsonl`` and the PNGs."""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from data_prep.errors import DataPrepError
from data_prep.phantom.findings import (
    _BASE_DATE,
    PHANTOM_FINDINGS,
    _Anatomy,
    _anatomy,
    _draw_findings,
    _earlier_findings,
    _Study,
)
from data_prep.phantom.render import _Bank, _bank, _frontal_boxes, _jitter, _render_frontal, _render_lateral
from data_prep.phantom.reports import (
    _INDICATIONS,
    _grounded_findings,
    _hallucination,
    _insert_sentence,
    _labels,
    _pick,
    _write_report,
)
from data_prep.schema import SPLITS, ImageRef, Prior, StudyRecord, write_records


def _check_args(n: int, prior_fraction: float, hallucinated_prior_rate: float, image_size: int,
                split_fractions: Sequence[float], extra_test: int = 0) -> tuple[float, ...]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataPrepError("must be a positive integer (the number of studies)", field="n", value=n)
    if isinstance(extra_test, bool) or not isinstance(extra_test, int) or extra_test < 0:
        raise DataPrepError("must be a non-negative integer (test studies added after the n)", field="extra_test",
                            value=extra_test)
    if not 0.0 <= prior_fraction <= 0.5:
        raise DataPrepError("must be within [0, 0.5] (each prior is itself one of the n studies)",
                            field="prior_fraction", value=prior_fraction)
    if not 0.0 <= hallucinated_prior_rate <= 1.0:
        raise DataPrepError("must be within [0, 1]", field="hallucinated_prior_rate", value=hallucinated_prior_rate)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 56 <= image_size <= 4096:
        raise DataPrepError("must be an integer number of pixels in [56, 4096]", field="image_size", value=image_size)
    fr = tuple(float(x) for x in split_fractions)
    if len(fr) != 3 or any(x < 0 for x in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise DataPrepError("must be three non-negative fractions (train, validate, test) summing to 1",
                            field="split_fractions", value=split_fractions)
    return fr


def _stamp(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def _plan(n: int, seed: int, prior_fraction: float, hallucinated_prior_rate: float,
          fractions: tuple[float, ...], stream: int = 0) -> tuple[int, np.ndarray, np.ndarray, set[tuple[int, int]]]:
    """Who has two studies, which patient goes to which split, which studies hallucinate a prior:
    (patients, two_studies per patient, split per patient, {(patient, study index)} that hallucinate).
    ``stream`` picks the random stream (0: the corpus, 2: the extra test studies)."""
    plan = np.random.default_rng([seed, stream])
    n_followups = min(round(prior_fraction * n), n // 2)
    n_patients = n - n_followups
    two_studies = np.zeros(n_patients, dtype=bool)
    two_studies[plan.permutation(n_patients)[:n_followups]] = True
    order = plan.permutation(n_patients)
    bounds = np.round(np.cumsum(fractions) * n_patients).astype(int)
    split_of = np.empty(n_patients, dtype=object)
    for rank, p in enumerate(order):
        split_of[p] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))] if rank < bounds[-1] else SPLITS[-1]
    no_prior_slots = [(p, 0) for p in range(n_patients)]  # (patient, index of study without prior)
    n_halluc = round(hallucinated_prior_rate * len(no_prior_slots))
    halluc = {no_prior_slots[i] for i in plan.permutation(len(no_prior_slots))[:n_halluc]}
    return n_patients, two_studies, split_of, halluc


def _patient_studies(rng: np.random.Generator, two_studies: bool) -> tuple[_Anatomy, list[_Study]]:
    """One patient's anatomy and studies, the earlier one first."""
    anat = _anatomy(rng)
    current = _draw_findings(rng)
    when = _BASE_DATE + _dt.timedelta(days=float(rng.uniform(0, 3000)), seconds=int(rng.integers(7 * 3600, 20 * 3600)))
    studies = [_Study(findings=current, ctr=anat.base_ctr, frontal_view="PA" if rng.random() < 0.8 else "AP", time=when)]
    if two_studies:
        earlier = _Study(findings=_earlier_findings(current, rng), ctr=anat.base_ctr,
                         frontal_view="PA" if rng.random() < 0.8 else "AP",
                         time=when - _dt.timedelta(days=int(rng.integers(14, 700)), hours=int(rng.integers(0, 6))))
        studies.insert(0, earlier)
    return anat, studies


def _study_record(out: Path, study_id: str, patient_id: str, split: str, st: _Study,
                  previous: tuple[_Study, StudyRecord] | None, hallucinate: bool, anat: _Anatomy, rng: np.random.Generator,
                  bank: _Bank, *, seed: int, lateral: bool, image_size: int) -> StudyRecord:
    """Draw one study's images (written under ``out``) and write its report: its record."""
    views = [st.frontal_view] + (["LATERAL"] if lateral else [])
    images = []
    pose = _jitter(anat, rng)
    for view in views:
        rel = f"images/{study_id}_{view}.png"
        render = _render_lateral if view == "LATERAL" else _render_frontal
        render(pose, st, image_size, rng, bank).save(out / rel, compress_level=1)
        # boxes on the frontal view (the lateral view's are not recorded)
        images.append(ImageRef(path=rel, view=view,
                               boxes=None if view == "LATERAL" else _frontal_boxes(pose, st)))
    prior_study = previous[0] if previous else None
    findings_text, impression_text, negated = _write_report(st, prior_study, rng)
    sentence = None
    if hallucinate:
        sentence = _hallucination(st, rng)
        if rng.random() < 0.6:
            findings_text = _insert_sentence(findings_text, sentence, rng)
        else:
            impression_text = _insert_sentence(impression_text, sentence, rng)
    technique = (f"{st.frontal_view} and lateral views of the chest." if lateral
                 else f"Single {st.frontal_view} view of the chest.")
    meta: dict[str, Any] = {
        "findings": [f for f in PHANTOM_FINDINGS if f in st.findings],
        "views": views,
        "hallucinated_prior": hallucinate,
        "hallucinated_sentence": sentence,
        "details": {**st.findings, "ctr": st.findings.get("Cardiomegaly", {}).get("ctr", st.ctr)},
        "generator": {"name": "phantom", "seed": seed},
    }
    prior_ref = None
    comparison = "None."
    if previous is not None:
        prev_rec = previous[1]
        prior_ref = Prior(study_id=prev_rec.study_id, findings=prev_rec.findings, impression=prev_rec.impression,
                          images=list(prev_rec.images), study_time=prev_rec.study_time)
        comparison = f"Chest radiograph of {prev_rec.study_time[:10]}."
        meta["changes"] = dict(st.changes)
    return StudyRecord(
        study_id=study_id, patient_id=patient_id, dataset="phantom", split=split,
        study_time=_stamp(st.time), images=images, indication=_pick(rng, _INDICATIONS), technique=technique,
        comparison=comparison, findings=findings_text, impression=impression_text, prior=prior_ref,
        labels=_labels(st, negated), meta=meta,
        grounded_findings=_grounded_findings(findings_text, images[0].boxes or []),
    )


def make_phantom(out_dir: str | os.PathLike, n: int = 200, seed: int = 0, *, lateral: bool = True, prior_fraction: float = 0.3,
                 hallucinated_prior_rate: float = 0.3, image_size: int = 224,
                 split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), extra_test: int = 0) -> dict:
    """Write a phantom data set: ``out_dir/studies.jsonl`` and ``out_dir/images/*.png``.

    ``n`` is the number of studies (records). ``round(prior_fraction * n)`` of them are follow-ups
    whose earlier study is one of the ``n`` too (same patient, so ``prior_fraction`` is at most
    0.5); ``round(hallucinated_prior_rate * m)`` of the ``m`` studies without a prior get an
    invented prior-exam sentence. Patients are split by ``split_fractions`` (train, validate,
    test), never across splits. Images are ``image_size`` pixels square, grayscale PNG: the
    frontal view (PA or AP) and, with ``lateral``, a lateral view. Image paths in the records are
    relative to ``out_dir``.

    ``extra_test`` adds that many test studies after the ``n`` (new patients, the same prior and
    hallucination rates) from random streams of their own: the ``n`` studies, their splits and
    images are the same as without them, so a test split can grow (for statistical power) while
    training and validation data stay byte for byte what they were.

    Returns a summary: studies, patients, images, counts per split and per finding, normal studies,
    studies with a prior, hallucinated prior references, seconds elapsed and studies per second.
    """
    t0 = time.perf_counter()
    fractions = _check_args(n, prior_fraction, hallucinated_prior_rate, image_size, split_fractions, extra_test)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    bank = _bank(seed, image_size)
    records: list[StudyRecord] = []
    parts = [(_plan(n, seed, prior_fraction, hallucinated_prior_rate, fractions), 1, "php")]
    if extra_test:
        # drawn after the corpus from streams of their own, so the n studies are the same with or without them
        parts.append((_plan(extra_test, seed, prior_fraction, hallucinated_prior_rate, (0.0, 0.0, 1.0), stream=2), 3,
                      "phq"))
    with tqdm(total=n + extra_test, desc="phantom", unit="study", disable=None) as bar:
        for (n_patients, two_studies, split_of, halluc), stream, prefix in parts:
            for p in range(n_patients):
                rng = np.random.default_rng([seed, stream, p])
                anat, studies = _patient_studies(rng, bool(two_studies[p]))
                previous: tuple[_Study, StudyRecord] | None = None
                for k, st in enumerate(studies):
                    rec = _study_record(out, f"ph{len(records):05d}", f"{prefix}{p:05d}", str(split_of[p]), st,
                                        previous, previous is None and (p, k) in halluc, anat, rng, bank, seed=seed,
                                        lateral=lateral, image_size=image_size)
                    records.append(rec)
                    previous = (st, rec)
                    bar.update()

    write_records(records, out / "studies.jsonl")
    elapsed = time.perf_counter() - t0
    return {
        "out_dir": str(out),
        "studies": len(records),
        "patients": sum(part[0][0] for part in parts),
        "images": sum(len(r.images) for r in records),
        "splits": {s: sum(r.split == s for r in records) for s in SPLITS},
        "findings": {f: sum(f in r.meta["findings"] for r in records) for f in PHANTOM_FINDINGS},
        "normal": sum(not r.meta["findings"] for r in records),
        "with_prior": sum(r.prior is not None for r in records),
        "hallucinated_prior": sum(bool(r.meta["hallucinated_prior"]) for r in records),
        "elapsed_s": round(elapsed, 3),
        "studies_per_s": round(len(records) / elapsed, 1) if elapsed > 0 else None,
    }

