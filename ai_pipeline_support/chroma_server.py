"""A real `chroma run` server on 127.0.0.1, for tests and benchmarks of server mode."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ai_pipeline.lib.rag.vector_store import open_client
from ai_pipeline_support.dagster_server import free_port


@contextmanager
def chroma_server(root: Path, timeout_s: float = 60.0) -> Iterator[str]:
    """`chroma run` over `root/data` in its own process group; yields its URL once it answers heartbeats."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    chroma = Path(sys.executable).parent / "chroma"
    log = root / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(chroma), "run", "--host", "127.0.0.1", "--port", str(port), "--path", str(root / "data")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started, error = time.monotonic(), None
        while time.monotonic() - started < timeout_s:
            if server.poll() is not None:
                raise RuntimeError(f"chroma run exited {server.returncode}: {log.read_text()[-2000:]}")
            try:
                open_client(url=url).heartbeat()
                break
            except Exception as e:  # not listening yet
                error = e
                time.sleep(0.2)
        else:
            raise RuntimeError(f"chroma run did not answer in {timeout_s:.0f} s: {error}")
        yield url
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        except ProcessLookupError:
            pass
