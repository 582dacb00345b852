"""Phantom chest radiographs whose visible features determine the findings in their reports.

The demo's data and the learning tests' data: a tiny random Qwen2.5-VL trained for a few minutes on
a CPU can learn image -> findings from it, because every finding is drawn big and with high contrast
(it survives a resize to 112x112 pixels) while the rest of the picture still looks like a chest:
body outline, dark lungs with texture, ribs, clavicles, bright spine and mediastinum, a heart
shadow, diaphragm domes, detector noise, and random jitter of position, size, depth of inspiration
and exposure. The studies of one patient share the patient's anatomy.

Findings (:data:`PHANTOM_FINDINGS`, CheXpert names) and how they look on the frontal view:

- ``Cardiomegaly``: the heart shadow is wide, cardiothoracic ratio 0.56-0.66 (normal 0.38-0.46).
- ``Pleural Effusion``: a bright meniscus filling the lower lateral corner of a lung (right, left
  or bilateral); the costophrenic angle and the diaphragm dome disappear under it.
- ``Consolidation``: a dense bright patch with soft edges in one lung zone (a lobe).
- ``Pneumothorax``: a dark band without lung texture at the apex and the lateral side of a lung,
  with a thin bright visceral pleural edge where the lung has fallen away from the chest wall.
- ``Support Devices``: thin saturated lines: endotracheal tube, central venous catheter (right
  internal jugular or left subclavian), enteric tube.

The optional lateral view agrees with the frontal one (bigger heart, effusion in the posterior
sulcus, consolidation at the zone's height, the same tubes). Each study is normal with probability
1/3; otherwise every finding is present independently with probability 0.42 (drawn again until at
least one is), so each finding's overall rate is about 0.30.

Reports are written from the truth with a few phrasings per finding and explicit negatives for the
absent ones, in words a negation-aware CheXpert rule labeler reads correctly (``labels`` holds what
such a labeler should find). Some patients also have an earlier study (its own images and report,
findings partly carried over); the later study links it as ``prior``, names it in ``comparison``
and describes changes ("new", "unchanged", "has resolved"). A share of the studies without any
prior gets one invented prior-exam sentence ("No interval change."), as real reports do; those are
marked ``meta["hallucinated_prior"]`` with the sentence in ``meta["hallucinated_sentence"]``.

``meta`` also holds ``findings`` (the truth, in :data:`PHANTOM_FINDINGS` order), ``views``,
``details`` (side, zone, size, devices of each finding and the drawn cardiothoracic ratio ``ctr``)
and, on a follow-up, ``changes`` (finding -> ``same``/``new``/``resolved``).
:func:`phantom_findings` reads the findings back from a report, :func:`finding_scores` scores
generated reports against the truth (the demo's finding-level F1).

Everything is deterministic by seed::

    python -m data_prep.phantom OUT_DIR --n 200 --seed 0
"""

from __future__ import annotations

from data_prep.phantom.cli import main, register
from data_prep.phantom.dataset import make_phantom
from data_prep.phantom.findings import PHANTOM_FINDINGS
from data_prep.phantom.render import DEVICE_TIP_LABELS
from data_prep.phantom.score import finding_scores, phantom_findings

__all__ = ["DEVICE_TIP_LABELS", "PHANTOM_FINDINGS", "finding_scores", "main", "make_phantom", "phantom_findings",
           "register"]
