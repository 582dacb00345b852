"""RadGraph "processed annotations" (main observations with modifiers, anatomy and certainty), as
``radgraph.get_radgraph_processed_annotations``: reference code for the tests (no production caller,
so it lives here, not in :mod:`reward.radgraph`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from reward.base import RewardError
from reward.radgraph import Annotation, report_annotation

# ----------------------------------------------------------------------------------------------------
# Processed annotations (main observations with modifiers, anatomy and certainty)
# ----------------------------------------------------------------------------------------------------

_ABSENT = ("Observation::definitely absent", "Observation::measurement::definitely absent")
_UNCERTAIN = ("Observation::uncertain", "Observation::measurement::uncertain")
_STRIP = "\n .\"'"


def _drop_mutual(links: dict[str, list[str]]) -> dict[str, list[str]]:
    """Drop a link ``k -> v`` when ``v[0] -> [k]`` was already kept (a two-entity modify loop)."""
    kept: dict[str, list[str]] = {}
    for k, v in links.items():
        if kept.get(v[0]) == [k]:
            continue
        kept[k] = v
    return kept


def _with_modifiers(entities: Mapping[str, Any], eid: str, modifiers: Mapping[str, list[str]],
                    seen: set[str]) -> list[tuple[str, str, int, int]]:
    """The entity and, depth first before it, everything that (transitively) modifies it."""
    if eid in seen:
        return []
    seen.add(eid)
    out: list[tuple[str, str, int, int]] = []
    for m in modifiers.get(eid, ()):
        out += _with_modifiers(entities, m, modifiers, seen)
    ent = entities[eid]
    out.append((ent["tokens"], ent["label"], int(ent["start_ix"]), int(ent["end_ix"])))
    return out


def _in_text_order(words: list[str], starts: list[int]) -> list[str]:
    # the word of the first entity with each start index, by increasing start index
    return [words[starts.index(s)] for s in sorted(starts)]


def _unique(xs: list) -> list:
    return [x for i, x in enumerate(xs) if x not in xs[:i]]


def _drop_contained(items: list[str]) -> list[int]:
    """Indices of the items not contained (as text and as a word set) in another item."""
    keep = []
    for i, item in enumerate(items):
        words = set(item.split())
        if not any(i != j and item in other and words <= set(other.split()) for j, other in enumerate(items)):
            keep.append(i)
    return keep


def processed_annotations(annotation: Annotation) -> dict[str, Any]:
    """Main observations of a (RadGraph-XL) annotation, as ``radgraph.get_radgraph_processed_annotations``.

    A main observation is an ``Observation`` entity that modifies nothing. Each record has the
    observation text with its (transitive) ``modify`` observations in text order, their start/end
    token indices, the anatomy it is ``located_at`` (with the anatomy's own modifiers; an anatomy
    contained in another one is dropped), a tag (``definitely absent`` if any part is absent, else
    ``uncertain`` if any part is uncertain, else ``definitely present``) and ``suggestive_of``
    (``None`` or a list of ``"<obs> suggestive of <target>"``).
    Returns ``{"processed_annotations", "radgraph_annotations", "start_ix_to_label", "radgraph_text"}``.
    """
    report = report_annotation(annotation)
    if "entities" in annotation:  # a bare report dict: wrap it as the radgraph output would
        annotation = {"0": annotation}
    for eid, ent in report["entities"].items():
        for key in ("start_ix", "end_ix"):
            if key not in ent:
                raise RewardError(f"annotation: entity {eid!r} has no field '{key}'")
    entities = {str(k): v for k, v in report["entities"].items()}

    obs_modifiers: dict[str, list[str]] = defaultdict(list)
    anat_modifiers: dict[str, list[str]] = defaultdict(list)
    located_at: dict[str, list[str]] = defaultdict(list)
    suggestive: dict[str, list[str]] = defaultdict(list)
    main: list[str] = []
    for eid, ent in entities.items():
        label, rels = ent["label"], ent["relations"]
        is_obs, is_anat = "Observation" in label, "Anatomy" in label
        if is_obs and "modify" not in [r[0] for r in rels]:
            main.append(eid)
        for rel in rels:
            target = str(rel[1])
            if "modify" in rel and is_obs:
                obs_modifiers[target].append(eid)
            if "modify" in rel and is_anat:
                anat_modifiers[target].append(eid)
            if "located_at" in rel and is_obs:
                located_at[eid].append(target)
            if "suggestive_of" in rel and is_obs:
                suggestive[eid].append(target)
    obs_modifiers = _drop_mutual(obs_modifiers)
    anat_modifiers = _drop_mutual(anat_modifiers)

    records = []
    for eid in main:
        parts = _with_modifiers(entities, eid, obs_modifiers, set())
        labels = [p[1] for p in parts]
        starts = [p[2] for p in parts]
        words = _unique(_in_text_order([p[0] for p in parts], starts))
        if any(lab in labels for lab in _ABSENT):
            tag = "definitely absent"
        elif any(lab in labels for lab in _UNCERTAIN):
            tag = "uncertain"
        else:
            tag = "definitely present"
        record: dict[str, Any] = {
            "observation": " ".join(words).lower().strip(_STRIP),
            "observation_start_ix": _unique(sorted(starts)),
            "located_at": [],
            "located_at_start_ix": [],
            "tags": [tag],
            "suggestive_of": None,
            "observation_end_ix": _unique(sorted(p[3] for p in parts)),
        }
        if eid in located_at:
            texts, ixs = [], []
            for anat in located_at[eid]:
                aparts = _with_modifiers(entities, anat, anat_modifiers, set())
                astarts = [p[2] for p in aparts]
                texts.append(" ".join(_in_text_order([p[0] for p in aparts], astarts)).lower().strip(_STRIP))
                ixs.append(sorted(astarts))
            keep = _drop_contained(texts)
            record["located_at"] = [texts[i] for i in keep]
            record["located_at_start_ix"] = [ixs[i] for i in keep]
        if eid in suggestive:
            links = [f"{entities[eid]['tokens']} suggestive of {entities[t]['tokens']}" for t in suggestive[eid]]
            record["suggestive_of"] = [links[i] for i in _drop_contained(links)]
        records.append(record)

    start_ix_to_label = {str(v["start_ix"]): v["label"] for v in report["entities"].values()}
    return {"processed_annotations": records, "radgraph_annotations": annotation,
            "start_ix_to_label": start_ix_to_label, "radgraph_text": report.get("text", "")}
