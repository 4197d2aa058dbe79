"""The 14 ChestX-ray14 findings, spelled as in NIH's CSV and in the usual (CheXNet) order.

Every dataset uses these names in this order: NIH reads them, MedMNIST's columns follow them, and
the phantom draws them.
"""

from __future__ import annotations

CHESTXRAY14_LABELS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
