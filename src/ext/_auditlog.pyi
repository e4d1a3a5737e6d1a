"""Typed stub of the access log's native group commit (src/ext/_auditlog.pyx);
the Python reference is onshi.core.audit.AuditLog with kind="pure"."""

DURABLE: int  # append(): the records are durable
ROTATE: int  # append(): durable, and the caller now leads a rotation: rotated() or fail()

class GroupCommit:
    """The hot half of one AuditLog stream: pending record bodies, the chain head
    and the file offsets (the fds stay AuditLog's)."""

    fd: int
    head_fd: int
    size: int
    allocated: int
    seq: int
    total: int
    segment_bytes: int
    preallocate: int
    durable: bool
    force_rotate: bool
    sync_interval_ns: int
    batch_target: int
    gathering: bool  # a leader is waiting for its batch to fill
    batches: int
    records: int
    batches_filled: int  # batches closed full within the interval
    batches_timed: int  # batches closed by the interval running out
    def __init__(
        self,
        fd: int,
        head_fd: int,
        size: int,
        allocated: int,
        seq: int,
        total: int,
        last_hash: bytes,
        durable: bool,
        segment_bytes: int,
        preallocate: int,
        mac_key: bytes = b"",
        stream: bytes = b"",
    ) -> None: ...
    @property
    def last_hash(self) -> bytes: ...
    @property
    def failed(self) -> int:
        """errno of the write that fail-stopped the log, else 0."""
    def append(self, bodies: list[bytes]) -> int:
        """Queue encoded record bodies; returns DURABLE or ROTATE once they are durable."""
    def rotated(self, fd: int, size: int, allocated: int, seq: int, total: int, last_hash: bytes) -> None: ...
    def fail(self, err: int) -> None: ...
    def close(self) -> None: ...
