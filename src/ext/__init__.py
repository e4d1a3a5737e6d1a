"""The native modules: Cython over liblmdb's C API and byte work on records.

Each is loaded through onshi.core.twins, which falls back to (or is told to
use) its pure-Python twin; importing this package loads none of them, so a
checkout that is not built still imports. `_engine` holds only the lookups
(argument checking lives in onshi.core.engine); `_record` is the history
record codec the writer uses through onshi.core.history.
"""
