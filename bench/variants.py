"""Variant builds of the native engine for bench/engine.py.

The module a server loads has every batch technique on and no switch to turn
one off. To measure what a technique buys, setup.py builds the same source
without it (ONSHI_ENGINE_VARIANT) into build/variant-<name>/, and `load` imports
that build beside the production module under a name of its own, so one process
can interleave rounds of both over the same store.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from types import ModuleType

import common

sys.path.insert(0, str(common.ROOT))  # tests.sanitized builds the native modules into build/
from tests import sanitized

TECHNIQUES = ("no-directories", "whole-page-prefetch", "memcmp-keys")  # setup.py VARIANTS


def build(variant: str) -> str:
    """Build (or bring up to date) the engine without `variant`'s techniques;
    the path of its _engine module."""
    ext_dir = sanitized.build_ext(f"variant-{variant}", ONSHI_ENGINE_VARIANT=variant)
    (path,) = glob.glob(os.path.join(ext_dir, "_engine.*.so"))
    return path


def load(variant: str) -> ModuleType:
    """The engine module built without `variant`'s techniques (checked, not assumed)."""
    name = f"onshi_variant_{variant.replace('-', '_').replace(',', '__')}._engine"
    spec = importlib.util.spec_from_file_location(name, build(variant))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if module.variant() != variant:
        raise RuntimeError(f"build/variant-{variant} leaves out {module.variant()!r}, not {variant!r}")
    return module
