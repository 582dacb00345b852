"""Training: the recipe runtime shared by the SFT/DPO/GRPO recipes (``recipe``), the DPO trainer's wiring
(``dpo``), GRPO's configs (``grpo_config``), trainer (``grpo``), collapse guard (``collapse``) and every
TRL/vLLM workaround (``upstream_fixes``), EditGRPO's text editor (``editor``, no torch/TRL) and trainer
(``editgrpo``), and preference pairs (``pairs``)."""
