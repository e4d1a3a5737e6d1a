"""The one switch between the native modules (src/ext) and their pure-Python twins.

Every native module is a measured hot spot of a pure-Python reference it is
tested against: the lookup engine (_engine / onshi.core.pure), the history
record codec (_record / history.*_pure), the plain-claims pass (_claims /
claims.Verifier's rules), the card-proof steps (_cardproof / cardproof) and the
access log's group commit (_auditlog / audit). One environment variable
chooses for all of them, as py-lmdb's LMDB_FORCE_* choose its binding:

    ONSHI_ENGINE=native   every native module; one that is not built is an error
    ONSHI_ENGINE=pure     every pure twin
    unset                 native where built, else the twin with a warning

Code that needs one side whatever the switch (a differential test, a bench)
passes `kind` to the twin's opener: open_engine, history.codec,
claims.Verifier, cardproof.signature_checker / SharedReplayCache, AuditLog.
The switch is read when each of those is called; history's module-level codec
is chosen once, when onshi.core.history is imported.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

ENV = "ONSHI_ENGINE"
NATIVE, PURE = "native", "pure"
KINDS = (NATIVE, PURE)
MODULES = ("_engine", "_record", "_claims", "_cardproof", "_auditlog")  # src/ext/<name>.pyx


def kind(requested: str | None = None) -> str:
    """ "native", "pure", or "auto" when neither the caller nor ONSHI_ENGINE says."""
    chosen = requested or os.environ.get(ENV) or "auto"
    if chosen not in ("auto", *KINDS):
        raise ValueError(f"{ENV} must be native or pure, not {chosen!r}")
    return chosen


def load(name: str, requested: str | None = None) -> ModuleType | None:
    """The native module onshi.ext.<name>, or None where its pure twin is to be used."""
    if name not in MODULES:
        raise ValueError(f"no native module {name!r} (one of {', '.join(MODULES)})")
    chosen = kind(requested)
    if chosen == PURE:
        return None
    try:
        return importlib.import_module(f"onshi.ext.{name}")
    except ImportError as exc:
        if chosen == NATIVE:
            raise ImportError(
                f"{ENV}=native, but onshi.ext.{name} is not built (scripts/setup.sh builds it): {exc}"
            ) from exc
        warnings.warn(
            f"onshi.ext.{name} is not built; using its pure-Python twin (slower)", RuntimeWarning, stacklevel=2
        )
        return None


def built(name: str | None = None) -> bool:
    """Does onshi.ext.<name> (every native module, without a name) import?"""
    try:
        for each in MODULES if name is None else (name,):
            importlib.import_module(f"onshi.ext.{each}")
    except ImportError:
        return False
    return True
