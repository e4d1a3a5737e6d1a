"""Shared fixtures: real LMDB stores in tmp dirs, and the engine axis
(every engine test runs against native and pure, as uvloop runs each test on
its loop and on asyncio)."""

from __future__ import annotations

import os

import pytest

from onshi.core.engine import open_engine

ENGINE_KINDS = ("native", "pure")


def native_available() -> bool:
    try:
        import onshi.ext  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(params=ENGINE_KINDS)
def engine_kind(request) -> str:
    if request.param == "native" and not native_available():
        # In CI a missing native build is a failure, not a skip.
        if os.environ.get("CI") == "true":
            pytest.fail("native engine is not built (scripts/setup.sh builds it)")
        pytest.skip("native engine not built")
    return request.param


@pytest.fixture
def open_store_engine(engine_kind):
    """open_store_engine(path) -> engine of the parametrised kind; closed after the test."""
    opened = []

    def _open(path):
        engine = open_engine(path, engine_kind)
        opened.append(engine)
        return engine

    yield _open
    for engine in opened:
        engine.close()
