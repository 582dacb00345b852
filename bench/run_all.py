"""Run every benchmark module in bench/ and write docs/benchmarks.md.

Each ``bench/bench_*.py`` defines ``run() -> str`` returning a Markdown section (a heading, the
setup, a table, ratios against a baseline measured in the same run). GPU benchmarks live in
``bench/gpu_*.py`` and are run on a GPU machine (``python bench/run_all.py --gpu``).

    python bench/run_all.py [--only NAME] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARK = "<!-- bench:{} -->"


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = mod
    spec.loader.exec_module(mod)
    return mod


def _replace_section(doc: str, name: str, body: str) -> str:
    start, end = MARK.format(name + ":start"), MARK.format(name + ":end")
    block = f"{start}\n{body.strip()}\n{end}"
    if start in doc and end in doc:
        a, b = doc.index(start), doc.index(end) + len(end)
        return doc[:a] + block + doc[b:]
    return doc.rstrip() + "\n\n" + block + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", action="append", default=[], help="run only these bench names (e.g. prepare)")
    ap.add_argument("--gpu", action="store_true", help="run the gpu_*.py benchmarks instead")
    ap.add_argument("--smoke", action="store_true", help="with --gpu: their CPU smoke mode (toy model, seconds)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    pattern = "gpu_*.py" if args.gpu else "bench_*.py"
    out = Path(args.out)
    doc = out.read_text() if out.exists() else "# Benchmarks\n"
    failed = 0
    for path in sorted(HERE.glob(pattern)):
        name = path.stem.split("_", 1)[1]
        if args.only and name not in args.only:
            continue
        print(f"== {path.name}", flush=True)
        t0 = time.perf_counter()
        try:
            mod = _load(path)
            need = getattr(mod, "REQUIRES", None)  # e.g. bench_vllm: run it in ./.venv-vllm
            if need and importlib.util.find_spec(need) is None:
                print(f"skipped: needs {need} (its section is left as it was)", flush=True)
                continue
            body = mod.run(smoke=True) if args.smoke else mod.run()
        except Exception:
            traceback.print_exc()
            failed += 1
            continue
        stamp = (f"\n_Measured {dt.date.today().isoformat()} on {platform.machine()} "
                 f"({platform.processor() or 'cpu'}), Python {platform.python_version()}, "
                 f"{time.perf_counter() - t0:.0f} s._\n")
        print(body)
        doc = _replace_section(doc, path.stem, body + stamp)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    print(f"wrote {out}; {failed} benchmark(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
