"""``python -m data_prep.phantom OUT_DIR --n 200 --seed 0``."""

from data_prep.phantom.cli import main

raise SystemExit(main())
