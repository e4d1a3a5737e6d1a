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
import subprocess
import sys
from types import ModuleType

import common

TECHNIQUES = ("no-directories", "whole-page-prefetch", "memcmp-keys")  # setup.py VARIANTS


def build(variant: str) -> str:
    """Build (or bring up to date: setuptools rebuilds only what changed) the
    engine without `variant`'s techniques; the path of its _engine module."""
    lib = common.ROOT / "build" / f"variant-{variant}"
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(lib), "--build-temp", str(lib) + "-tmp"],
        cwd=common.ROOT,
        env=dict(os.environ, ONSHI_ENGINE_VARIANT=variant),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode:
        raise RuntimeError(f"variant build {variant} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    (path,) = glob.glob(str(lib / "onshi" / "ext" / "_engine.*.so"))
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
