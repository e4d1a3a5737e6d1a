"""Shared fixtures: real LMDB stores in tmp dirs, and the native/pure axis
(every test of a twin runs against the native module and its pure-Python
twin, as uvloop runs each test on its loop and on asyncio)."""

from __future__ import annotations

import os

import pytest

from onshi.core import twins
from onshi.core.engine import open_engine

IMPLS = twins.KINDS  # ("native", "pure")


def native_available(name: str | None = None) -> bool:
    """Is onshi.ext.<name> (every native module, without a name) built?"""
    return twins.built(name)


def require_native(name: str | None = None) -> None:
    """Skip a native test (or, called at a module's top, its whole module) where
    the extensions are not built; in CI that is a failure, never a skip."""
    if not native_available(name):
        if os.environ.get("CI") == "true":
            pytest.fail(f"onshi.ext.{name or '*'} is not built (scripts/setup.sh builds it)", pytrace=False)
        pytest.skip(f"onshi.ext.{name or '*'} not built", allow_module_level=True)


@pytest.fixture(scope="module", params=IMPLS)
def impl(request) -> str:
    """ "native" or "pure": the side of every twin this test runs against. A test
    passes it where it opens one (open_engine, history.codec, claims.Verifier,
    cardproof's, AuditLog: `kind=impl`) or as ONSHI_ENGINE to the processes it
    starts. Module-scoped, so a module's servers are started once per side."""
    if request.param == twins.NATIVE:
        require_native()
    return request.param


@pytest.fixture
def open_store_engine(impl):
    """open_store_engine(path) -> engine of the parametrised kind; closed after the test."""
    opened = []

    def _open(path):
        engine = open_engine(path, impl)
        opened.append(engine)
        return engine

    yield _open
    for engine in opened:
        engine.close()
