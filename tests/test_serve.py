"""``mpoxflow serve`` as an operator runs it: real processes, real HTTP. Two instances share one database and
nothing else (a login made on one works on the other); ``--with-worker`` runs the scheduler in the process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from engine.bootstrap import open_engine
from tests.conftest import PASSWORD
from tests.helpers import person
from tests.test_worker import ROOT, events

#: Several processes share one database, as several ``serve`` processes share PostgreSQL: both backends.
pytestmark = [pytest.mark.both_backends, pytest.mark.slow]

STARTUP_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    def __init__(self, url: str, log: Path, *args: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "MPOXFLOW_LOG_LEVEL"}
        self.log = log
        self._err = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from entry.cli import main; main()", "--db", url, "--log-format", "json",
             "serve", "--port", str(self.port), *args],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._err, text=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:  # bounded: the server answers, dies, or the test fails with its log
            if self.proc.poll() is not None:
                pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/login", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"serve did not answer within {STARTUP_TIMEOUT} s:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def events(self) -> list[dict[str, Any]]:
        return events(self.log.read_text())

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it: Uvicorn shuts down gracefully (the lifespan stops the worker),
        then re-raises the signal, so the exit status is -SIGTERM."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._err.close()
        return self.proc.returncode


def test_two_instances_share_logins_and_data_through_the_database(cli_db: str, tmp_path: Path) -> None:
    engine = open_engine(cli_db)
    patient = person(engine, "SERVE-1")
    engine.db.dispose()
    first, second = Server(cli_db, tmp_path / "a.log"), Server(cli_db, tmp_path / "b.log")
    try:
        with httpx.Client(base_url=first.base) as a, httpx.Client(base_url=second.base) as b:
            login = a.post("/api/login", json={"name": "staff:test", "password": PASSWORD})
            assert login.status_code == 200
            csrf = login.json()["csrf"]
            b.cookies.update(a.cookies)  # the same browser, its next request routed to the other instance
            opened = b.post("/api/cases", headers={"X-CSRF-Token": csrf}, json={
                "person": patient, "onset": "2025-03-01", "symptoms": ["rash"], "criteria": ["msm"]})
            assert opened.status_code == 201, opened.text
            shown = a.get(f"/api/show/{opened.json()['id']}").json()
            assert (shown["state"], shown["onset"]) == ("suspected", "2025-03-01")
            entry = a.get("/api/audit", params={"entity": shown["id"]}).json()[-1]
            assert (entry["trigger"], entry["actor"], entry["role"], entry["rule"]) == (
                "open", "staff:test", "staff", "SST-mpox-7.1 §1.1")
            assert b.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 200
            assert a.get("/api/me").status_code == 401  # logged out on every instance
            spec = a.get("/openapi.json").json()
            assert spec["paths"]["/api/cases/{object_id}/confirm"]["post"]["operationId"] == "case_confirm"
    finally:
        stopped = [first.stop(), second.stop()]
    assert stopped == [-signal.SIGTERM, -signal.SIGTERM]


def test_with_worker_runs_the_scheduler_in_the_process_and_stops_with_it(cli_db: str, tmp_path: Path) -> None:
    server = Server(cli_db, tmp_path / "serve.log", "--with-worker")
    try:
        with httpx.Client(base_url=server.base) as client:
            assert client.post("/api/login", json={"name": "staff:test", "password": PASSWORD}).status_code == 200
            assert client.get("/api/timers/status").json()["pending"] == 0
    finally:
        assert server.stop() == -signal.SIGTERM
    names = [e.get("event") for e in server.events()]
    assert "worker_started" in names and "worker_stopped" in names
    assert names.index("worker_started") < names.index("worker_stopped")
    requests = [e for e in server.events() if e.get("event") == "http_request"]
    assert {(e["method"], e["path"], e["status"]) for e in requests} >= {
        ("POST", "/api/login", 200), ("GET", "/api/timers/status", 200)}
    assert all("staff:test" not in str(e) for e in requests)  # internal ids in the log, never names
