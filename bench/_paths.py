"""Put the repository root on ``sys.path`` so ``python bench/<name>.py`` runs from a checkout."""

from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
