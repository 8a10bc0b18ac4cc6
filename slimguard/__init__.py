"""slimguard: slim a language model for edge hardware, and guard it against poisoning.

Importing the package is deliberately light: torch, transformers and friends are only
imported by the modules that need them.
"""

__version__ = "0.1.0"
