"""Model-level backdoor scanning by trigger inversion: ``slimguard backdoor scan``.

DBS (Shen et al., ICML 2022) and a greedy random-token baseline, registered in
:data:`~.base.SCANNERS`; one verb, :func:`~.scan.scan_model`, answers "is this classifier
backdoored?" from the model and a few clean samples::

    from slimguard.core.commands import execute
    from slimguard.guard.backdoor.scan import ScanConfig
    out = execute("backdoor scan", ScanConfig(), model="runs/attack-badnets", overwrite=True)
    print(out.metrics["verdict"], out.metrics["top_tokens"])

Importing this package is light (pydantic only); torch loads when a scan runs.
"""

from .base import SCANNERS, Inversion, LabelScan, MethodConfig, ScanPolicy, ScanResult, Scanner
from .config import ScanConfig

__all__ = ["SCANNERS", "Inversion", "LabelScan", "MethodConfig", "ScanConfig", "ScanPolicy", "ScanResult", "Scanner"]
