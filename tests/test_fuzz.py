"""Fuzz every RPC of both servers (tests/fuzz_support.py): generated fields,
valid requests with fields replaced, bodies cut short, flipped or garbage,
extreme numbers and odd Unicode, through a generic channel. No answer may be
INTERNAL or UNKNOWN (or hang to its deadline), both servers must still be up,
and a known check must be answered byte for byte as before.

Bounded here (a few thousand calls, fixed seeds, ~20 s); `bench/fuzz.py
--examples N` runs the same generator as long as asked (figures in
bench/RESULTS.md)."""

from __future__ import annotations

import pytest

from tests import fuzz_support as fz


@pytest.mark.parametrize(
    "secure,examples,seed", [(True, 2500, 11), (False, 1000, 12)], ids=["mtls-access-log", "no-trust-options"]
)
def test_no_input_gets_internal_or_unknown(tmp_path, secure, examples, seed):
    targets = fz.start_servers(tmp_path, secure=secure)
    try:
        known = [fz.known_answer(t) for t in targets]
        report = fz.run(targets, examples, seed)
        assert not report.bad, "\n".join(fz.describe(b) for b in report.bad[:10])
        assert report.examples == examples
        for target, before in zip(targets, known, strict=True):
            assert target.alive(), target.name
            assert fz.known_answer(target) == before, target.name
        # Every method was called, and not only refused at the door.
        assert len({m.path for t in targets for m in t.methods}) >= (20 if secure else 14)
        assert report.codes["OK"] > examples // 10
    finally:
        for target in targets:
            target.close()
