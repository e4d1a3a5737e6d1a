"""The native engine: Cython over liblmdb's C API (see _engine.pyx).

Thin facade in the style of uvloop/msgspec: the compiled module holds only the
lookups; argument checking lives in onshi.core.engine. `_apply` holds the
ingest writer's byte work on history records, used through onshi.core.history.
"""

from onshi.ext._engine import NativeEngine

__all__ = ["NativeEngine"]
