"""Clinic terminal: how long one card check takes through the real stack
(private pcscd + vpcd + the virtual card + `onshi serve --pki`), and what the
virtual card's TCP_QUICKACK saves (vpcd writes length and APDU separately;
with delayed ACKs each APDU waits ~40 ms).

    onshi bench terminal_card [--rounds 30]

Reuses the test harness (tests/test_terminal_support.py) for pcscd, the test
PKI, the store and the server. Prints medians in milliseconds, measured in one
run. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from onshi.terminal import check, jpki, reader
from onshi.terminal.client import ServerConfig
from tests.test_terminal_support import FACILITY, PIN, Pcsc, card_files, shared_pki, shared_server


def card_session() -> None:
    with reader.JpkiCard() as card:
        card.select_jpki()
        card.read_certificate()
        card.pin_tries_left()
        card.verify_pin(PIN)
        card.sign_digest_info(jpki.digest_info_sha256(b"bench"))


def median_ms(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=30)
    args = p.parse_args(argv)
    pki_dir = shared_pki()
    server = shared_server()
    pcsc = Pcsc(tempfile.mkdtemp(prefix="onshi-bench-pcsc-"))
    pcsc.start()
    os.environ["PCSCLITE_CSOCK_NAME"] = pcsc.socket
    files = card_files(pki_dir, "valid-1")
    try:
        pcsc.insert(*files, PIN)
        card_session()  # warm-up
        quick = median_ms(card_session, args.rounds)
        config = ServerConfig.from_pki(pki_dir, FACILITY, target=server.target)
        full = median_ms(lambda: check.check_card(config, lambda tries: PIN), args.rounds)
        pcsc.insert(*files, PIN, "--no-quickack")
        card_session()
        delayed = median_ms(card_session, args.rounds)
    finally:
        pcsc.stop()
    print(f"card session (select, read cert, tries, verify, sign), TCP_QUICKACK: {quick:.1f} ms median")
    print(
        f"card session, delayed ACKs (--no-quickack):                        {delayed:.1f} ms median "
        f"({delayed / quick:.1f}x)"
    )
    print(f"whole check_card (card session + new mTLS channel + CheckByCard):   {full:.1f} ms median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
