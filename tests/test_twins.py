"""The one switch between the native modules and their pure twins
(onshi.core.twins): ONSHI_ENGINE for all of them, a missing build loud when
native is asked for, a warning and the pure twin when nobody asked."""

from __future__ import annotations

import datetime as dt
import importlib

import pytest

from onshi.core import audit, cardproof, claims, history, twins
from onshi.core.engine import open_engine
from onshi.core.pure import PureEngine
from tests.claims_helpers import KYOKAI, person, qual, write_people
from tests.conftest import require_native


@pytest.fixture
def unbuilt(monkeypatch):
    """As on a checkout without a C toolchain: no onshi.ext module imports."""
    real = importlib.import_module

    def import_module(name, *args):
        if name.startswith("onshi.ext."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", import_module)


@pytest.mark.parametrize("name", twins.MODULES)
def test_pure_asked_for_is_pure_and_native_asked_for_is_native(name, monkeypatch):
    require_native(name)
    monkeypatch.setenv(twins.ENV, "pure")
    assert twins.load(name) is None
    assert twins.load(name, "native").__name__ == f"onshi.ext.{name}"  # the caller's kind wins
    monkeypatch.setenv(twins.ENV, "native")
    assert twins.load(name).__name__ == f"onshi.ext.{name}"
    assert twins.load(name, "pure") is None


def test_native_asked_for_and_not_built_fails_loudly(unbuilt, monkeypatch):
    monkeypatch.setenv(twins.ENV, "native")
    for name in twins.MODULES:
        with pytest.raises(ImportError, match=f"ONSHI_ENGINE=native, but onshi.ext.{name} is not built"):
            twins.load(name)


def test_unset_falls_back_to_the_pure_twin_with_a_warning(unbuilt, monkeypatch):
    monkeypatch.delenv(twins.ENV, raising=False)
    for name in twins.MODULES:
        with pytest.warns(RuntimeWarning, match=f"onshi.ext.{name} is not built"):
            assert twins.load(name) is None
    assert not twins.built()


@pytest.mark.parametrize("value", ["fast", "Native", "1"])
def test_a_switch_that_names_neither_side_is_refused(value, monkeypatch):
    monkeypatch.setenv(twins.ENV, value)
    with pytest.raises(ValueError, match="ONSHI_ENGINE must be native or pure"):
        twins.load("_engine")


def test_one_variable_chooses_every_twin(tmp_path, monkeypatch, impl):
    """What each opener picks with no kind of its own: the side ONSHI_ENGINE names."""
    monkeypatch.setenv(twins.ENV, impl)
    path = tmp_path / "store"
    write_people(path, [(person("カナ", dt.date(1980, 1, 1)), [qual(KYOKAI, "1", "2", "00", dt.date(2020, 1, 1))])])
    engine = open_engine(path)
    reader = engine if impl == "pure" else PureEngine(path)  # py-lmdb: one environment per path
    try:
        assert engine.kind == impl
        assert (claims.Verifier(engine, reader.env).native is None) == (impl == "pure")
    finally:
        engine.close()
        if reader is not engine:
            reader.close()
    log = audit.AuditLog(str(tmp_path / "audit"), "s")
    try:
        assert log.native == (impl == "native")
    finally:
        log.close()
    assert (history.codec()[0] is history.split_record_pure) == (impl == "pure")
    table = cardproof.SharedReplayCache(10, slots=64)
    try:
        assert (table._native is None) == (impl == "pure")
    finally:
        table.close()
