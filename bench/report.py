"""
Shared output of the benchmarks: an aligned table on stdout and a JSON file.

Machines here are noisy, so every benchmark compares against a baseline measured in the same
run and reports ratios; the JSON keeps the raw figures next to the ratios.
"""

import json
from pathlib import Path
from typing import Any, Optional, Sequence


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
