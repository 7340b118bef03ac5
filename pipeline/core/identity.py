"""How a recorded base-model identity names its weights (no torch: ``store info`` stays light).

A base model's identity (:func:`pipeline.models.base.base_identity`) is written into stores and
checkpoints; its ``init`` says how the weights were set. :func:`weights_label` is the one wording of
it, used by ``store info``, evaluation reports and checkpoint readers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BUILT_IN = "built in"
"""``init`` of a model that sets its own weights (the demo model); also how identities written before
``init`` was recorded name a base model without a weights file."""
WEIGHTS_FILE = "weights file"
"""``init`` of a base model loaded from a weights file (the identity's ``weights`` names it)."""


def weights_label(identity: Mapping[str, Any]) -> str:
    """How ``store info``, checkpoints' readers and reports name a base model's weights: the weights
    file, ``random (seed N)`` or ``built in``. Identities written before ``init`` was recorded name
    their weights file or ``built in``."""
    if identity.get("weights"):
        return str(identity["weights"])
    init = identity.get("init")
    return str(init) if init and init != WEIGHTS_FILE else BUILT_IN
