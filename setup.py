# Only the native extensions live here; metadata is in pyproject.toml.
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("ONSHI_DEBUG_BUILD") == "1"  # ASan/UBSan build for leak checks
cflags = ["-O3"] if not debug else ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
ldflags = [] if not debug else ["-fsanitize=address,undefined"]
# A bench-only build of the engine that leaves techniques out, to measure each
# (bench/engine.py builds it into build/variant-*; never installed):
# ONSHI_ENGINE_VARIANT=no-directories,whole-page-prefetch,memcmp-keys (any of them).
VARIANTS = {
    "no-directories": "ONSHI_NO_DIRECTORIES",
    "whole-page-prefetch": "ONSHI_WHOLE_PAGE_PREFETCH",
    "memcmp-keys": "ONSHI_MEMCMP_KEYS",
}
variant = [v for v in os.environ.get("ONSHI_ENGINE_VARIANT", "").split(",") if v]
unknown = sorted(set(variant) - set(VARIANTS))
if unknown:
    raise SystemExit(f"ONSHI_ENGINE_VARIANT: unknown {', '.join(unknown)} (known: {', '.join(VARIANTS)})")


def native(name, libraries=()):
    """One Cython module src/ext/<name>.pyx -> onshi.ext.<name>."""
    macros = [(VARIANTS[v], "1") for v in variant] if name == "_engine" else []
    return Extension(
        f"onshi.ext.{name}",
        [f"src/ext/{name}.pyx"],
        libraries=list(libraries),
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        define_macros=macros,
    )


def package_include() -> str:
    """A directory in which onshi/ is src/, so `from onshi.ext.record cimport ...`
    finds src/ext/record.pxd as it would in an installed package (src/ is mapped
    onto the package onshi, which Cython does not know)."""
    root = os.path.join("build", "cython-include")
    link = os.path.join(root, "onshi")
    if not os.path.islink(link):
        os.makedirs(root, exist_ok=True)
        os.symlink(os.path.join("..", "..", "src"), link)
    return root


# Every native module has a pure-Python twin, so a checkout without a C toolchain still runs.
exts = [
    e
    for e in (
        native("_engine", ["lmdb"]),
        native("_record"),
        native("_claims"),
        native("_cardproof", ["crypto"]),
        native("_auditlog", ["crypto"]),
    )
    if os.path.exists(e.sources[0])
]
# Bounds checking and negative-index wrapping stay on (Cython's defaults) in every
# module. They guard Python list/tuple/memoryview indexing only; the hot loops of
# the engine's lookups and of the claims pass index C pointers, which Cython never
# checks (each of those checks its lengths itself). Turning them off in those two
# modules measured no faster (bench/RESULTS.md, "Bounds checking": on/off 0.84-1.09,
# within run-to-run noise), so nowhere.
setup(ext_modules=cythonize(exts, language_level=3, include_path=[package_include()]) if exts else [])
