"""``python -m mllm_cxr.demo`` refuses option combinations that would give a wrong table, before any work."""

from __future__ import annotations

import pytest

from mllm_cxr.demo import main


def test_reuse_with_a_new_sft_is_refused(tmp_path, capsys):
    """Reports reused from an earlier run were trained from the earlier SFT adapter: scoring them against a new
    SFT would compare stages that no longer share a start."""
    with pytest.raises(SystemExit) as e:
        main(["--runs", str(tmp_path), "--stages", "sft,dpo", "--reuse"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--reuse with sft in --stages" in err and "leave sft out" in err
    assert not (tmp_path / "demo").exists()  # refused before any output


def test_reuse_without_sft_gets_past_the_options(tmp_path, capsys):
    """The same flags without sft are accepted (here the run then stops on the missing demo base, naming it)."""
    assert main(["--runs", str(tmp_path), "--stages", "dpo", "--reuse"]) == 2
    assert f"missing {tmp_path / 'demo-base' / 'config.json'}" in capsys.readouterr().err


def test_reuse_leaves_out_the_export_of_a_retrained_grpo(tmp_path):
    """The stages ``--reuse`` scores from an earlier run: those left out of ``--stages`` with both report files,
    but not the export when GRPO trains again (the earlier export came from the earlier GRPO adapter)."""
    from types import SimpleNamespace

    from mllm_cxr.demo import ALL_STAGES, DemoRun

    run = DemoRun.__new__(DemoRun)
    run.args, run.out = SimpleNamespace(reuse=True), tmp_path / "demo"
    (run.out / "pred").mkdir(parents=True)
    for name in ALL_STAGES:
        for suffix in ("", "_sampled"):
            (run.out / "pred" / f"{name}{suffix}.jsonl").write_text("{}\n")
    assert run.reused(["grpo"]) == ["sft", "control", "editgrpo", "dpo", "chexalign"]
    assert run.reused(["dpo"]) == ["sft", "control", "grpo", "editgrpo", "chexalign", "export"]
    (run.out / "pred" / "control_sampled.jsonl").unlink()  # one of its two files missing: not reused
    assert "control" not in run.reused(["dpo"])
    run.args.reuse = False
    assert run.reused(["dpo"]) == []
