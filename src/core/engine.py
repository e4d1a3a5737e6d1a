"""Engine selection and the argument-checking facade over either engine.

`ONSHI_ENGINE=native|pure` chooses, as for every native module (onshi.core.twins);
unset means native when the extension is built, else pure (with a warning,
since pure is several times slower).
Both engines take normalised keys and day numbers and return serialized
`onshi.v1.CheckResponse` bytes, ready to send.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Protocol

from . import dates, identifiers, twins


class Engine(Protocol):
    kind: str

    def check_by_card(self, serial_key: bytes, as_of_day: int) -> bytes: ...
    def check_by_number(self, number_key: bytes, birth_day: int, as_of_day: int) -> bytes: ...
    def check_by_card_batch(self, serial_keys: list[bytes], as_of_day: int) -> list[bytes]: ...
    def check_by_number_batch(self, queries: list[tuple[bytes, int]], as_of_day: int) -> list[bytes]: ...
    def histories_by_number(self, number_keys: list[bytes]) -> list[bytes | None]: ...
    def history_by_link(self, link_id: int) -> bytes | None: ...
    def close(self) -> None: ...


def open_engine(path: str | os.PathLike[str], kind: str | None = None) -> Engine:
    """The engine `kind` (native or pure) names, else the one ONSHI_ENGINE does (twins.load)."""
    native = twins.load("_engine", kind)
    if native is not None:
        engine: Engine = native.NativeEngine(os.fspath(path))
        return engine
    from .pure import PureEngine

    return PureEngine(path)


def check_card(engine: Engine, card_serial: str, as_of: dt.date | None = None) -> bytes:
    day = dates.to_day(as_of) if as_of else dates.today_jst()
    return engine.check_by_card(identifiers.card_serial_key(card_serial), day)


def check_number(
    engine: Engine,
    insurer_number: str,
    symbol: str,
    number: str,
    branch: str,
    birth_date: dt.date,
    as_of: dt.date | None = None,
) -> bytes:
    day = dates.to_day(as_of) if as_of else dates.today_jst()
    key = identifiers.number_key(insurer_number, symbol, number, branch)
    return engine.check_by_number(key, dates.to_day(birth_date), day)
