"""
Shared output of the benchmarks: an aligned table on stdout and a JSON file.

Machines here are noisy, so every benchmark compares against a baseline measured in the same
run and reports ratios; the JSON keeps the raw figures next to the ratios.
"""

import argparse
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import _paths  # noqa: F401 - puts the repository root on sys.path
# One check for every command line's result files; the benches import it from here.
from dyn_perception.argtypes import output_file  # noqa: F401


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render rows as a plain aligned text table (floats to 4 significant digits)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'{value:.4g}'
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = '  '.join(h.ljust(w) for h, w in zip(headers, widths))
    body = ['  '.join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return '\n'.join([line, '-' * len(line), *body])


def write_json(path: Optional[str], data: dict) -> None:
    """Write the results (flat keys first) when ``--json PATH`` was given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, default=float) + '\n')
        print(f'wrote {path}')


def bounded(kind: type, low: float, high: float = math.inf,
            above: bool = False) -> Callable[[str], Any]:
    """
    Return an argparse ``type=`` for a number of ``kind`` in [low, high] (``above``: > low).

    Unchecked, ``--sets 0`` or ``--sets -5`` ran the benchmark on nothing and reported its
    empty figures with exit 0, ``--seconds 0`` reported NaN, and ``--tpus 0`` failed with a
    traceback once the models had loaded; argparse turns this one's refusal into a single
    ``error:`` line and exit 2 before any work.
    """
    what = 'an integer' if kind is int else 'a number'
    limits = f'> {low:g}' if above else f'>= {low:g}'
    limits = f'from {low:g} to {high:g}' if math.isfinite(high) and not above else limits

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'must be {what} {limits}, got {text!r}') from None
        if not math.isfinite(value) or not (low < value if above else low <= value) \
                or not value <= high:
            raise argparse.ArgumentTypeError(f'must be {what} {limits}, got {text}')
        return value

    return parse
