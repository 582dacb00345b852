"""Shared inputs of the alignment tests (pairs, DPO, GRPO, EditGRPO): phantom data and a tiny SFT adapter.

A test module loads the fixtures with ``pytest_plugins = ["tests.builders.alignment"]``: as a plugin the
module is registered once, so each session fixture is built once however many modules use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.builders.repo import REPO

SFT_CFG = REPO / "recipes" / "configs" / "tiny" / "sft.yaml"


def subprocess_env() -> dict[str, str]:
    """One intra-op thread: on a loaded 2-core machine, torch's default thread count is several times slower."""
    return dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def run_recipe(recipe: str, *args: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "recipes" / recipe), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=subprocess_env(), cwd=cwd)


@pytest.fixture(scope="session")
def align_phantom(tmp_path_factory) -> Path:
    """240 phantom studies (171 train / 35 validate / 34 test; about 30% of the no-prior ones hallucinate a prior)."""
    from data_prep.phantom import make_phantom

    out = tmp_path_factory.mktemp("align-phantom")
    make_phantom(out, n=240, seed=0)
    return out


def derived_config(base: Path, out: Path, **overrides) -> Path:
    """A copy of a recipe config with some keys replaced (lists such as ``context: []`` included)."""
    data = yaml.safe_load(base.read_text())
    data.update(overrides)
    out.write_text(f"# derived from {base.name} by the alignment tests\n" + yaml.safe_dump(data, sort_keys=False))
    return out


#: The prompt and pixel keys a later stage must share with the SFT adapter it starts from.
PROMPT_KEYS = ("sections", "context", "include_prior_report", "include_prior_images", "max_images", "frontal_first",
               "system_prompt")


def adapter_settings(adapter: Path) -> dict:
    """The prompt and pixel-budget keys an adapter was trained with (from its ``mllm_cxr_config.json``)."""
    from mllm_cxr.run_config import RUN_CONFIG_NAME, read_run_config

    saved = read_run_config(Path(adapter) / RUN_CONFIG_NAME)
    out = {k: saved["PromptConfig"][k] for k in PROMPT_KEYS if k in saved["PromptConfig"]}
    out.update({k: saved["ModelArguments"][k] for k in ("min_pixels", "max_pixels") if saved["ModelArguments"].get(k)})
    return out


@pytest.fixture(scope="session")
def sft_adapter(tmp_path_factory, align_phantom, tiny_model_dir) -> Path:
    """The tiny SFT config trained on the phantom train split, with frontal + lateral images and the full
    report (FINDINGS + IMPRESSION: the hallucinated prior sentences live in both); about 1.5 minutes."""
    work = tmp_path_factory.mktemp("align-sft")
    cfg = derived_config(SFT_CFG, work / "sft.yaml", sections=["findings", "impression"], max_images=2)
    out = work / "adapter"
    proc = run_recipe("sft.py", "--config", str(cfg), "--studies", str(align_phantom / "studies.jsonl"),
                      "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(out), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def sample_reports(model_dir: Path, adapter: Path | None, phantom: Path, studies, *, k: int = 4,
                   max_new_tokens: int = 64, seed: int = 0, max_images: int = 2) -> list[list[str]]:
    """``k`` sampled reports (temperature 1) per study, seeded, one intra-op thread."""
    import torch

    from mllm_cxr.infer.generate import GenerationSettings, load_hf_generator
    from mllm_cxr.run_config import resolve_prompt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prompt = resolve_prompt(adapter, overrides=None if adapter else {"max_images": max_images},
                                min_pixels=None if adapter else 3136, max_pixels=None if adapter else 12544)
        gen = load_hf_generator(str(model_dir), str(adapter) if adapter else None, prompt, phantom,
                                GenerationSettings(max_new_tokens=max_new_tokens, do_sample=True,
                                                   num_return_sequences=k, seed=seed),
                                dtype="float32", device="cpu")
        out: list[list[str]] = []
        for i in range(0, len(studies), 8):
            gen.settings.seed = seed + i
            out += gen.generate(studies[i:i + 8])
        return out
    finally:
        torch.set_num_threads(threads)


def phantom_finding_scores(model_dir: Path, adapter: Path | None, phantom: Path, *, limit: int = 64,
                           max_new_tokens: int = 96) -> dict:
    """Greedy reports for the phantom test split through the generate path (``load_hf_generator``, the
    adapter's own prompt; the tiny SFT config's prompt for the untrained model), scored with the
    phantom finding F1."""
    import torch

    from data_prep.phantom import finding_scores
    from data_prep.schema import resolve_data_root
    from mllm_cxr.data import load_split
    from mllm_cxr.infer.generate import GenerationSettings, load_hf_generator
    from mllm_cxr.run_config import resolve_prompt

    studies_file = phantom / "studies.jsonl"
    studies = load_split(studies_file, "test", limit)
    untrained = {"max_images": 1, "context": [], "sections": ["impression"]}
    prompt = resolve_prompt(adapter, overrides=None if adapter else untrained,
                            min_pixels=None if adapter else 3136, max_pixels=None if adapter else 12544)
    gen = load_hf_generator(str(model_dir), str(adapter) if adapter else None, prompt,
                            resolve_data_root(studies_file), GenerationSettings(max_new_tokens=max_new_tokens),
                            dtype="float32", device="cpu")
    torch.manual_seed(0)
    preds = [p[0] for i in range(0, len(studies), 8) for p in gen.generate(studies[i:i + 8])]
    scores = finding_scores(preds, studies)
    scores["examples"] = preds[:3]
    return scores


@pytest.fixture
def one_thread():
    """Run a test with one intra-op thread (tiny models: the thread pool costs more than it gives)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
