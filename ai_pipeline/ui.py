"""The Dagster UI for real: `dagster-webserver` and `dagster-daemon run` over `workspace.yaml` and the project's
persistent instance (embedded SQLite under the data root by default, PostgreSQL with AI_PIPELINE_INSTANCE=postgres).

`ai-pipeline ui` runs `serve()` in the foreground; tests use `DagsterUI` as a context manager. The webserver and
the daemon are the two services of Dagster's own deployment guide, each in its own process group (session):

- Dagster maps SIGTERM to SIGINT's handler, so a service that inherits an ignored SIGINT (a background job of
  a script: `dagster dev &`) ignores SIGTERM too. The services start with default signal handlers.
- Stopping sends SIGTERM to each whole group (the service, its code server, run workers it launched), waits
  for the service, then SIGKILLs what is left. Nothing outlives the launcher's stop.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from ai_pipeline.instance import instance_kind, prepare_instance_home
from ai_pipeline.settings import PROJECT_ROOT, Settings

WORKSPACE = PROJECT_ROOT / "workspace.yaml"
# The venv's console scripts, found without relying on PATH (the venv need not be activated).
BIN = Path(sys.executable).parent
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
GROUP_GRACE_S = 5  # after a service exits, for the rest of its group (code server, run workers) to exit
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Resolved here, in the parent: the child between fork and exec only calls it.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None

_LOCATIONS = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""


class GraphQLError(RuntimeError):
    """The webserver answered a GraphQL request with errors."""


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None, timeout_s: float = 60) -> dict:
    """`data` of a GraphQL request to the webserver at `url`; errors raise GraphQLError with their messages."""
    with _local_session() as session:
        response = session.post(
            f"{url}/graphql", json={"query": query, "variables": dict(variables or {})}, timeout=timeout_s
        )
    try:
        body = response.json()
    except ValueError:
        response.raise_for_status()
        raise
    if body.get("errors"):  # a 400 (invalid query) carries its reasons here too
        raise GraphQLError("; ".join(e.get("message", str(e)) for e in body["errors"]))
    response.raise_for_status()
    return body["data"]


def _local_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # a local server: never through a proxy from the environment
    return session


def _prepare_child() -> None:
    """Runs in each service before exec: default SIGINT/SIGTERM (an inherited SIG_IGN would survive exec, a
    handler does not) and, on Linux, SIGTERM when the launcher dies: a launcher killed outright (no handler,
    no atexit) must not leave services running. The launcher is the thread that started the service, so
    start services from a thread that lives as long as they do (the main thread in the CLI and in tests)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DagsterUI:
    """The webserver and the daemon for `workspace.yaml`, on `host:port`, over the instance that `env` configures.

    `env` is the services' whole environment (default: this process's); AI_PIPELINE_* in it choose the data root,
    the start date and the instance kind, and DAGSTER_HOME is set from them (`ai_pipeline.instance`). `log` is a
    file for the services' output (default: this process's stdout and stderr).
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        workspace: Path = WORKSPACE,
        startup_timeout_s: float = 300,
        stop_timeout_s: float = 30,
    ):
        self.host, self.port, self.workspace, self.log = host, port, workspace, log
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.env = dict(os.environ if env is None else env)
        self.settings = Settings.from_env(self.env)
        self.dagster_home = prepare_instance_home(self.settings, instance_kind(self.env))
        self.env["DAGSTER_HOME"] = str(self.dagster_home)
        self.processes: dict[str, subprocess.Popen] = {}
        self._log_file: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _spawn(self, name: str, args: list[str]) -> None:
        if name in self.processes:
            return
        if self.log and self._log_file is None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self.log.open("ab")
        if not self.processes:
            atexit.register(self.stop)
        self.processes[name] = subprocess.Popen(
            args,
            cwd=PROJECT_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT if self._log_file else None,
            start_new_session=True,
            preexec_fn=_prepare_child,
        )

    def start_webserver(self) -> None:
        """The webserver (a no-op when it runs)."""
        self._spawn(
            "dagster-webserver",
            [str(BIN / "dagster-webserver"), "-w", str(self.workspace), "-h", self.host, "-p", str(self.port)],
        )

    def start_daemon(self) -> None:
        """The daemon (a no-op when it runs): run queue, sensors, schedules, backfills. Started after the
        webserver, it lets a caller change instigator states (e.g. stop sensors) before anything ticks."""
        self._spawn("dagster-daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.workspace)])

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                where = f"; its output is in {self.log}" if self.log else ""
                raise RuntimeError(f"{name} exited with code {process.returncode}{where}")

    def wait_until_ready(self) -> None:
        """Returns when /server_info answers and every code location has loaded; raises on a load error,
        a service that exited, or the startup timeout."""
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            self._check_alive()
            try:
                with _local_session() as session:
                    answered = session.get(f"{self.url}/server_info", timeout=5).ok
                if answered:
                    entries = graphql(self.url, _LOCATIONS)["workspaceOrError"].get("locationEntries", [])
                    errors = [
                        f"{e['name']}: {e['locationOrLoadError']['message']}"
                        for e in entries
                        if (e["locationOrLoadError"] or {}).get("__typename") == "PythonError"
                    ]
                    if errors:
                        raise RuntimeError("code location failed to load: " + "\n".join(errors))
                    if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                        return
            except requests.RequestException:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the Dagster webserver at {self.url} did not become ready in {self.startup_timeout_s:.0f} s"
                )
            time.sleep(0.5)

    def start(self) -> DagsterUI:
        """Both services (those not started yet); returns when the webserver is ready. The webserver first:
        on a fresh instance both would create its tables at once (alembic then finds two heads)."""
        self.start_webserver()
        self.wait_until_ready()
        self.start_daemon()
        return self

    def wait(self) -> int:
        """Blocks until a service exits; returns its exit code (the other keeps running until `stop`)."""
        while True:
            for process in self.processes.values():
                if process.poll() is not None:
                    return process.returncode
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to every service's process group, a wait (`stop_timeout_s` at most), then SIGKILL to what is
        left. Idempotent."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Code servers and run workers are in the group too: a moment to finish, then none may outlive the stop.
            _wait_for_group(process.pid, min(deadline, time.monotonic() + GROUP_GRACE_S))
            _signal_group(process, signal.SIGKILL)
            _reap(process)
        self.processes.clear()
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        atexit.unregister(self.stop)

    def __enter__(self) -> DagsterUI:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _reap(process: subprocess.Popen) -> None:
    """Waits for a killed service with `os.waitpid`, not `Popen.wait`. The stop signals raise KeyboardInterrupt
    wherever this process is (`interrupt_on_stop_signals`). If that happens inside `Popen.poll` (`wait` polls both
    services twice a second), CPython's `_internal_poll` can leave the Popen's internal lock held between taking it
    and its `try`. `Popen.wait()` would then block on that lock forever, and `ai-pipeline ui` would never exit."""
    if process.returncode is not None:
        return
    try:
        os.waitpid(process.pid, 0)
    except ChildProcessError:  # reaped already
        pass


def _wait_for_group(group: int, until: float) -> None:
    """Until no process of `group` is left, or the monotonic time `until`."""
    while time.monotonic() < until:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session: the group id is the service's pid
    except ProcessLookupError:
        pass


def interrupt_on_stop_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt in a foreground service, whatever runs (startup included), even
    when inherited as ignored: a shell runs background jobs with SIGINT ignored, and Dagster gives SIGTERM
    SIGINT's handler (`setup_interrupt_handlers`), so a process that ran Dagster code there ignores both."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """`ai-pipeline ui`: both services in the foreground until Ctrl-C or SIGTERM (then a clean stop)."""
    interrupt_on_stop_signals()
    ui = DagsterUI(host=host, port=port)
    print(f"Starting the Dagster webserver and daemon (DAGSTER_HOME={ui.dagster_home})", flush=True)
    try:
        with ui:
            print(f"\nDagster UI: {ui.url}  (Ctrl-C stops both services)\n", flush=True)
            code = ui.wait()
            print(f"A Dagster service exited with code {code}; stopping the other.", file=sys.stderr)
            return code or 1
    except KeyboardInterrupt:
        print("Stopped the Dagster webserver and daemon.", flush=True)
        return 0
