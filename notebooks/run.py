"""Re-execute the notebooks in place, so that the committed copies carry their outputs and plots:

    python notebooks/run.py                  # every notebook
    python notebooks/run.py 07_pipeline      # some of them, by name

Needs the test extras (``pip install -e ".[test]"``: nbclient, ipykernel, matplotlib) and the
default model. The test suite executes the same notebooks (``tests/test_notebooks.py``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """``path`` executed from its own folder; raises on the first cell that fails."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def main(names: list[str]) -> int:
    paths = [HERE / f"{n.removesuffix('.ipynb')}.ipynb" for n in names] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        started = time.perf_counter()
        nbformat.write(execute(path), path)
        print(f"{path.name}: executed in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
