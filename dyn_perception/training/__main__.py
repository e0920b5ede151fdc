"""``python -m dyn_perception.training``: the training command line."""

import sys

from dyn_perception.training.cli import main

sys.exit(main())
