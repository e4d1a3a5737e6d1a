# Only the native extension lives here; metadata is in pyproject.toml.
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("ONSHI_DEBUG_BUILD") == "1"  # ASan/UBSan build for leak checks
cflags = ["-O3"] if not debug else ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
ldflags = [] if not debug else ["-fsanitize=address,undefined"]

ext = Extension(
    "onshi.ext._engine",
    ["src/ext/_engine.pyx"],
    libraries=["lmdb"],
    extra_compile_args=cflags,
    extra_link_args=ldflags,
)
# The pure engine works without the extension, so a checkout without a C toolchain still runs.
exts = [ext] if os.path.exists(ext.sources[0]) else []
setup(ext_modules=cythonize(exts, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}) if exts else [])
