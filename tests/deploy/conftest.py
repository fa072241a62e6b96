"""Fixtures for the deployment tests; the helpers are in deploy_support.py."""
import pytest

from deploy_support import FakeHub


@pytest.fixture
def hub():
    h = FakeHub()
    yield h
    h.close()
