"""The compatibility matrix of ``ctrldec.generate``: every sampler or search (rows) with every
constraint type, controller, drafter, EAD, batching and the Hugging Face form (columns).

Each cell is "yes" (``tests/test_pipeline_matrix.py`` runs it on a tiny model and checks the
output) or "no" with a short reason, where ``ctrldec`` raises a ``CtrldecError`` naming both
parts. The README's and docs/pipeline.md's tables are rendered from here (``render()``; the test
suite checks they are current)::

    python tests/pipeline_matrix.py            # print the table and the errors
    python tests/pipeline_matrix.py --write    # update README.md and docs/pipeline.md in place
"""

from __future__ import annotations

import sys
from pathlib import Path

ROWS = ["greedy", "sampling", "AWRS", "SMC", "ASAp", "contrastive", "beam", "diverse beam"]
COLUMNS = ["regex", "grammar", "JSON Schema", "Mirostat", "entropy temperature", "forced", "prompt lookup",
           "recycling", "early exit", "draft model", "EAD", "batching", "HF model.generate"]
CONTROLLERS = ("Mirostat", "entropy temperature")
DRAFTERS = {"forced": [], "prompt lookup": ["prompt_lookup"], "recycling": ["recycling"], "early exit": ["early_exit"],
            "draft model": ["model"]}
SEARCHES = ("contrastive", "beam", "diverse beam")

# (row, column) -> why not (short, for the table); every other cell is "yes (tested)"
NO = {
    **{("greedy", c): "argmax unchanged" for c in CONTROLLERS},
    **{("ASAp", c): "changes the distribution ASAp learns" for c in CONTROLLERS},
    **{("ASAp", c): "ASAp samples every token" for c in DRAFTERS if c != "forced"},
    ("ASAp", "EAD"): "ASAp learns one model",
    **{(r, c): "a search decides every token" for r in SEARCHES for c in (*CONTROLLERS, *[d for d in DRAFTERS if d != "forced"])},
    ("contrastive", "EAD"): "hidden states of two models",
    ("beam", "EAD"): "scores from two models",
    ("diverse beam", "EAD"): "scores from two models",
}
# what a "no" cell's error must name, per row and per column
ROW_NAMES = {"greedy": "greedy", "sampling": "temperature", "AWRS": "AWRS", "SMC": "SMC", "ASAp": "ASAp",
             "contrastive": "ContrastiveSearch", "beam": "BeamSearch", "diverse beam": "DiverseBeamSearch"}
COLUMN_NAMES = {"Mirostat": "Mirostat", "entropy temperature": "EntropyTemperature", "EAD": "ead=",
                **{c: "speculative=" for c in DRAFTERS}}

REGEX = r"[a-z]{1,6}( [a-z]{1,6}){0,3}\."
GRAMMAR = 'start: NUMBER (("+" | "*") NUMBER)*\nNUMBER: /[1-9][0-9]?/\n'
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "ok": {"type": "boolean"},
                                           "n": {"type": "integer", "minimum": 0, "maximum": 99}},
          "required": ["name", "ok", "n"], "additionalProperties": False}


def row_options(row: str, controllers: list | None = None) -> dict:
    """``generate`` options for a row; ``controllers`` go where that row takes them."""
    import ctrldec

    controllers = controllers or []
    if row == "greedy":
        return {"greedy": True, **({"controllers": controllers} if controllers else {})}
    if row == "sampling":
        return {"temperature": 0.9, "top_k": 50, "top_p": 0.95, "seed": 1, **({"controllers": controllers} if controllers else {})}
    if row == "AWRS":
        return {"sampler": ctrldec.AWRS(temperature=0.9, controllers=controllers), "seed": 1}
    if row == "SMC":
        return {"sampler": ctrldec.SMC(particles=3, sampler=ctrldec.AWRS(controllers=controllers)), "seed": 1}
    if row == "ASAp":
        return {"sampler": ctrldec.ASAp(), "seed": 1, **({"controllers": controllers} if controllers else {})}
    search = {"contrastive": lambda: ctrldec.ContrastiveSearch(0.6, 3), "beam": lambda: ctrldec.BeamSearch(3),
              "diverse beam": lambda: ctrldec.DiverseBeamSearch(4, 2, 0.5)}[row]()
    return {"search": search, **({"controllers": controllers} if controllers else {})}


def column_options(column: str, draft_model=None) -> dict:
    """``generate`` options for a column, beside the row's (constraint columns give the constraint)."""
    import ctrldec

    if column == "grammar":
        return {"constraint": ctrldec.Grammar(GRAMMAR)}
    if column == "JSON Schema":
        return {"constraint": ctrldec.JSONSchema(SCHEMA)}
    base = {"constraint": ctrldec.Regex(REGEX)}
    if column in DRAFTERS:
        names = ["forced", *DRAFTERS[column]]
        # adaptive=False: the sizer cuts drafts by measured pass times, so on a slower or busier
        # machine it may score none of them and the cell would test nothing (a CI run did so)
        return {**base, "speculative": ctrldec.Speculative(names, early_exit_layers=1, adaptive=False,
                                                           draft_model=draft_model if "model" in names else None)}
    if column == "EAD":
        # the tiny model's entropies are all near 5.83 nats: a one-pass window flips between the models
        return {**base, "ead": ctrldec.EntropySwitch(layers=1, window=1, threshold=5.83, min_dwell=1)}
    return base


def controllers_for(column: str) -> list:
    import ctrldec

    return {"Mirostat": [ctrldec.Mirostat(3.0)], "entropy temperature": [ctrldec.EntropyTemperature(0.5, 1.5)]}.get(column, [])


def options(row: str, column: str, draft_model=None) -> dict:
    return {**row_options(row, controllers_for(column)), **column_options(column, draft_model), "max_new_tokens": 40}


def refusal(row: str, column: str) -> str:
    """The error ``generate`` raises for a "no" cell (run on options only: no model needed)."""
    import ctrldec
    from ctrldec.generate import _Options

    try:
        _Options.from_kwargs(options(row, column, draft_model=object()))
    except ctrldec.CtrldecError as e:
        return str(e)
    raise AssertionError(f"{row} x {column} is marked 'no' but is accepted")


def render() -> tuple[str, str]:
    """The table (markdown) and the list of errors of the "no" cells."""
    head = "| | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    body = "".join(f"| **{r}** | " + " | ".join(f"no: {NO[r, c]}" if (r, c) in NO else "yes (tested)" for c in COLUMNS) + " |\n"
                   for r in ROWS)
    yes = len(ROWS) * len(COLUMNS) - len(NO)
    table = head + body + f"\n{yes} cells \"yes (tested)\", each tested on a tiny model; {len(NO)} \"no\", each an error naming both parts.\n"
    errors = "".join(f"- {r} × {c}: `{refusal(r, c)}`\n" for r in ROWS for c in COLUMNS if (r, c) in NO)
    return table, errors


def _block(text: str, name: str, content: str) -> str:
    start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
    i, j = text.index(start) + len(start), text.index(end)
    return text[:i] + content + text[j:]


ROOT = Path(__file__).resolve().parents[1]
TARGETS = {ROOT / "README.md": ("matrix",), ROOT / "docs" / "pipeline.md": ("matrix", "matrix-errors")}


def updated(path: Path) -> str:
    """``path``'s text with its matrix blocks rendered anew."""
    table, errors = render()
    text = path.read_text(encoding="utf-8")
    for name in TARGETS[path]:
        text = _block(text, name, table if name == "matrix" else errors)
    return text


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if "--write" in sys.argv:
        for target in TARGETS:
            target.write_text(updated(target), encoding="utf-8")
            print(f"updated {target}")
    else:
        table, errors = render()
        print(table + "\n" + errors)
