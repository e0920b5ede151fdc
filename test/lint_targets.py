"""The source trees the linters check: the package, its tests, launch files and benchmarks."""

from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
LINT_PATHS = [
    str(PACKAGE_ROOT / name)
    for name in ('dyn_perception', 'test', 'launch', 'bench', 'setup.py')
    if (PACKAGE_ROOT / name).exists()
]
