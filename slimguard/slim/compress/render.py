"""Show an LLMLingua-2 (Pan et al., 2024) compression: kept words highlighted, dropped words struck out."""

from __future__ import annotations

import numpy as np


def _segments(res):
    """(text, kind) pieces over all contexts: kind is 'kept', 'dropped' or 'gap'."""
    for text, spans, labels in zip(res.contexts, res.words, res.labels):
        pos = 0
        for (s, e), lab in zip(spans.tolist(), np.asarray(labels).tolist()):
            if s > pos:
                yield text[pos:s], "gap"
            yield text[s:e], "kept" if lab else "dropped"
            pos = e
        if pos < len(text):
            yield text[pos:], "gap"
        yield "\n\n", "gap"


def html_words(res) -> str:
    from ...report.html import esc

    parts = []
    for piece, kind in _segments(res):
        parts.append(esc(piece) if kind == "gap" else f'<span class="{kind}">{esc(piece)}</span>')
    return ('<p>Kept words are highlighted, dropped words struck out '
            f'({res.origin_tokens} -> {res.compressed_tokens} {res.rate_tokenizer} tokens, {res.ratio:.2f}x).</p>'
            '<pre style="white-space:pre-wrap">' + "".join(parts) + "</pre>")


def rich_words(res):
    from rich.text import Text

    t = Text()
    for piece, kind in _segments(res):
        t.append(piece, style={"kept": "bold green", "dropped": "dim strike", "gap": ""}[kind])
    return t
