"""The ASan/UBSan build of the native extensions (setup.py, ONSHI_DEBUG_BUILD=1),
for tests that run other tests under it in a subprocess.

`sanitized_env(root)` builds the debug extensions into build/asan-lib (kept
between runs: setuptools rebuilds a module only when its sources changed), lays
out a package tree whose onshi.ext holds them beside the rest of src/, and returns
the environment that runs Python with libasan preloaded and that tree first on
sys.path. Any ASan report or UBSan finding ends the process with a non-zero exit.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _runtime(name: str) -> str | None:
    try:
        path = subprocess.run(
            ["gcc", f"-print-file-name={name}"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


def available() -> str | None:
    """Why the sanitized build cannot run here, or None if it can."""
    if _runtime("libasan.so") is None:
        return "gcc's libasan is not installed"
    if not os.path.exists(os.path.join(ROOT, "src", "ext", "_engine.pyx")):
        return "no native sources"
    return None


def build_ext(name: str, **settings: str) -> str:
    """Build (or bring up to date: setuptools rebuilds a module only when its
    sources changed) the native extensions into build/NAME-lib with setup.py's
    settings (environment variables); returns the directory of their modules.
    The sanitized build here; bench/variants.py's engine variants too."""
    lib = os.path.join(ROOT, "build", f"{name}-lib")
    done = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-lib",
            lib,
            "--build-temp",
            os.path.join(ROOT, "build", f"{name}-tmp"),
        ],
        cwd=ROOT,
        env=dict(os.environ, **settings),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode:
        raise RuntimeError(f"{name} build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return os.path.join(lib, "onshi", "ext")


def build() -> str:
    """Build (or bring up to date) the sanitized extensions; returns their directory."""
    return build_ext("asan", ONSHI_DEBUG_BUILD="1")


def package_tree(dest: str, ext_dir: str) -> str:
    """dest/onshi: src/ with ext/ holding the sanitized modules (symlinks)."""
    pkg = os.path.join(dest, "onshi")
    os.makedirs(os.path.join(pkg, "ext"), exist_ok=True)
    src = os.path.join(ROOT, "src")
    for name in os.listdir(src):
        if name != "ext" and not os.path.exists(os.path.join(pkg, name)):
            os.symlink(os.path.join(src, name), os.path.join(pkg, name))
    for path in glob.glob(os.path.join(src, "ext", "*.py")) + glob.glob(os.path.join(ext_dir, "*.so")):
        link = os.path.join(pkg, "ext", os.path.basename(path))
        if not os.path.exists(link):
            os.symlink(path, link)
    return dest


def sanitized_env(tree_root: str) -> dict[str, str]:
    """Environment for a Python subprocess that imports the sanitized onshi.ext."""
    tree = package_tree(tree_root, build())
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([tree, ROOT]),
        LD_PRELOAD=_runtime("libasan.so"),
        # Python's own allocations are never freed at exit: no leak report. A
        # finding of either sanitizer fails the process.
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=99",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=98",
        PYTHONMALLOC="malloc",  # every object through ASan's allocator: overruns of Python buffers are seen
        ONSHI_SANITIZED="1",
    )
    env.pop("PYTEST_ADDOPTS", None)
    return env
