"""The input of long-context generation (``slimguard longctx generate``): a long context read from a
text file, then the question. Checked here, in the library, so every caller refuses the same bad
inputs with the same one-line messages before a model is loaded."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import DataError


def read_context(path: str | Path) -> str:
    """The long context in ``path`` (UTF-8 text); a missing, unreadable, non-UTF-8 or empty file raises a
    one-line :class:`DataError` naming it."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"context file {p} is a folder; pass a UTF-8 text file")
    if not p.is_file():
        raise DataError(f"context file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"context file {p} is not UTF-8 text; re-encode it as UTF-8") from None
    except OSError as e:
        raise DataError(f"cannot read context file {p} ({e.strerror or e})") from None
    return check_context(text, source=str(p))


def check_context(text: str, *, source: str = "the context") -> str:
    """``text`` unchanged, or a :class:`DataError` when it holds no text: an empty context leaves TokenSelect
    nothing to select from (and an empty input nothing to generate after)."""
    if not isinstance(text, str):
        raise DataError(f"{source} must be text, got {type(text).__name__}")
    if not text.strip():
        raise DataError(f"{source} is empty (no text, or only whitespace); give the long text to read")
    return text


def long_input(context: str, prompt: str = "") -> str:
    """What the model reads: the (non-empty) context, then the prompt after a blank line."""
    return check_context(context) + ("\n\n" + prompt if prompt else "")
