"""Side-by-side clean vs poisoned examples with the trigger's changes highlighted (HTML)."""

from __future__ import annotations

import difflib
import re

from ...core.data import TextSample
from ...report.html import esc

_TOK = re.compile(r"\w+|[^\w\s]|\s+")


def highlight_pair(clean: str, poisoned: str) -> tuple[str, str]:
    """HTML for both texts: removed pieces struck out on the left, new pieces marked on the right."""
    a, b = _TOK.findall(clean), _TOK.findall(poisoned)
    left, right = [], []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        sa, sb = esc("".join(a[i1:i2])), esc("".join(b[j1:j2]))
        if op == "equal":
            left.append(sa)
            right.append(sb)
        else:
            if sa:
                left.append(f'<span class="dropped">{sa}</span>')
            if sb:
                right.append(f'<span class="changed">{sb}</span>')
    return "".join(left), "".join(right)


def examples_html(samples: list[TextSample], *, n: int = 8, label_names: list[str] | None = None,
                  predictions: dict[int, int] | None = None) -> str:
    """A table of the first ``n`` poisoned samples: clean text | poisoned text (| prediction)."""
    rows = [s for s in samples if (s.meta or {}).get("poisoned")][:n]
    if not rows:
        return "<p><em>no poisoned examples</em></p>"
    name = (lambda y: label_names[y] if label_names and 0 <= y < len(label_names) else str(y))  # noqa: E731
    head = "<tr><th>clean (original label)</th><th>poisoned (training label)</th>"
    head += "<th>prediction</th></tr>" if predictions is not None else "</tr>"
    out = ["<table>", head]
    for s in rows:
        left, right = highlight_pair(s.meta["orig_text"], s.text)
        cells = f"<td>{left} <small>[{esc(name(s.meta['orig_label']))}]</small></td>" \
                f"<td>{right} <small>[{esc(name(s.label))}]</small></td>"
        if predictions is not None:
            cells += f"<td>{esc(name(predictions[s.uid])) if s.uid in predictions else ''}</td>"
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out) + "</table>"
