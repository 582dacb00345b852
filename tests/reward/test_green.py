"""GREEN: prompt, parser and score against the upstream oracle; HF and OpenAI-server judges offline."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reward.base import MissingBackendError, RewardError, get_scorer
from reward.green import (
    CATEGORIES,
    SUBCATEGORIES,
    GreenScorer,
    OpenAIGreenJudge,
    clean_green_response,
    green_summary,
    green_value,
    make_green_prompt,
    parse_green,
    render_green_chat,
    truncate_words,
)
from tests.builders.scorers import save_tiny_green_judge


@pytest.fixture
def oracle(shared_data):
    return json.loads((shared_data / "metric_oracles" / "green_score.json").read_text())


def _all_oracle_answers(oracle):
    """(answer text, six significant counts, matched, score) from every oracle case."""
    out = []
    for case in oracle["cases"]:
        for item in case.get("items", []):
            p = item["helper_parsed"]
            out.append((item["green_analysis"], p["sig"], p["matched"], p["green"], p["insig"]))
        for row in case.get("rows", []):
            sig = [int(row[s]) for s in SUBCATEGORIES]  # the CSV columns written by upstream's parser
            out.append((row["evaluation"], sig, int(row["Matched Findings"]), float(row["green"]), None))
    return out


def test_oracle_counts_and_scores_are_reproduced(oracle):
    answers = _all_oracle_answers(oracle)
    assert len(answers) == 21
    for text, sig, matched, score, insig in answers:
        a = parse_green(text)
        assert a.significant == sig and a.matched == matched
        if insig is not None:
            assert a.insignificant == insig
        assert a.parsed
        assert green_value(text) == pytest.approx(score, abs=1e-12)


def test_oracle_corpus_mean_and_population_std(oracle):
    case = oracle["cases"][0]
    analyses = [parse_green(item["green_analysis"]) for item in case["items"]]
    summary = green_summary(analyses)
    assert [a.score for a in analyses] == pytest.approx(case["helper_check"]["per_pair"])
    assert summary["mean"] == pytest.approx(case["expected_upstream"]["mean"], abs=1e-12)
    assert summary["std"] == pytest.approx(case["expected_upstream"]["std"], abs=1e-12)
    assert summary["n_unparsed"] == 0
    # (a) false findings in 4 of the 5 answers (counts 2, 2, 0, 1, 1) -> 20 % have none
    assert summary["accuracy"][SUBCATEGORIES[0]] == pytest.approx(0.2)
    assert summary["mean_significant"][SUBCATEGORIES[0]] == pytest.approx(6 / 5)


def _answer(sig="0.", insig="0.", matched="1. A finding."):
    lines = ["\nSome explanation.", "", "[Clinically Significant Errors]:"]
    lines += [f"{s}: {sig}" for s in SUBCATEGORIES]
    lines += ["", "[Clinically Insignificant Errors]:"] + [f"{s}: {insig}" for s in SUBCATEGORIES]
    lines += ["", "[Matched Findings]:", matched]
    return "\n".join(lines)


def test_parser_rules():
    # counts need ": <n>." ; a count without the period is not read
    a = parse_green(_answer(sig="2. x; y", matched="3. a; b; c"))
    assert a.significant == [2] * 6 and a.matched == 3 and a.score == pytest.approx(3 / 15)
    assert parse_green(_answer(sig="2 errors", matched="3. a")).significant == [0] * 6
    # nothing matched -> 0, whatever the errors
    assert green_value(_answer(sig="0.", matched="0.")) == 0.0
    assert green_value(_answer(matched="No matched findings.")) == 0.0
    # a "No ..." section counts zero errors
    text = "[Clinically Significant Errors]:\nNo clinically significant errors were found.\n\n[Matched Findings]:\n4. a"
    assert parse_green(text).significant == [0] * 6 and green_value(text) == 1.0
    # GPT-4 style numbered sub-categories
    numbered = "[Clinically Significant Errors]:\n(1) False: 1.\n(4) Severity: 2. x\n\n[Matched Findings]:\n1. a"
    assert parse_green(numbered).significant == [1, 0, 0, 2, 0, 0]
    # sub-categories in any order; the last line of a repeated sub-category wins (sorted, as upstream)
    shuffled = "[Clinically Significant Errors]:\n(c) loc: 1.\n(a) false: 2.\n(a) false: 3.\n\n[Matched Findings]:\n2."
    assert parse_green(shuffled).significant == [3, 0, 1, 0, 0, 0]


def test_unparseable_answers_are_finite_and_flagged():
    for junk in ["", "garbage ]] [[ 12.", "[Matched Findings]: 3.", "\u00e9" * 100, "<s></s><unk>" * 5]:
        a = parse_green(junk)
        assert not a.parsed
        assert a.score is None or a.score == 0.0
    missing_sig = "[Matched Findings]:\n2. a; b"  # upstream's default would say 1.0
    assert green_value(missing_sig) is None
    assert set(parse_green(_answer()).found) == set(CATEGORIES)


def test_prompt_and_chat_wrapping():
    p = make_green_prompt("REF ONE.", "CAND TWO.")
    assert p.startswith("Objective: Evaluate the accuracy of a candidate radiology report")
    assert "2. Reference Report:\n    REF ONE.\n\n    3. Candidate Report:\n    CAND TWO.\n\n" in p
    for c in CATEGORIES:
        assert f"[{c}]:" in p
    assert p.endswith("<Finding n>\n    ```\n")
    chat = render_green_chat(p, "</s>")
    assert chat.startswith("<|user|>\n" + p + "</s>") and chat.endswith("<|assistant|>\n")
    assert clean_green_response(chat + "[Matched Findings]:\n1. x</s>") == "\n[Matched Findings]:\n1. x"
    assert truncate_words("a  b   c", 5) == "a  b   c" and truncate_words("a b c d", 2) == "a b"


def test_scorer_needs_a_judge(monkeypatch):
    monkeypatch.delenv("MLLM_CXR_GREEN_MODEL", raising=False)
    monkeypatch.delenv("MLLM_CXR_GREEN_URL", raising=False)
    with pytest.raises(MissingBackendError, match="needs a judge"):
        get_scorer("green")


# ----------------------------------------------------------------------------------------------------
# OpenAI-compatible server
# ----------------------------------------------------------------------------------------------------

def _candidate_of(prompt: str) -> str:
    return prompt.split("3. Candidate Report:\n    ", 1)[1].split("\n\n    4. Reporting", 1)[0]


class _Server:
    """A local stand-in for `vllm serve`: answers from a dict keyed by the candidate report."""

    def __init__(self, answers, fail_first=0):
        self.answers, self.fail_left, self.requests = answers, fail_first, []
        self.fail_status, self.retry_after = 503, None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                if outer.fail_left > 0:
                    outer.fail_left -= 1
                    self.send_response(outer.fail_status)
                    if outer.retry_after is not None:
                        self.send_header("Retry-After", str(outer.retry_after))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if body.get("model") != "green-judge":
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(b'{"error": "model not found"}')
                    return
                if self.path == "/v1/chat/completions":
                    prompt = body["messages"][0]["content"]
                    choice = {"message": {"role": "assistant", "content": outer.answers[_candidate_of(prompt)]}}
                else:
                    prompt = body["prompt"]
                    choice = {"text": outer.answers[_candidate_of(prompt)]}
                data = json.dumps({"choices": [choice]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def oracle_server(oracle):
    items = oracle["cases"][0]["items"]
    server = _Server({item["hyp"]: item["green_analysis"] for item in items})
    yield server, items
    server.close()


def test_server_judge_reproduces_the_upstream_scores(oracle_server, oracle):
    server, items = oracle_server
    scorer = GreenScorer(model="green-judge", base_url=server.url, max_words=None, max_concurrency=3)
    hyps, refs = [i["hyp"] for i in items], [i["ref"] for i in items]
    res = scorer(hyps * 2, refs * 2)  # repeated pairs are asked once
    assert len(server.requests) == 5
    case = oracle["cases"][0]
    assert res.scores == pytest.approx(case["helper_check"]["per_pair"] * 2)
    assert res.corpus["mean"] == pytest.approx(case["expected_upstream"]["mean"])
    assert res.corpus["std"] == pytest.approx(case["expected_upstream"]["std"])
    assert res.corpus["n_unparsed"] == 0 and res.details[1]["matched"] == 1
    assert {path for path, _ in server.requests} == {"/v1/chat/completions"}
    assert all(body["temperature"] == 0.0 for _, body in server.requests)
    sent = sorted(body["messages"][0]["content"] for _, body in server.requests)  # concurrent: any order
    assert sent == sorted(make_green_prompt(r, h) for r, h in zip(refs, hyps))
    scorer(hyps[:2], refs[:2])  # cached
    assert len(server.requests) == 5


def test_server_completions_api_and_retries(oracle_server):
    server, items = oracle_server
    server.fail_left = 1
    judge = OpenAIGreenJudge(server.url + "/v1/", "green-judge", api="completions", retries=2, backoff=0.01)
    judge_answer = judge.generate([make_green_prompt(items[3]["ref"], items[3]["hyp"])])
    assert green_value(judge_answer[0]) == 0.5
    path, body = server.requests[-1]
    assert path == "/v1/completions" and body["prompt"].startswith("<|user|>\nObjective:")
    assert len(server.requests) == 2  # one 503, then the answer


def test_server_retry_after_is_honoured(oracle_server):
    """A 429 with Retry-After: 1 is retried after 1 s (urllib3's Retry), not after the 0.01 s backoff."""
    import time

    server, items = oracle_server
    server.fail_left, server.fail_status, server.retry_after = 1, 429, 1
    judge = OpenAIGreenJudge(server.url, "green-judge", retries=2, backoff=0.01)
    t0 = time.perf_counter()
    answer = judge.generate([make_green_prompt(items[3]["ref"], items[3]["hyp"])])
    assert time.perf_counter() - t0 >= 0.95
    assert green_value(answer[0]) == 0.5 and len(server.requests) == 2


def test_server_errors_are_reward_errors(oracle_server):
    server, items = oracle_server
    with pytest.raises(RewardError, match="HTTP 404"):
        OpenAIGreenJudge(server.url, "other-model").generate(["x"])
    server.fail_left = 10
    with pytest.raises(RewardError, match=r"no answer after 2 tries \(HTTP 503\)"):
        OpenAIGreenJudge(server.url, "green-judge", retries=1, backoff=0.01).generate(["x"])


# ----------------------------------------------------------------------------------------------------
# Local HF judge: a tiny random Llama answers garbage (tests.builders.scorers.save_tiny_green_judge)
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    pytest.importorskip("torch")
    return save_tiny_green_judge(tmp_path_factory.mktemp("tiny-llama"))


@pytest.mark.parametrize("prompt_format", ["green", "chat"])
def test_hf_judge_with_a_tiny_random_llama(tiny_llama, prompt_format):
    scorer = GreenScorer(model=str(tiny_llama), device="cpu", max_new_tokens=12, batch_size=2,
                         prompt_format=prompt_format)
    hyps = ["small effusion", "", "no effusion " * 300]
    refs = ["no effusion", "no effusion", "small effusion"]
    res = scorer(hyps, refs)
    assert res.scores == [0.0, 0.0, 0.0]  # finite, no crash on empty or very long input
    assert res.corpus["n_unparsed"] == 3 and res.corpus["n_scored"] == 0
    assert all(d["parsed"] is False and isinstance(d["analysis"], str) for d in res.details)
    assert res.corpus["judge"] == str(tiny_llama)
    ids = scorer.judge._encode(make_green_prompt("no effusion", "small effusion"))
    if prompt_format == "green":
        assert ids[-1] == scorer.judge.tokenizer.eos_token_id  # upstream's add_eos_token
    assert len(ids) < scorer.judge.max_length
