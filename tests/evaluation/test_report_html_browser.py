"""The HTML report in a real browser: headless Chromium (Debian package) driven by Playwright for Python.

Skips, saying why, when Chromium or Playwright is missing (.ci/run installs both). The browser is the
system one (``executable_path``); Playwright downloads nothing.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.builders.predictions import SCRIPT, make_eval


def _chromium() -> str:
    env = os.environ.get("MLLM_CXR_CHROMIUM")
    if env:
        if not Path(env).is_file():
            pytest.fail(f"MLLM_CXR_CHROMIUM={env} is not a file")
        return env
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on PATH (Debian: `apt-get install -y chromium`; .ci/run installs it) "
                "and MLLM_CXR_CHROMIUM is not set")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                                                 "(pip install -e '.[dev]')")
    exe = _chromium()
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def expected_count(pred_file: Path, finding: str, kind: str) -> int:
    """Studies whose generated report misses (fn) or invents (fp) ``finding``, from the labeler directly."""
    from reward.chexpert import label_report
    from reward.constants import CHEXPERT_LABELS
    from reward.f1 import to_binary

    j = CHEXPERT_LABELS.index(finding)
    n = 0
    for line in open(pred_file):
        r = json.loads(line)
        h = to_binary([label_report(r["prediction"])])[0, j]
        g = to_binary([label_report(r["reference"])])[0, j]
        n += bool(h and not g) if kind == "fp" else bool(g and not h)
    return n


def wait_until(page, expr: str, timeout_s: float = 10.0) -> None:
    """Poll a JS expression with page.evaluate (the page's CSP forbids eval, which wait_for_function uses)."""
    import time

    t0 = time.monotonic()
    while not page.evaluate(expr):
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"timed out waiting for {expr}")
        page.wait_for_timeout(50)


def test_report_in_chromium(browser, tmp_path, phantom_dir):
    from data_prep.schema import read_records

    long_id = read_records(phantom_dir / "studies.jsonl")[3].study_id  # its own impression + a long tail
    ev = make_eval(tmp_path, phantom_dir, compare=True, long_id=long_id)
    from evaluation.report.build import build_report

    s = build_report(ev)
    n = s["studies"]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("request", lambda r: problems.append(f"request: {r.url}") if not r.url.startswith(("file:", "data:"))
            else None)
    page.goto((ev / "report.html").resolve().as_uri())
    wait_until(page, "window.__report !== undefined")
    visible = lambda: page.evaluate("window.__report.visible()")  # noqa: E731
    first = lambda: page.evaluate(  # noqa: E731
        "document.querySelector('#studies tbody tr.study:not([hidden])').dataset.id")
    assert visible() == min(n, 50)
    assert page.text_content("#count") == f"{n} of {n} studies match"

    # filter: a finding + an error kind, for system A and then B
    for finding, kind in (("Pneumothorax", "fn"), ("Cardiomegaly", "fp")):
        page.select_option("#f-finding", finding)
        page.select_option("#f-kind", kind)
        want = expected_count(tmp_path / "sys_a.jsonl", finding, kind)
        assert 0 < want < n, (finding, kind, want)
        assert visible() == want, (finding, kind)
        page.select_option("#f-system", "b")
        assert visible() == expected_count(tmp_path / "sys_b.jsonl", finding, kind), (finding, kind, "B")
        page.select_option("#f-system", "a")
    page.select_option("#f-finding", "")
    page.select_option("#f-kind", "")
    assert visible() == min(n, 50)
    # text search: the prediction with <script> in it is found as text, and nothing ran
    page.fill("#f-text", "alert(")
    wait_until(page, "window.__report.visible() === 1")
    row = page.locator("#studies tbody tr.study:not([hidden])")
    assert SCRIPT in row.locator(".sysA .gen").inner_text()
    page.fill("#f-text", long_id)
    wait_until(page, "window.__report.visible() === 1 && document.querySelector("
                     f"'#studies tbody tr.study:not([hidden])').dataset.id === {json.dumps(long_id)}")
    page.fill("#f-text", "")
    wait_until(page, f"window.__report.visible() === {min(n, 50)}")

    # sorting: worst CheXpert F1 first by default; by generated length (longest first) the long report leads
    assert first() != long_id
    page.select_option("#s-key", "length-pred-words")
    assert page.input_value("#s-dir") == "desc" and first() == long_id
    page.select_option("#s-dir", "asc")
    assert first() != long_id

    # a click enlarges a thumbnail; a click closes it
    page.locator("#studies tbody tr.study:not([hidden]) img.thumb").first.click()
    assert page.locator("#overlay").is_visible()
    assert page.get_attribute("#overlay img", "src").startswith("data:image/jpeg;base64,")
    page.locator("#overlay").click()
    assert not page.locator("#overlay").is_visible()

    # the per-study toggle between the two systems
    row = page.locator("#studies tbody tr.study:not([hidden])").first
    assert row.locator(".sysA .gen").is_visible() and not row.locator(".sysB .gen").is_visible()
    row.locator("button.tog").click()
    assert row.locator(".sysB .gen").is_visible() and not row.locator(".sysA .gen").is_visible()
    assert row.locator("button.tog").inner_text().startswith("show A")

    # hover labels are title attributes naming the finding
    titles = page.eval_on_selector_all("#studies mark.hl-fp", "els => els.map(e => e.title)")
    assert titles and all("false positive: " in t for t in titles)
    titles = page.eval_on_selector_all("#studies mark.hl-fn", "els => els.map(e => e.title)")
    assert titles and all("false negative: " in t for t in titles)
    colours = page.evaluate("['hl-fp', 'hl-fn'].map(c => getComputedStyle(document.querySelector("
                            "'#studies mark.' + c)).backgroundColor)")
    assert colours[0] != colours[1] and "rgba(0, 0, 0, 0)" not in colours  # FP and FN coloured differently

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    page.close()
    assert problems == []


def test_box_overlays_and_their_toggles_in_chromium(browser, tmp_path, phantom_dir):
    """The reference and predicted boxes lie over the thumbnail; each checkbox hides its kind; the row's A/B
    toggle swaps the predicted boxes with the text."""
    from evaluation.evaluate import run_eval
    from evaluation.report.build import build_report
    from tests.builders.predictions import shifted, task_file

    good = task_file(phantom_dir, tmp_path, "phrase_grounding", lambda ex: ex.target, "good", n=6)
    bad = task_file(phantom_dir, tmp_path, "phrase_grounding", shifted, "bad", n=6)
    ev = tmp_path / "eval"
    run_eval(bad, ev, metrics=["boxes"], compare=good, n_boot=20, plots=False, progress=False)
    build_report(ev)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto((ev / "report.html").resolve().as_uri())
    wait_until(page, "window.__report !== undefined")
    row = page.locator("#studies tbody tr.study:not([hidden])").first
    img = row.locator("img.thumb").first.bounding_box()
    ref = row.locator("rect.bx-ref").first
    pred_a, pred_b = row.locator("rect.bx-pred.sysA").first, row.locator("rect.bx-pred.sysB").first
    assert ref.is_visible() and pred_a.is_visible() and not pred_b.is_visible()
    box = ref.bounding_box()  # drawn inside the thumbnail, not beside it
    assert img["x"] - 2 <= box["x"] and box["x"] + box["width"] <= img["x"] + img["width"] + 2
    assert img["y"] - 2 <= box["y"] and box["y"] + box["height"] <= img["y"] + img["height"] + 2
    page.uncheck("#bx-ref")
    assert not ref.is_visible() and pred_a.is_visible()
    page.uncheck("#bx-pred")
    assert not pred_a.is_visible()
    page.check("#bx-ref")
    page.check("#bx-pred")
    assert ref.is_visible() and pred_a.is_visible()
    row.locator("button.tog").click()
    assert pred_b.is_visible() and not pred_a.is_visible() and ref.is_visible()
    assert problems == []
