"""Inference: one loader for model + adapter + processor (``loader``), report generation with the HF, vLLM
and OpenAI backends (``generate``), vLLM-ready export (``export``) and serving (``serve``). What vLLM accepts
lives in :mod:`mllm_cxr.vllm_support`, shared with GRPO's vLLM rollouts."""
