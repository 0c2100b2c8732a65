"""The worker's scheduled jobs (issue 19): the retention purge and the audit log's anchor as APScheduler 3 interval
jobs, their arithmetic from the injected wall clock (no sleeping), a worker run with a due purge purging, a failing
job logged without personal data while the timers go on firing, and ``mpoxflow worker``'s start-up refusals."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from engine import anchor as anchoring
from engine.clock import SimulatedClock
from engine.core import Engine
from persistence.database import Database
from scheduler.worker import JOBS_EXECUTOR, AnchorSchedule, Worker
from tests.conftest import START
from tests.helpers import confirmed, person
from tests.test_cli import cli, describe
from tests.test_retention import BORN, DUE, REF, World

T = timedelta


@pytest.fixture
def key_pair(tmp_path: Path) -> dict[str, Any]:
    made = anchoring.write_key_pair(str(tmp_path / "keys"))
    return {**made, "key": anchoring.load_private_key(made["private_key"])}


def test_the_jobs_are_interval_jobs_whose_instants_come_from_the_injected_clock(
        engine: Engine, key_pair: dict[str, Any], tmp_path: Path) -> None:
    wall = SimulatedClock(START)
    folder = tmp_path / "anchors"
    folder.mkdir()
    worker = Worker(engine, retention_every=T(hours=24), wall_clock=wall, deliver_webhooks=False,
                    anchor=AnchorSchedule(key_pair["key"], str(folder), T(hours=6)))
    worker.scheduler.start(paused=True)
    try:
        worker.schedule_jobs()
        for name, every in (("retention", T(hours=24)), ("anchor", T(hours=6))):
            job = worker.scheduler.get_job(name)
            assert job.next_run_time == START  # the first run: at start-up, by the injected clock
            assert job.trigger.interval == every
            assert job.coalesce is True and job.misfire_grace_time is None and job.executor == JOBS_EXECUTOR
            assert job.max_instances == 1
            # Each later run is the previous one plus the interval, whatever the time the scheduler wakes.
            late = START + T(hours=30)
            assert job.trigger.get_next_fire_time(START, late) == START + every
            assert job.trigger.get_next_fire_time(START + every, late) == START + 2 * every
        assert {j.id for j in worker.scheduler.get_jobs()} == {"retention", "anchor"}
    finally:
        worker.scheduler.shutdown(wait=False)


def test_a_worker_without_schedules_has_no_jobs(engine: Engine) -> None:
    worker = Worker(engine, deliver_webhooks=False)
    assert worker.jobs() == {}


def test_a_worker_run_with_a_due_purge_purges_as_the_scheduler_and_anchors(
        engine: Engine, clock: SimulatedClock, key_pair: dict[str, Any], tmp_path: Path) -> None:
    world = World(engine, clock)
    clock.set(DUE)
    folder = tmp_path / "anchors"
    folder.mkdir()
    worker = Worker(engine, poll_seconds=0.2, exit_when_idle=True, deliver_webhooks=False,
                    retention_every=T(hours=24), anchor=AnchorSchedule(key_pair["key"], str(folder), T(hours=24)))
    worker.run(install_signals=False)
    assert worker.job_results["retention"] == {"persons": 2, "imports": 0, "skipped": 0}
    assert engine.show(world.p)["ref"] is None
    receipt = engine.audit(entity=world.p)[-1]
    assert (receipt["trigger"], receipt["actor"], receipt["role"]) == ("purged", "timer", "timer")
    [written] = list(folder.glob("anchor-*.json"))
    anchor = json.loads(written.read_text())
    assert anchor["max_seq"] >= receipt["seq"]  # the anchor was made after the purge: it covers its receipt
    report = anchoring.verify_log(engine.runtime, anchor, anchoring.load_public_key(key_pair["public_key"]))
    assert report["intact"]
    assert engine.audit(trigger="anchored")[-1]["actor"] == "timer"
    assert engine.audit_verify()["intact"] and engine.audit_replay()["matches"]


def test_a_failing_job_is_logged_without_personal_data_and_the_timers_keep_firing(
        engine: Engine, db: Database, clock: SimulatedClock, key_pair: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    patient = person(engine, REF, born=date.fromisoformat(BORN))
    case = confirmed(engine, patient)
    folder = tmp_path / "anchors"
    folder.mkdir()
    worker = Worker(engine, deliver_webhooks=False, retention_every=T(hours=1),
                    anchor=AnchorSchedule(key_pair["key"], str(folder), T(hours=1)))
    folder.rmdir()  # the folder went away after start-up: the anchor cannot be written

    def broken_purge(**_: Any) -> Any:
        raise RuntimeError(f"connection to the database lost while purging {patient}")

    monkeypatch.setattr(engine, "purge", broken_purge)
    worker.scheduler.start(paused=True)
    try:
        worker.schedule_jobs()
        entries = len(engine.audit())
        with structlog.testing.capture_logs() as events:
            assert worker.run_job("anchor") is False
            assert worker.run_job("retention") is False
        failed = [e for e in events if e["event"] == "worker_job_failed"]
        assert [(e["job"], e["error_type"]) for e in failed] == [("anchor", "FileNotFoundError"),
                                                                 ("retention", "RuntimeError")]
        assert REF not in repr(events) and BORN not in repr(events)
        assert worker.job_failures == {"anchor": 1, "retention": 1}
        assert len(engine.audit()) == entries  # the failed anchor recorded nothing
        # Both jobs are still scheduled, and the timers fire as before.
        assert {j.id for j in worker.scheduler.get_jobs()} == {"anchor", "retention"}
        clock.set(START + T(days=2))
        assert worker.run_pass() >= 1
        assert any(t["status"] == "missed" for t in engine.show(case)["timers"])
    finally:
        worker.scheduler.shutdown(wait=False)


@pytest.mark.parametrize(("extra", "named"), [
    (["--anchor-key", "{missing}", "--anchor-dir", "{dir}"], "--anchor-key"),
    (["--anchor-key", "{key}"], "--anchor-dir"),
    (["--anchor-dir", "{dir}"], "--anchor-key"),
    (["--anchor-key", "{key}", "--anchor-dir", "{missing}"], "--anchor-dir"),
    (["--anchor-key", "{key}", "--anchor-dir", "{key}"], "--anchor-dir"),  # a file, not a folder
    (["--anchor-key", "{pub}", "--anchor-dir", "{dir}"], "--anchor-key"),  # not a private key
    (["--retention-every", "0"], "--retention-every"),
    (["--anchor-every", "nan", "--anchor-key", "{key}", "--anchor-dir", "{dir}"], "--anchor-every"),
])
def test_the_worker_refuses_at_start_up_naming_the_flag(cli_db: str, key_pair: dict[str, Any], tmp_path: Path,
                                                        extra: list[str], named: str) -> None:
    values = {"missing": str(tmp_path / "nothing-here"), "dir": str(tmp_path), "key": key_pair["private_key"],
              "pub": key_pair["public_key"]}
    result = cli(cli_db, "worker", "--exit-when-idle", *[a.format(**values) for a in extra])
    assert result.exit_code == 2, describe(result)
    assert named in result.stderr, describe(result)
    assert "Traceback" not in result.stderr


def test_the_worker_command_runs_the_purge_once_with_exit_when_idle(cli_db: str) -> None:
    from tests.test_cli import doc

    person_id = doc(cli_db, "person", "add", "--ref", REF, "--born", BORN, "--actor", "staff:test")["id"]
    doc(cli_db, "retention", "set", "person", "--years", "1", "--reason", "test", "--actor", "admin:test")
    cli(cli_db, "clock", "advance", "--to", "2026-03-04T00:00:00+01:00", "--actor", "admin:test")
    result = cli(cli_db, "worker", "--exit-when-idle")
    assert result.exit_code == 0, describe(result)
    assert doc(cli_db, "show", person_id, "--as", "admin:test")["ref"] is None
    skipped = cli(cli_db, "worker", "--exit-when-idle", "--no-retention")
    assert skipped.exit_code == 0, describe(skipped)
