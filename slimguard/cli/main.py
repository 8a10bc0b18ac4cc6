"""The ``slimguard`` command: a thin typer shell over the library.

Each capability group lives in its own module under ``slimguard.cli`` and is mounted
here. Errors raised as :class:`SlimguardError` print as one line and exit with 2.
"""

from __future__ import annotations

import sys

import typer

from ..core.errors import SlimguardError
from .options import optional_module

app = typer.Typer(
    name="slimguard",
    help="Slim a language model for edge hardware, and guard it against poisoning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, group name, help). Groups import their heavy dependencies lazily inside commands.
GROUPS = [
    ("assets", "assets", "Real offline models and data: list, fetch, verify."),
    ("bench", "bench", "Benchmarks: write benchmarks/results/<capability>.json, then regenerate BENCHMARKS.md, "
               "the README headline and the guides' canonical numbers."),
    ("compress", "compress", "Prompt compression by token classification (LLMLingua-2)."),
    ("longctx", "longctx", "Long-context inference with token-level KV selection (TokenSelect)."),
    ("quant", "quant", "Quantization-aware training and export (EdgeQAT)."),
    ("backdoor", "backdoor", "Textual backdoor attacks and defences (PuncAttack, BadNets, AddSent; ONION, ...)."),
    ("promptattack", "promptattack", "Malicious prompt templates against prompt-learning classifiers."),
    ("diffusion", "diffusion", "Backdoor poisoning of diffusion models and trigger amplification (BiBadDiff)."),
]

for mod_name, group, help_text in GROUPS:
    if (mod := optional_module(f"slimguard.cli.{mod_name}")) is not None:
        app.add_typer(mod.app, name=group, help=help_text)

from . import common  # noqa: E402  (top-level commands: generate, report, demo)

common.register(app)


def main() -> None:
    import os

    from ..core.models import _quiet_third_party

    # transformers 5 draws a "Loading weights" bar for every model load; benchmarks load dozens
    # and our own bars already show progress. Users can turn them back on with the variable.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _quiet_third_party()
    try:
        app(standalone_mode=True)
    except SlimguardError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
