"""The shared cue lexicon (reward/cues.py, reward/resources/cues.yaml) and how the engines take it."""

from __future__ import annotations

import re

import pytest
import yaml

from reward import cues as lex
from reward.base import RewardError


def test_lexicon_lists_and_named_entries():
    assert lex.cues("negation")[:2] == ("no", "without")
    assert "resolved" in lex.cues("resolution") and "versus" in lex.cues("hedge")
    assert lex.cue("seen_before", "again") == "again" and lex.cue("unchanged", "stable") == "stabl[ey]"
    with pytest.raises(RewardError, match="no list"):
        lex.cues("nope")
    with pytest.raises(RewardError, match="no entry"):
        lex.cue("seen_before", "nope")


def test_alternation_makes_groups_non_capturing_and_widens_spaces():
    assert lex.alternation(["absence of", r"remain(s|ed)?"], ["x"], space=r"\s+") == r"absence\s+of|remain(?:s|ed)?|x"
    assert re.fullmatch(lex.alternation(lex.cues("hedge")), "possibly")


def test_expand_puts_the_list_in_place_and_refuses_unknown_names():
    assert lex.expand(["a", "$clause_breaks", "b"]) == ["a", *lex.cues("clause_breaks"), "b"]
    assert lex.expand("not a list") == "not a list"
    with pytest.raises(RewardError, match=r"\$nope"):
        lex.expand(["$nope"], "cues.pre_negation")


def test_the_labeler_rules_take_the_lexicon(tmp_path):
    from reward.chexpert import ChexpertRulesLabeler, load_rules

    rules = load_rules()
    assert set(lex.cues("negation")) <= set(rules["cues"]["pre_negation"])
    assert rules["cues"]["bidirectional_negation"] == list(lex.cues("resolution"))
    assert not any(isinstance(e, str) and e.startswith("$") for v in rules["cues"].values() for e in v)
    # written out, the expanded rules label like the packaged file (what bench_labeler gives an old labeler)
    out = tmp_path / "rules.yaml"
    out.write_text(yaml.safe_dump(rules, sort_keys=False, allow_unicode=True), encoding="utf-8")
    text = "No effusion. Possible pneumonia, but stable cardiomegaly. The line has been removed."
    assert ChexpertRulesLabeler(rules_path=out).label(text) == ChexpertRulesLabeler().label(text)
    bad = tmp_path / "bad.yaml"
    bad.write_text("observations:\n  Pneumothorax:\n    findings: [pneumothorax]\ncues:\n  pre_negation: [$nope]\n")
    with pytest.raises(RewardError, match=r"\$nope"):
        ChexpertRulesLabeler(rules_path=bad)


def test_bad_lexicon_file_is_our_error(tmp_path):
    p = tmp_path / "cues.yaml"
    p.write_text("negation: [no]\n")  # YAML reads a bare no as false: the entry must be quoted
    with pytest.raises(RewardError, match="'negation' must be a list"):
        lex.lexicon(str(p))
    p.write_text("negation: ['no']\n")
    with pytest.raises(RewardError, match="'resolution' must be"):
        lex.lexicon(str(p))
    p.write_text("negation: ['(']\nresolution: [a]\nhedge: [a]\nclause_breaks: [a]\nunchanged: {a: a}\n"
                 "seen_before: {a: a}\n")
    with pytest.raises(RewardError, match="bad regex"):
        lex.lexicon(str(p))
