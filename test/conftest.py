"""Make the test helpers importable and keep every ROS test run off the network."""

import os
from pathlib import Path
import sys

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))


def pytest_collection_modifyitems(config, items):
    """Run the linters first: flake8 forks workers, unsafe once torch or JAX threads run."""
    items.sort(key=lambda item: item.get_closest_marker('linter') is None)
