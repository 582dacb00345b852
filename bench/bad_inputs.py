"""The bad-input table's totals: clear / traceback / silent, for the tree on PYTHONPATH.

    PYTHONPATH=$PWD python bench/bad_inputs.py [--json out.json]

Runs every row of the bad-input table (``tests/builders/bad_inputs.py``, which ``tests/e2e/test_bad_inputs.py``
runs too) in-process and classifies it:

- ``clear``: the expected exit code (2, or 0 for a counted skip), one error line with the row's key words,
  inputs unchanged and the row's extra check passing;
- ``traceback``: an exception escaped the command's handler (a raw Python traceback for the user);
- ``silent``: exit code 0 where an error was due, an input file changed, or the extra check failed
  (something lost or skipped without a word); ``unclear``: exit code 2 but the line lacks the key words.

Run against an older checkout (this file and ``tests/builders`` copied in) to get the "before" numbers.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import traceback
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _run(runner: str, argv: list[str]):
    """(rc, stdout, stderr, escaped exception or None), whatever the tree's run_recipe signature."""
    import inspect

    from tests.builders.bad_inputs import load_recipe

    out, err = io.StringIO(), io.StringIO()
    escaped = None
    rc = None
    with redirect_stdout(out), redirect_stderr(err):
        try:
            if runner == "cli":
                from mllm_cxr.cli import main

                rc = main(argv)
            elif runner == "data_prep":
                from data_prep.cli import main

                rc = main(argv)
            else:
                from mllm_cxr.train.recipe import run_recipe

                mod = load_recipe(runner)
                try:
                    if "argv" in inspect.signature(run_recipe).parameters:
                        run_recipe(mod.main, argv)
                    else:
                        old, sys.argv = sys.argv, [f"{runner}.py", *argv]
                        try:
                            run_recipe(mod.main)
                        finally:
                            sys.argv = old
                    rc = 0
                except SystemExit as e:
                    rc = int(e.code or 0) if not isinstance(e.code, str) else 1
        except SystemExit as e:
            rc = int(e.code or 0) if not isinstance(e.code, str) else 1
        except BaseException as e:  # noqa: BLE001 - what the user would have seen as a traceback
            escaped = e
            traceback.print_exc()
    return rc, out.getvalue(), err.getvalue(), escaped


def classify(case, env) -> tuple[str, str]:
    from tests.builders.bad_inputs import digest

    runner, argv, inputs = case.build(env)
    before = digest(inputs)
    try:
        rc, out, err, escaped = _run(runner, argv)
    finally:
        if getattr(env, "hold", None) is not None:
            env.hold.close()
    changed = digest(inputs) != before
    if escaped is not None or "Traceback" in out + err:
        return "traceback", f"{type(escaped).__name__ if escaped else 'Traceback'}: {str(escaped)[:120]}"
    if changed:
        return "silent", "an input file changed"
    if case.rc == 0 or rc != case.rc:
        if rc != case.rc:
            return "silent", f"exit code {rc}, expected {case.rc}"
        text = out
    else:
        lines = [x for x in err.splitlines() if "error" in x.lower() or "terminated (sigterm)" in x.lower()]
        text = lines[-1] if lines else ""
    if case.after is not None:
        try:
            case.after(env)
        except BaseException as e:  # noqa: BLE001
            return "silent", f"check failed: {e}"[:160]
    missing = [w for w in case.words if w.lower() not in text.lower()]
    if missing and case.rc != 0:
        return "unclear", f"line lacks {missing}: {text[:160]}"
    if missing:
        return "silent", f"output lacks {missing}"
    return "clear", ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None, help="write every row's class and detail here")
    ap.add_argument("-k", default=None, help="only rows whose id contains this")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    from data_prep.phantom import make_phantom
    from mllm_cxr.tiny import build_tiny_model
    from tests.builders.bad_inputs import CASES, Env

    work = Path(tempfile.mkdtemp(prefix="bad-inputs-"))
    phantom, tiny = work / "phantom", work / "tiny"
    make_phantom(phantom, n=48, seed=0)
    build_tiny_model(tiny)
    rows, totals = [], {}
    for i, case in enumerate(c for c in CASES if not args.k or args.k in c.id):
        tmp = work / f"case{i:03d}"
        tmp.mkdir()
        kind, detail = classify(case, Env(tmp, phantom, tiny))
        totals[kind] = totals.get(kind, 0) + 1
        rows.append({"id": case.id, "class": kind, "detail": detail})
        print(f"{kind:9s} {case.id}" + (f"  ({detail})" if detail else ""), file=sys.__stdout__, flush=True)
    print(f"\n{len(rows)} rows: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())), file=sys.__stdout__)
    if args.json:
        Path(args.json).write_text(json.dumps({"totals": totals, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
