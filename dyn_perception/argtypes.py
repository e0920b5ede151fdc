"""
argparse ``type=`` checks shared by the package's command lines and the benchmarks.

A check given as a ``type=`` runs while the arguments are parsed, so a refusal is argparse's
single ``error:`` line and exit 2, before any work. The benchmarks (``bench/report.py``) use
the same functions, so a path is judged the same way everywhere.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import tempfile


def output_file(text: str) -> str:
    """
    Check, as an argparse ``type=``, that a result file can be written: make its directory.

    Results used to be written at the end of the work (a benchmark of up to 30 minutes; the
    training CLI's front plot after the manifest was rewritten), and a directory that could
    not be made or written lost them, with a traceback; a file is tried there now, first.
    """
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f'{text!r} is a directory, not a file')
    blocking = next((d for d in path.parents if d.exists() and not d.is_dir()), None)
    if blocking is not None:
        raise argparse.ArgumentTypeError(f'cannot write {text}: {blocking} is not a directory')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f'.{path.name}.'):
            pass
    except OSError as err:
        raise argparse.ArgumentTypeError(
            f'cannot write {text}: {err.strerror or err}') from None
    return text
