"""Files the command-line tools read and write (claims, insurers' updates,
registry records, verdicts): input is read as UTF-8 lines of bounded length and
every failure is an InputError naming the file and the line, so a wrong path (a
directory, a device, a binary file, /dev/zero, which has no line ends) ends in
one clear line and exit status 2 — never a traceback or an endless read.

Lines are counted as a CSV reader counts them (physical lines), so a CSV error
and a decoding error name the same line number.
"""

from __future__ import annotations

import codecs
import csv
import os
import stat
import sys
from collections.abc import Iterator
from typing import IO, TypeVar

MAX_LINE_BYTES = 1 << 20  # one line of an input file; claims and updates are a few hundred bytes


_Record = TypeVar("_Record")


class InputError(ValueError):
    """A file that cannot be read or written as the tool needs; str() is the line to print."""


def open_input(path: str) -> IO[bytes]:
    """A binary stream of `path` ('-' is stdin); InputError for what cannot be opened.
    A FIFO or a device given on the command line is read (a pipe is a fine input);
    the line bound ends what never ends."""
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


class TextLines:
    """The UTF-8 lines of a binary stream (line ends kept, as csv wants; a BOM
    dropped), each at most `max_line` bytes. `line` is the number of the last
    line read, `position` the bytes read so far (for a progress bar)."""

    def __init__(self, stream: IO[bytes], name: str, max_line: int = MAX_LINE_BYTES) -> None:
        self.stream = stream
        self.name = name
        self.max_line = max_line
        self.line = 0
        self.position = 0

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                raw = self.stream.readline(self.max_line + 1)
            except OSError as exc:
                raise InputError(f"{self.name}: {exc.strerror or exc}") from None
            if not raw:
                return
            self.line += 1
            self.position += len(raw)
            if len(raw) > self.max_line and not raw.endswith(b"\n"):
                raise InputError(
                    f"{self.name}: line {self.line} is longer than {self.max_line:,} bytes "
                    "(not a text file of records?)"
                )
            if self.line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{self.name}: line {self.line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                    f"at byte {exc.start + 1} of the line)"
                ) from None


def csv_records(reader: Iterator[_Record], lines: TextLines) -> Iterator[_Record]:
    """The records of a csv reader over `lines`; csv's own errors (a field over
    csv.field_size_limit(), a quote left open at the end) as InputError naming
    the line read last."""
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{lines.name}: line {lines.line}: {exc}") from None
        yield record


def csv_header(reader: csv.DictReader[str], lines: TextLines) -> list[str]:
    """A csv.DictReader's field names (reading the first record), errors as in csv_records."""
    try:
        return list(reader.fieldnames or ())
    except csv.Error as exc:
        raise InputError(f"{lines.name}: line {lines.line}: {exc}") from None


class Output:
    """A text file written in full or not at all: the rows go to a hidden file
    beside `path`, renamed over it by commit(); a run that stops early leaves
    no half file that looks whole. '-' is stdout; an existing FIFO or device
    (/dev/null) is written directly."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.tmp: str | None = None
        if path == "-":
            self.file = sys.stdout
            return
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None
        if mode is not None and stat.S_ISDIR(mode):
            raise InputError(f"{path}: is a directory (give a file name)")
        try:
            if mode is None or stat.S_ISREG(mode):
                folder, base = os.path.split(path)
                self.tmp = os.path.join(folder, f".{base}.{os.getpid()}.tmp")
                self.file = open(self.tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
            else:
                self.file = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"{path}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        if self.file is sys.stdout:
            self.file.flush()
            return
        self.file.close()
        if self.tmp:
            os.replace(self.tmp, self.path)
            self.tmp = None

    def discard(self) -> None:
        if self.file is not sys.stdout:
            self.file.close()
        if self.tmp:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
            self.tmp = None
