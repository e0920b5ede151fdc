"""Where the package's data folders (config/, models/, launch/) are, installed or not."""

from __future__ import annotations

from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]


def data_roots() -> list[Path]:
    """List the source checkout, then the ROS share directory when the package is installed."""
    roots = [SOURCE_ROOT]
    try:
        from ament_index_python.packages import get_package_share_directory
        roots.append(Path(get_package_share_directory('dyn_perception')))
    except Exception:  # noqa: B902 - not installed as a ROS package: the source tree only
        pass
    return roots


def data_path(*parts: str) -> Path:
    """Return the first existing ``<root>/<parts>``; the source-tree path when none exists."""
    for root in data_roots():
        candidate = root.joinpath(*parts)
        if candidate.exists():
            return candidate
    return SOURCE_ROOT.joinpath(*parts)
