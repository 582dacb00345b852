"""mllm-cxr: chest X-ray report generation with vision-language models (see README.md)."""

import logging as _logging

#: bitsandbytes 0.50 on a CPU with AVX512-BF16 and the ``kernels`` package installed tries to fetch an optional
#: 4-bit CPU kernel from the Hub's kernels-community when it is imported, and logs a warning when it cannot
#: (offline, or the publisher is not on the trust list); it then uses its own kernel. Left alone, that warning
#: precedes every command's output, error lines included. Its errors still show.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
