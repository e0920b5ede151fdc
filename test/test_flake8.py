# Copyright 2026 dyn_perception maintainers. Apache-2.0.
from ament_flake8.main import main_with_errors
from lint_targets import LINT_PATHS
import pytest


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    rc, errors = main_with_errors(argv=LINT_PATHS)
    assert rc == 0, \
        'Found %d code style errors / warnings:\n' % len(errors) + \
        '\n'.join(errors)
