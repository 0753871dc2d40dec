"""Fixtures for the fan-out integration tests (helpers live in oshpc_testing.py, which other
test folders import by that unique name)."""
import os

import pytest

from oshpc_testing import Fanout


@pytest.fixture
def fanout(tmp_path):
    os.chmod(tmp_path, 0o755)
    return Fanout(tmp_path)
