"""The benches' pictures (``--plot FILE.png``): what the README shows, rendered from a bench's report.

``coverage``: passing schemas per JSONSchemaBench split, per engine (``bench coverage``);
``speed``: tokens/s per configuration, schemas and free text (``bench e2e``). ``fidelity`` and
``ead`` draw their own (``bench/fidelity.py``, ``bench/ead.py``), through ``figure`` here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CtrldecError

__all__ = ["figure", "coverage", "speed"]


def figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` (no pyplot, no display needed); a clear error without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CtrldecError("plotting needs matplotlib: pip install matplotlib (or ctrldec[test])") from None
    return Figure(figsize=(width, height), layout="constrained")


ENGINE_LABELS = {"ctrldec-strict": "ctrldec, strict (default)", "ctrldec": "ctrldec, lenient"}


def coverage(report: dict[str, Any], path: str) -> None:
    """Share of schemas passing (compiled, every valid instance accepted, every invalid one
    rejected) per split, one bar per engine, the splits down the side."""
    engines = report["engines"]
    splits = [*[s for s in next(iter(engines.values()))["splits"] if s != "all"], "all"]
    fig = figure(7.5, 0.08 * len(splits) * len(engines) + 1.4)
    ax = fig.subplots()
    y = np.arange(len(splits))
    height = 0.8 / len(engines)
    for j, (name, e) in enumerate(engines.items()):
        shares = [e["splits"][s]["passing"] / e["splits"][s]["schemas"] for s in splits]
        ax.barh(y + (j - (len(engines) - 1) / 2) * height, shares, height, label=ENGINE_LABELS.get(name, name))
    counts = [next(iter(engines.values()))["splits"][s]["schemas"] for s in splits]
    ax.set_yticks(y, [f"{s} ({n})" for s, n in zip(splits, counts)], fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="schemas passing", xlim=(0, 1), title=f"JSONSchemaBench, {report['schemas']} schemas: passing per split")
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.04), ncols=2, frameon=False)
    fig.savefig(path, dpi=110)


def speed(report: dict[str, Any], labels: dict[str, str], path: str) -> None:
    """Tokens/s per configuration of ``bench e2e``: under JSON Schemas, and on free text when run."""
    parts = [("under JSON Schemas", report["configs"])] + ([("free text", report["free_text"])] if report.get("free_text") else [])
    fig = figure(5.5 * len(parts), 0.32 * max(len(p) for _, p in parts) + 1.4)
    for ax, (title, rows) in zip(np.atleast_1d(fig.subplots(1, len(parts))), parts):
        names = list(rows)
        ax.barh([labels.get(n, n) for n in names], [rows[n]["tokens_per_s"] for n in names],
                color=["C1" if n.startswith(("d", "x", "s", "w", "m")) else "C0" for n in names])
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set(xlabel="output tokens/s (greedy, CPU)", title=title)
    fig.suptitle(f"{report['pairs']} schemas / prompts, max_new_tokens {report['max_new_tokens']} "
                 "(blue: model.generate, orange: ctrldec's loop)", fontsize=9)
    fig.savefig(path, dpi=110)
