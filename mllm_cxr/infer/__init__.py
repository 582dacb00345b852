"""Inference: one loader for model + adapter + processor (``loader``), report generation with the HF, vLLM
and OpenAI backends (``generate``), vLLM-ready export (``export``), serving (``serve``) and the vLLM facts
they share (``vllm_support``, a leaf)."""
