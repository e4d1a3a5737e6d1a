"""`mixed`: terminals checking while insurers stream updates and review bodies
stream claim batches, all at once — so check latency is measured while the
single writer commits and bulk claims run against the same store.

The terminal rate is ONSHI_BENCH_RATE over ONSHI_BENCH_TERMINALS users; review
and insurer users are fixed_count (ONSHI_BENCH_REVIEW_USERS,
ONSHI_BENCH_INSURER_USERS, default 1 each), so -u = terminals + 2.
"""

from insurer import Insurer  # noqa: F401 - locust collects User classes from this module
from review import ReviewBody  # noqa: F401

from terminal import Terminal  # noqa: F401
