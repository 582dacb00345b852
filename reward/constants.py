"""Label names shared by the scorers (and by data_prep's study record)."""

from __future__ import annotations

#: The 14 CheXpert observations, in the CheXpert labeler's column order.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

#: The five competition observations used for "F1-5" scores.
CHEXPERT_5: tuple[str, ...] = (
    "Cardiomegaly",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pleural Effusion",
)

#: Label values: positive, negative, uncertain; ``None`` = not mentioned.
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
