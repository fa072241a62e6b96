"""Fixtures for the deployment tests; the helpers are in deploy_support.py."""
import os

import pytest

# The servers and tools these tests start (scripts/serve, gpu-check.sh, ...) use "auto" for the
# packed-weights cache: here it means none, so nothing writes beside tests/data (ctest sets it too).
os.environ.setdefault("WRITEUP_PACKED_CACHE", "off")

from deploy_support import FakeHub


@pytest.fixture
def hub():
    h = FakeHub()
    yield h
    h.close()
