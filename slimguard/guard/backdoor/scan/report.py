"""The scan's report section: verdict, the inverted trigger per label and its held-out ASR, the true trigger."""

from __future__ import annotations

from ....report.html import esc


def scan_html(m: dict) -> str:
    """HTML for ``sections/20_scan.html`` from the scan's metrics."""
    cls = "bad" if m["verdict"] == "backdoored" else "ok"
    asr = "n/a" if m["asr"] is None else f"{m['asr']:.3f}"
    out = [f"<h2>Backdoor scan ({esc(m['method'])})</h2>",
           f"<p>Verdict: <b class='{cls}'>{esc(m['verdict'])}</b> &mdash; anomaly score {m['score']:.3f} "
           f"(threshold {m['threshold']:.3f}, {esc(m['statistic'])}); suspected target "
           f"<b>{esc(m['suspected_target_name'])}</b>; held-out ASR of its trigger "
           f"{asr} (n={m['n_holdout']}).</p>"]
    true = m.get("true_trigger")
    if true:
        rec = m.get("recovery") or {}
        out.append(f"<p>True trigger (from the attack run): <code>{esc(' | '.join(true['pieces']))}</code> "
                   f"({esc(true['attack'])}, target id {esc(true.get('target'))}); "
                   f"{'recovered: ' + esc(', '.join(rec.get('recovered_tokens', []))) if rec.get('recovered') else 'not among the top inverted tokens'}.</p>")
    rows = ["<table><tr><th>target label</th><th>score</th><th>best position</th><th>loss</th>"
            "<th>flip (inversion)</th><th>held-out ASR</th><th>top tokens</th><th>inverted trigger</th></tr>"]
    for lab in m["labels"]:
        b = lab["best"]
        asr = "n/a" if lab["holdout_asr"] is None else f"{lab['holdout_asr']:.3f} (n={lab['holdout_n']})"
        rows.append(f"<tr><td>{esc(lab['name'])}</td><td>{lab['score']:.3f}</td><td>{esc(b['position'])}</td>"
                    f"<td>{b['loss']:.4g}</td><td>{b['flip_rate']:.2f}</td><td>{asr}</td>"
                    f"<td><code>{esc(' '.join(lab['top_tokens']))}</code></td><td><code>{esc(b['text'])}</code></td></tr>")
    out.append("\n".join(rows) + "</table>")
    opts = ["<details><summary>every option</summary><table><tr><th>target</th><th>position</th><th>loss</th>"
            "<th>flip</th><th>rollbacks</th><th>seconds</th><th>trigger</th></tr>"]
    for lab in m["labels"]:
        for o in lab["options"]:
            opts.append(f"<tr><td>{esc(lab['name'])}</td><td>{esc(o['position'])}</td><td>{o['loss']:.4g}</td>"
                        f"<td>{o['flip_rate']:.2f}</td><td>{o['rollbacks']}</td><td>{o['seconds']:.1f}</td>"
                        f"<td><code>{esc(o['text'])}</code></td></tr>")
    out.append("\n".join(opts) + "</table></details>")
    return "\n".join(out)
