"""``python -m mllm_cxr.cli``: the same as the ``mllm-cxr`` command."""

from mllm_cxr.cli import main

raise SystemExit(main())
