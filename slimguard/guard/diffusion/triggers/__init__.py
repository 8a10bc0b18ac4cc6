"""Image triggers for BiBadDiff data poisoning, one file each, registered in :data:`TRIGGERS`."""

# the trigger files register themselves on import: this order is TRIGGERS' order (CLI help)
from . import patch, blend  # noqa: F401, I001  isort: skip
from ..config import TRIGGERS

__all__ = ["TRIGGERS"]
