"""Training: the recipe runtime shared by the SFT/DPO/GRPO recipes (``recipe``), the DPO and GRPO/EditGRPO
trainers' datasets and reward wiring (``dpo``, ``grpo``, ``editgrpo``) and preference pairs (``pairs``)."""
