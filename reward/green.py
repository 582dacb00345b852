"""GREEN (Ostmeier et al., 2024): an LLM judge counts the errors of a candidate report.

The judge reads a fixed prompt (the reference report, the candidate report and the answer format)
and answers with an explanation and three sections::

    [Clinically Significant Errors]:
    (a) False report of a finding in the candidate: 1. <error>
    ...
    (f) Omitting a comparison detailing a change from a prior study: 0.

    [Clinically Insignificant Errors]:
    (a) ...

    [Matched Findings]:
    2. <finding>; <finding>

    GREEN = matched / (matched + sum of the six clinically significant error counts)

This module holds the pieces of the reference implementation (Stanford-AIMI/GREEN,
``green_score/green.py``; the same code ships in RadEval) that decide the number:

* :func:`make_green_prompt`: the prompt text, verbatim, because the GREEN models
  (``StanfordAIMI/GREEN-radllama2-7b``, ``GREEN-Phi2``...) were fine-tuned on it;
* :func:`render_green_chat`: the chat wrapping those models were run with;
* :func:`parse_green`: the parser (section regexes, sub-category lines, counts after ": " and
  before ".", "No..." sections count zero, GPT-4 style "(1)..(6)" fallback);
* :func:`green_value`: the score rule (0 when nothing matched, checked first; ``None`` when a
  needed section is missing).

and two ways to run the judge: any local causal LM through ``transformers`` generate
(:class:`HFGreenJudge`) or an OpenAI-compatible server such as ``vllm serve`` (:class:`OpenAIGreenJudge`).
The registered scorer ``green`` needs one of them configured (``model=`` and optionally
``base_url=``) and otherwise raises :class:`MissingBackendError`.

Per-sample scores are always finite: an answer that cannot be parsed (garbage from a small or
untrained judge) scores ``unparsed_score`` (0.0) and is marked ``parsed: False`` in the details and
counted in ``corpus["n_unparsed"]``; corpus mean/std are over the parsed samples, as upstream.
"""

from __future__ import annotations

import math
import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reward.base import MissingBackendError, RewardError, Scorer, ScoreResult
from reward.http import RETRY_STATUSES, retrying_session

CATEGORIES: tuple[str, str, str] = (
    "Clinically Significant Errors",
    "Clinically Insignificant Errors",
    "Matched Findings",
)

#: The six error sub-categories, in the order of the counts everywhere in this module.
SUBCATEGORIES: tuple[str, ...] = (
    "(a) False report of a finding in the candidate",
    "(b) Missing a finding present in the reference",
    "(c) Misidentification of a finding's anatomic location/position",
    "(d) Misassessment of the severity of a finding",
    "(e) Mentioning a comparison that isn't in the reference",
    "(f) Omitting a comparison detailing a change from a prior study",
)

DEFAULT_MODEL = "StanfordAIMI/GREEN-radllama2-7b"

# ----------------------------------------------------------------------------------------------------
# Prompt
# ----------------------------------------------------------------------------------------------------

# The GREEN models were trained on this exact text (including its 4-space indentation); keep it as is.
_PROMPT_HEAD = (
    "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a reference "
    "radiology report composed by expert radiologists.\n\n"
    "    Process Overview: You will be presented with:\n\n"
    "    1. The criteria for making a judgment.\n"
    "    2. The reference radiology report.\n"
    "    3. The candidate radiology report.\n"
    "    4. The desired format for your assessment.\n\n"
    "    1. Criteria for Judgment:\n\n"
    "    For each candidate report, determine:\n\n"
    "    The count of clinically significant errors.\n"
    "    The count of clinically insignificant errors.\n\n"
    "    Errors can fall into one of these categories:\n\n"
    "    a) False report of a finding in the candidate.\n"
    "    b) Missing a finding present in the reference.\n"
    "    c) Misidentification of a finding's anatomic location/position.\n"
    "    d) Misassessment of the severity of a finding.\n"
    "    e) Mentioning a comparison that isn't in the reference.\n"
    "    f) Omitting a comparison detailing a change from a prior study.\n"
    "    Note: Concentrate on the clinical findings rather than the report's writing style. "
    "Evaluate only the findings that appear in both reports.\n\n"
    "    2. Reference Report:\n    "
)
_PROMPT_MIDDLE = "\n\n    3. Candidate Report:\n    "
_ERROR_LINES = (
    "    (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n"
    "    ....\n"
    "    (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n"
)
_PROMPT_TAIL = (
    "\n\n    4. Reporting Your Assessment:\n\n"
    "    Follow this specific format for your output, even if no errors are found:\n"
    "    ```\n"
    "    [Explanation]:\n"
    "    <Explanation>\n\n"
    "    [Clinically Significant Errors]:\n" + _ERROR_LINES
    + "    [Clinically Insignificant Errors]:\n" + _ERROR_LINES
    + "    [Matched Findings]:\n"
    "    <The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>\n"
    "    ```\n"
)


def make_green_prompt(reference: str, candidate: str) -> str:
    """The GREEN judge prompt for one (reference, candidate) pair."""
    return _PROMPT_HEAD + reference + _PROMPT_MIDDLE + candidate + _PROMPT_TAIL


def render_green_chat(prompt: str, eos_token: str = "</s>") -> str:
    """The chat text the GREEN models are run with.

    Upstream renders ``[{"from": "human", "value": prompt}, {"from": "gpt", "value": ""}]`` with its
    own template and ``add_generation_prompt=True``, which gives exactly this string (an empty
    assistant turn, then the generation prompt).
    """
    return f"<|user|>\n{prompt}{eos_token}\n<|assistant|>\n{eos_token}\n<|assistant|>\n"


def truncate_words(text: str, max_words: int | None) -> str:
    """The first ``max_words`` words of ``text`` (joined by one space); unchanged when shorter."""
    if max_words is None:
        return text
    words = text.split()
    return text if len(words) <= max_words else " ".join(words[:max_words])


def clean_green_response(text: str) -> str:
    """A judge answer without chat debris: the text after the last ``<|assistant|>``, no ``</s>``/``<unk>``."""
    if "<|assistant|>" in text:
        text = text.rsplit("<|assistant|>", 1)[-1]
    return text.replace("</s>", "").replace("<unk>", "")


# ----------------------------------------------------------------------------------------------------
# Parser and score
# ----------------------------------------------------------------------------------------------------

_SECTION = {c: re.compile(r"\[" + re.escape(c) + r"\]:\s*(.*?)(?:\n\s*\n|\Z)", re.DOTALL) for c in CATEGORIES}
_LETTER_LINE = re.compile(r"\([a-f]\) .*")
_NUMBER_LINE = re.compile(r"\([1-6]\) .*")
_LETTER_PREFIXES = tuple(s.split(" ", 1)[0] + " " for s in SUBCATEGORIES)  # "(a) ".."(f) "
_NUMBER_PREFIXES = tuple(f"({i}) " for i in range(1, 7))
_COUNT = re.compile(r"(?<=: )\b\d+\b(?=\.)")
_MATCHED = re.compile(r"\d+\b(?=\.)")


@dataclass
class GreenAnalysis:
    """What the judge said about one pair.

    ``significant``/``insignificant``: error counts per sub-category (a)..(f); ``matched``: number of
    matched findings; ``found``: which of the three sections were present. Missing sections count
    zero, as upstream.
    """

    significant: list[int] = field(default_factory=lambda: [0] * 6)
    insignificant: list[int] = field(default_factory=lambda: [0] * 6)
    matched: int = 0
    found: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, False))

    @property
    def parsed(self) -> bool:
        """Both sections the score needs (significant errors, matched findings) were found."""
        return self.found[CATEGORIES[0]] and self.found[CATEGORIES[2]]

    @property
    def score(self) -> float | None:
        return green_value(self)

    def as_dict(self) -> dict[str, Any]:
        return {"significant": list(self.significant), "insignificant": list(self.insignificant),
                "matched": self.matched, "parsed": self.parsed, "score": self.score}


def _section_counts(section: str) -> list[int]:
    """Counts per sub-category from the lines of one error section (upstream rules)."""
    counts = [0] * 6
    lines = sorted(_LETTER_LINE.findall(section))
    prefixes = _LETTER_PREFIXES
    if not lines:  # the GPT-4 answer format numbers the sub-categories (1)..(6)
        lines = sorted(_NUMBER_LINE.findall(section))
        prefixes = _NUMBER_PREFIXES
    for pos, prefix in enumerate(prefixes):
        for line in lines:  # a later line of the same sub-category overrides an earlier one
            if line.startswith(prefix):
                found = _COUNT.findall(line)
                if found:
                    counts[pos] = int(found[0])
    return counts


def parse_green(text: str) -> GreenAnalysis:
    """Parse a GREEN answer. Never raises; absent or empty ("No ...") sections give zero counts."""
    out = GreenAnalysis()
    text = text if isinstance(text, str) else ""
    for category in CATEGORIES:
        m = _SECTION[category].search(text)
        if m is None:
            continue
        out.found[category] = True
        body = m.group(1)
        if body.startswith("No"):
            continue
        if category == CATEGORIES[2]:
            m2 = _MATCHED.match(body)
            out.matched = int(m2.group(0)) if m2 else 0
        elif category == CATEGORIES[0]:
            out.significant = _section_counts(body)
        else:
            out.insignificant = _section_counts(body)
    return out


def green_value(analysis: GreenAnalysis | str) -> float | None:
    """The GREEN score of one answer: 0 when nothing matched (checked first), ``None`` when the
    significant-error or matched-findings section is missing, else matched / (matched + significant)."""
    if isinstance(analysis, str):
        analysis = parse_green(analysis)
    if analysis.found[CATEGORIES[2]] and analysis.matched == 0:
        return 0.0
    if not analysis.parsed:
        return None
    return analysis.matched / (analysis.matched + sum(analysis.significant))


def green_summary(analyses: Sequence[GreenAnalysis]) -> dict[str, Any]:
    """Corpus numbers: mean and population std of the scores of parsed answers, unparsed count,
    per sub-category the share of answers without a significant error of that kind ("accuracy")
    and the mean count."""
    import numpy as np

    scored = [a.score for a in analyses if a.score is not None]
    parsed = [a for a in analyses if a.parsed]
    out: dict[str, Any] = {
        "mean": float(np.mean(scored)) if scored else 0.0,
        "std": float(np.std(scored)) if scored else 0.0,
        "n": len(analyses),
        "n_scored": len(scored),
        "n_unparsed": sum(not a.parsed for a in analyses),
    }
    if parsed:
        sig = np.array([a.significant for a in parsed])
        out["accuracy"] = {name: float(np.mean(sig[:, i] == 0)) for i, name in enumerate(SUBCATEGORIES)}
        out["mean_significant"] = {name: float(sig[:, i].mean()) for i, name in enumerate(SUBCATEGORIES)}
        out["mean_matched"] = float(np.mean([a.matched for a in parsed]))
    return out


# ----------------------------------------------------------------------------------------------------
# Judges
# ----------------------------------------------------------------------------------------------------


class HFGreenJudge:
    """A local causal LM (hub id or folder) answering GREEN prompts with greedy ``generate``.

    Args:
        model: the judge, e.g. ``StanfordAIMI/GREEN-radllama2-7b`` or a local folder.
        tokenizer: defaults to ``model``.
        prompt_format: ``"green"`` (the GREEN chat wrapping, for the GREEN models) or ``"chat"``
            (the tokenizer's own chat template, for a general instruction model as judge).
        max_length: prompt plus answer tokens (upstream: 2048); ``max_new_tokens`` overrides it.
        append_eos: add the EOS token after the rendered prompt, as upstream's ``add_eos_token=True``
            Llama tokenizer did (``"green"`` format only).
        dtype: ``None`` picks bfloat16 on a GPU and float32 on CPU.
    """

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        prompt_format: str = "green",
        max_length: int = 2048,
        max_new_tokens: int | None = None,
        append_eos: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if prompt_format not in ("green", "chat"):
            raise RewardError(f"GREEN judge: prompt_format must be 'green' or 'chat', got {prompt_format!r}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model, padding_side="left",
                                                       trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if prompt_format == "chat" and not getattr(self.tokenizer, "chat_template", None):
            raise RewardError(f"GREEN judge: the tokenizer of {tokenizer or model} has no chat template; "
                              "use prompt_format='green' (the GREEN models' own format)")
        self.model = AutoModelForCausalLM.from_pretrained(
            model, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        ).to(self.device).eval()
        self.batch_size = batch_size
        self.prompt_format = prompt_format
        self.max_length = max_length
        self.max_new_tokens = max_new_tokens
        self.append_eos = append_eos
        self.name = str(model)

    def _encode(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        if self.prompt_format == "chat":
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tok(render_green_chat(prompt, tok.eos_token or ""), add_special_tokens=True)["input_ids"]
            if self.append_eos and tok.eos_token_id is not None and (not ids or ids[-1] != tok.eos_token_id):
                ids = ids + [tok.eos_token_id]
        return ids[: self.max_length - 1]  # upstream truncates the prompt to max_length

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Greedy answers, one per prompt, cleaned of chat debris."""
        import torch
        from tqdm.auto import tqdm

        tok = self.tokenizer
        out: list[str] = []
        n_batches = (len(prompts) + self.batch_size - 1) // self.batch_size
        with torch.inference_mode():
            for b in tqdm(range(n_batches), desc="GREEN judge", unit="batch", disable=n_batches < 2, leave=False):
                chunk = prompts[b * self.batch_size:(b + 1) * self.batch_size]
                enc = tok.pad({"input_ids": [self._encode(p) for p in chunk]}, padding=True, return_tensors="pt")
                width = enc["input_ids"].shape[1]
                room = {"max_new_tokens": self.max_new_tokens} if self.max_new_tokens else \
                    {"max_new_tokens": max(1, self.max_length - width)}
                gen = self.model.generate(
                    input_ids=enc["input_ids"].to(self.device),
                    attention_mask=enc["attention_mask"].to(self.device),
                    do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **room,
                )
                texts = tok.batch_decode(gen[:, width:], skip_special_tokens=True)
                out.extend(clean_green_response(t) for t in texts)
        return out


class OpenAIGreenJudge:
    """A judge behind an OpenAI-compatible HTTP API (``vllm serve``, TGI, SGLang, a hosted model).

    Args:
        base_url: server root, with or without ``/v1`` (``http://127.0.0.1:8000``).
        model: the served model name.
        api: ``"chat"`` posts the prompt as one user message to ``/v1/chat/completions`` (the server's
            chat template applies: start vLLM with the GREEN template for the GREEN models, or use a
            general instruction model); ``"completions"`` posts :func:`render_green_chat` text to
            ``/v1/completions``, which needs no server-side template.
        max_tokens: answer length limit; ``temperature`` 0 = greedy, as GREEN is meant to be run.
        max_concurrency: requests in flight at once (the server batches them).
        retries: extra tries after a connection error, HTTP 429 or 5xx: at once, then after ``2 * backoff``
            seconds, ``4 * backoff``, ... (at most 30 s), or as long as the server's ``Retry-After`` says
            (:func:`reward.http.retrying_session`).
        api_key: sent as a bearer token; default the ``OPENAI_API_KEY`` environment variable, if set.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api: str = "chat",
        max_tokens: int = 1024,
        temperature: float = 0.0,
        timeout: float = 300.0,
        max_concurrency: int = 16,
        retries: int = 2,
        backoff: float = 1.0,
        api_key: str | None = None,
        eos_token: str = "</s>",
    ) -> None:
        if api not in ("chat", "completions"):
            raise RewardError(f"GREEN judge: api must be 'chat' or 'completions', got {api!r}")
        root = base_url.rstrip("/")
        self.url = (root if root.endswith("/v1") else root + "/v1") + (
            "/chat/completions" if api == "chat" else "/completions")
        self.model = model
        self.api = api
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.max_concurrency = max(1, max_concurrency)
        self.retries = retries
        self.backoff = backoff
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.eos_token = eos_token
        self.name = f"{model}@{root}"
        self.session = retrying_session(retries, backoff, pool_size=self.max_concurrency, api_key=self.api_key)

    def _payload(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "temperature": self.temperature}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = render_green_chat(prompt, self.eos_token)
        return body

    def _post(self, prompt: str) -> str:
        import requests

        try:
            r = self.session.post(self.url, json=self._payload(prompt), timeout=self.timeout)
        except requests.RequestException as e:
            raise RewardError(f"GREEN judge {self.url}: no answer after {self.retries + 1} tries "
                              f"({type(e).__name__}: {e})") from None
        if r.status_code in RETRY_STATUSES:
            raise RewardError(f"GREEN judge {self.url}: no answer after {self.retries + 1} tries (HTTP {r.status_code})")
        if r.status_code != 200:
            raise RewardError(f"GREEN judge {self.url}: HTTP {r.status_code}: {r.text[:300]}")
        try:
            choice = r.json()["choices"][0]
            text = choice["message"]["content"] if self.api == "chat" else choice["text"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RewardError(f"GREEN judge {self.url}: unexpected response ({type(e).__name__}: {e})") from e
        return clean_green_response(text or "")

    def generate(self, prompts: Sequence[str]) -> list[str]:
        """Answers in prompt order; requests run concurrently."""
        from concurrent.futures import ThreadPoolExecutor

        from tqdm.auto import tqdm

        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts))) as pool:
            return list(tqdm(pool.map(self._post, prompts), total=len(prompts), desc="GREEN judge",
                             unit="pair", disable=len(prompts) < 16, leave=False))


# ----------------------------------------------------------------------------------------------------
# Scorer
# ----------------------------------------------------------------------------------------------------


class GreenScorer(Scorer):
    """GREEN per sample, with a local HF judge (``model=``) or a server (``base_url=`` + ``model=``).

    Args:
        model: judge model (hub id or folder for the HF judge; served model name for a server).
            Default: the ``MLLM_CXR_GREEN_MODEL`` environment variable.
        base_url: OpenAI-compatible server; default ``MLLM_CXR_GREEN_URL``. Without it the judge
            runs in this process through ``transformers``.
        max_words: reports are cut to this many words before prompting (upstream's original
            ``GREEN`` class used 200); ``None`` keeps them whole.
        unparsed_score: the per-sample score of an answer that cannot be parsed.
        cache_size: answers of this many distinct (reference, candidate) pairs are kept.
        **judge_kwargs: passed to :class:`HFGreenJudge` or :class:`OpenAIGreenJudge`.

    The judge loads (or the server is first contacted) on the first call. Details per sample: the
    counts, ``parsed`` and the judge's ``analysis`` text.
    """

    name = "green"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        max_words: int | None = 200,
        unparsed_score: float = 0.0,
        cache_size: int = 4096,
        **judge_kwargs: Any,
    ) -> None:
        model = model or os.environ.get("MLLM_CXR_GREEN_MODEL") or None
        base_url = base_url or os.environ.get("MLLM_CXR_GREEN_URL") or None
        if model is None:
            raise MissingBackendError(
                "scorer 'green' needs a judge: model=<hub id or folder> for a local judge "
                f"(e.g. {DEFAULT_MODEL}, ~14 GB in fp16, GPU advised), or base_url=<OpenAI-compatible server> "
                "plus model=<served name> (e.g. `vllm serve StanfordAIMI/GREEN-radllama2-7b`); "
                "or set MLLM_CXR_GREEN_MODEL / MLLM_CXR_GREEN_URL"
            )
        if not math.isfinite(unparsed_score):
            raise RewardError(f"scorer 'green': unparsed_score must be finite, got {unparsed_score!r}")
        self.model = model
        self.base_url = base_url
        self.max_words = max_words
        self.unparsed_score = float(unparsed_score)
        self.cache_size = cache_size
        self.judge_kwargs = judge_kwargs
        self._judge: HFGreenJudge | OpenAIGreenJudge | None = None
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()

    @property
    def judge(self) -> HFGreenJudge | OpenAIGreenJudge:
        if self._judge is None:
            if self.base_url:
                self._judge = OpenAIGreenJudge(self.base_url, self.model, **self.judge_kwargs)
            else:
                self._judge = HFGreenJudge(self.model, **self.judge_kwargs)
        return self._judge

    def analyses(self, hyps: Sequence[str], refs: Sequence[str]) -> list[str]:
        """The judge's answers for the pairs (distinct pairs asked once; cached between calls)."""
        pairs = [(truncate_words(r, self.max_words), truncate_words(h, self.max_words)) for h, r in zip(hyps, refs)]
        todo = [p for p in dict.fromkeys(pairs) if p not in self._cache]
        fresh = dict(zip(todo, self.judge.generate([make_green_prompt(r, h) for r, h in todo]))) if todo else {}
        for p, text in fresh.items():
            if self.cache_size > 0:
                self._cache[p] = text
        while len(self._cache) > max(self.cache_size, 0):
            self._cache.popitem(last=False)
        return [fresh[p] if p in fresh else self._cache[p] for p in pairs]

    def score(self, hyps: Sequence[str], refs: Sequence[str] | None = None, **context: Sequence[Any]) -> ScoreResult:
        assert refs is not None
        texts = self.analyses(hyps, refs)
        parsed = [parse_green(t) for t in texts]
        scores, details = [], []
        for text, a in zip(texts, parsed):
            value = a.score
            scores.append(self.unparsed_score if value is None else value)
            details.append({**a.as_dict(), "analysis": text})
        corpus = green_summary(parsed)
        corpus["judge"] = self._judge.name if self._judge is not None else self.model
        return ScoreResult(scores=scores, details=details, corpus=corpus)
