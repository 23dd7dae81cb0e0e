"""
Crashes in a real Airflow 3 deployment: killed task processes, a killed triggerer, two triggerers.

What users rely on and only real processes can show: a generation is paid for once, whatever
dies while it renders. A retry after a SIGKILLed worker reconnects to its diffusion through the
task state store (XComs are cleared before a retry, SPEC 7); the triggers of a dead triggerer
move to a live one and resume polling the same diffusions. Every emulator has a random key, so
the final scan for it (files, logs, every table) has no false positive.

The sqlite crashes share one deployment (a start costs about 15 s on 2 cores): the fixture
triggers every run at once, kills what it must while they render, and the tests check the
outcome. The PostgreSQL test has a deployment of its own, with two triggerers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import (
    COMPONENTS,
    AirflowDeployment,
    DatabaseUnavailable,
    TaskProcesses,
    keyed_emulator,
    postgres_database,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.e2e

DAGS = Path(__file__).with_name("dags")
DURABLE_RETRY = "e2e_durable_retry"
FANOUT_4 = "e2e_deferred_fanout_4"
FANOUT_20 = "e2e_deferred_fanout_20"
STATE_KEY = "getimage_diffusion_id"  # GetImageDiffusionOperator.external_id_key
TRIGGER_CLASSPATH = "airflow_provider_getimage.triggers.getimage.GetImageDiffusionTrigger"
#: How the durable task's try dies: its runner alone (the supervisor reports the exit), or the
#: whole worker, supervisor first (nothing reports: the scheduler's heartbeat timeout must notice).
KILL_MODES = {"task-runner": False, "whole-worker": True}
#: ``[scheduler] task_instance_heartbeat_timeout``: 300 s by default, so a lost worker's task would
#: sit ``running`` for five minutes. Supervisors heartbeat every second here
#: (``[workers] min_heartbeat_interval``), so 6 s is still five missed beats.
TASK_HEARTBEAT_TIMEOUT = 6
#: ``[triggerer] triggerer_health_check_threshold``: a killed triggerer's triggers are taken once its
#: last heartbeat is this old (30 s by default); triggerers heartbeat every second here.
TRIGGERER_THRESHOLD = 4.0
#: ``GETIMAGE_E2E_KEEP_HOME=1`` keeps each deployment's home (logs, sqlite database) to look at.
KEEP_HOME = bool(os.environ.get("GETIMAGE_E2E_KEEP_HOME"))


@contextlib.contextmanager
def described_on_failure(airflow: AirflowDeployment) -> Iterator[None]:
    """Print each component's log tail if the block fails: the home is deleted right after."""
    try:
        yield
    except BaseException:
        print(f"\n===== Airflow deployment at the failure =====\n{airflow.describe(lines=80)}")
        raise


def submissions_for(emulator: Emulator, prompt: str) -> list[dict[str, Any]]:
    return [diffusion for diffusion in emulator.diffusions() if diffusion["prompt"] == prompt]


def state_store_value(airflow: AirflowDeployment, dag_id: str, run_id: str, task_id: str) -> str | None:
    """The diffusion id the operator keeps in the task state store (stored as JSON), once it is there."""
    rows = airflow.query(
        "SELECT value FROM task_state_store WHERE dag_id = ? AND run_id = ? AND task_id = ? "
        "AND map_index = -1 AND key = ?",
        (dag_id, run_id, task_id, STATE_KEY),
    )
    return json.loads(rows[0]["value"]) if rows else None


def log_folder(airflow: AirflowDeployment, dag_id: str, run_id: str, task_id: str, map_index: int) -> Path:
    """Where a task instance's log files are (``<home>/logs/dag_id=…/run_id=…/task_id=…[/map_index=…]``)."""
    folder = airflow.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return folder / f"map_index={map_index}" if map_index >= 0 else folder


def task_log(airflow: AirflowDeployment, dag_id: str, run_id: str, task_id: str, attempt: int) -> str:
    """One try's task log (``attempt=<n>.log``)."""
    path = log_folder(airflow, dag_id, run_id, task_id, -1) / f"attempt={attempt}.log"
    return path.read_text(errors="replace")


def trigger_logs(airflow: AirflowDeployment, dag_id: str, run_id: str, map_index: int) -> dict[int, str]:
    """
    Triggerer job id -> what that triggerer logged for the task's trigger (first try).

    Each triggerer writes a trigger's log to ``attempt=1.log.trigger.<its job id>.log``: proof of
    which triggerer ran it that stays on disk, unlike a ``trigger`` row, which a quick takeover may
    move and delete between two samples. A SIGKILLed triggerer's file may be missing or cut short:
    it is written through an 8 KiB buffer (``TriggerLoggingFactory`` opens it ``"wb"``).
    """
    folder = log_folder(airflow, dag_id, run_id, "generate", map_index)
    return {
        int(path.name.rsplit(".", 2)[-2]): path.read_text(errors="replace")
        for path in folder.glob("attempt=1.log.trigger.*.log")
    }


def assert_fired_by(logs: dict[int, str], triggerer: int, killed: int | None = None) -> None:
    """
    ``triggerer`` started the trigger and fired its event; no other did, ``killed`` aside.

    The killed triggerer's log is not required (see :func:`trigger_logs`), but if it is there it
    holds no event: the trigger did not fire twice.
    """
    assert set(logs) <= {triggerer, killed}, (sorted(logs), triggerer, killed)
    assert triggerer in logs, (sorted(logs), triggerer)
    assert " starting" in logs[triggerer]
    assert "Trigger fired event" in logs[triggerer], logs[triggerer]
    if killed is not None and killed in logs:
        assert "Trigger fired event" not in logs[killed], logs[killed]


def triggers_polling(emulator: Emulator, size: int) -> bool:
    """
    Each diffusion of the ``fanout_<size>`` DAG was polled by its trigger (not just submitted).

    The operator polls once before deferring, so a second poll comes from the trigger: the
    triggerer got past claiming the rows and runs the triggers.
    """
    still_rendering(emulator, size)
    polls = emulator.stats()["polls_by_id"]
    ids = [d["id"] for d in emulator.diffusions() if f"fan-out of {size}," in d["prompt"]]
    return len(ids) == size and all(polls.get(diffusion_id, 0) >= 2 for diffusion_id in ids)


def still_rendering(emulator: Emulator, size: int) -> None:
    """Fail at once, saying why, if a fan-out generation finished before the crash it waits for."""
    done = [
        d["id"]
        for d in emulator.diffusions()
        if f"fan-out of {size}," in d["prompt"] and d["status"] == "FINISHED"
    ]
    if done:
        pytest.fail(
            f"{len(done)} generation(s) finished before the crash: this machine needs a longer latency"
        )


def mapped_states(airflow: AirflowDeployment, dag_id: str, run_id: str) -> Counter[str | None]:
    """How many of the run's mapped ``generate`` tasks are in each state."""
    return Counter(
        state for (task_id, index), state in airflow.task_states(dag_id, run_id).items() if index >= 0
    )


def trigger_rows(airflow: AirflowDeployment) -> list[dict[str, Any]]:
    return airflow.query("SELECT id, classpath, triggerer_id FROM trigger")


def owners_of(airflow: AirflowDeployment, trigger_id: int) -> list[int]:
    """The triggerer jobs a trigger row was sampled on, in order (a new row has none until one takes it)."""
    return [row.triggerer_id for row in airflow.trigger_history(trigger_id) if row.triggerer_id is not None]


def triggerer_heartbeats(airflow: AirflowDeployment) -> dict[int, Any]:
    """``job.latest_heartbeat`` of every triggerer job not ended (a SIGKILLed one never ends its row)."""
    rows = airflow.query(
        "SELECT id, latest_heartbeat FROM job WHERE job_type = 'TriggererJob' AND end_date IS NULL"
    )
    return {row["id"]: row["latest_heartbeat"] for row in rows}


def assert_mapped_generations(
    airflow: AirflowDeployment, emulator: Emulator, dag_id: str, run_id: str, size: int
) -> dict[int, int]:
    """
    Every mapped generation was deferred once, on a trigger of its own, submitted once, and succeeded.

    Returns map index -> trigger id.
    """
    diffusions = {d["id"]: d for d in emulator.diffusions()}
    trigger_of: dict[int, int] = {}
    for index in range(size):
        history = airflow.history(dag_id, run_id, "generate", index)
        assert history[-1].state == "success", history
        # The same try from start to end: no retry hid a lost trigger.
        assert {seen.try_number for seen in history if seen.state is not None} == {1}, history
        deferred = [seen for seen in history if seen.state == "deferred"]
        trigger_ids = {seen.trigger_id for seen in deferred if seen.trigger_id is not None}
        assert deferred, history
        assert len(trigger_ids) == 1, history  # one trigger, kept across the takeover
        trigger_of[index] = trigger_ids.pop()
        diffusion_id = airflow.xcom(dag_id, run_id, "generate", "diffusion_id", index)
        prompt = diffusions[diffusion_id]["prompt"]
        assert [d["id"] for d in diffusions.values() if d["prompt"] == prompt] == [diffusion_id]
        urls = airflow.xcom(dag_id, run_id, "generate", map_index=index)
        assert urls
        assert all(url.startswith(f"{emulator.url}/images/{diffusion_id}/") for url in urls)
    assert len(set(trigger_of.values())) == size, trigger_of
    return trigger_of


def assert_key_nowhere(airflow: AirflowDeployment, key: str, *, diffusion_id: str, prompt: str) -> None:
    """
    The API key is in no file of the home (component and task logs, sqlite files) and no table.

    Every column of every table is searched: ``xcom``, ``rendered_task_instance_fields``,
    ``task_state_store`` and the rest. ``trigger`` rows (plain JSON kwargs, SPEC 8) are deleted
    when their trigger fires, so the rows sampled while they lived are checked too. The same scans
    must find a diffusion id and a prompt where they belong, or a clean result would prove nothing.
    """
    assert "xcom" in airflow.database_containing(diffusion_id)
    assert airflow.files_containing(diffusion_id)  # task logs
    assert "rendered_task_instance_fields" in airflow.database_containing(prompt)
    sampled = [row.kwargs for rows in airflow.triggers_seen().values() for row in rows]
    assert sampled
    assert not [kwargs for kwargs in sampled if key in kwargs]
    assert airflow.files_containing(key) == []
    assert airflow.database_containing(key) == {}


# -- one sqlite deployment: SIGKILLed task processes and a SIGKILLed triggerer ---------------------


@dataclass
class Crashes:
    """What the fixture did to the shared deployment, for the tests to check the outcome of."""

    airflow: AirflowDeployment
    emulator: Emulator
    prompts: dict[str, str] = field(default_factory=dict)  # kill mode -> prompt
    retry_runs: dict[str, str] = field(default_factory=dict)  # kill mode -> run id
    stored_ids: dict[str, str] = field(default_factory=dict)  # kill mode -> id in the state store
    killed: dict[str, TaskProcesses] = field(default_factory=dict)
    fanout_run: str = ""
    old_triggerer: int = 0
    deferred_triggers: set[int] = field(default_factory=set)


@pytest.fixture(scope="class")
def crashes() -> Iterator[Crashes]:
    """
    Start every run at once, then kill while they render: each durable task's processes, the triggerer.

    The latency (20 s) leaves each retry several seconds of a diffusion still rendering, also
    after the 6 s heartbeat timeout, so the retries take the reconnect path, not "already done".
    """
    emulator = keyed_emulator(latency=20.0)
    settings = {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
    }
    airflow = AirflowDeployment(
        DAGS,
        extra_env={**emulator.airflow_env(), **settings},
        triggerer_health_check_threshold=TRIGGERER_THRESHOLD,
        keep_home=KEEP_HOME,
    )
    try:
        with airflow, described_on_failure(airflow):
            done = Crashes(airflow, emulator)
            airflow.wait_until_parsed(DURABLE_RETRY)
            airflow.wait_until_parsed(FANOUT_4)
            for mode in KILL_MODES:
                done.prompts[mode] = f"e2e durable retry, {mode} killed: a lighthouse in a storm"
                done.retry_runs[mode] = airflow.trigger(DURABLE_RETRY, conf={"prompt": done.prompts[mode]})
            done.fanout_run = airflow.trigger(FANOUT_4)

            for mode, with_supervisor in KILL_MODES.items():
                run_id = done.retry_runs[mode]
                # Persisted: killed between the POST and this write, a retry would resubmit (the
                # mixin's documented gap), which is not what this test is about.
                done.stored_ids[mode] = airflow.wait_for(
                    functools.partial(state_store_value, airflow, DURABLE_RETRY, run_id, "generate"),
                    60,
                    f"the diffusion id of {run_id} in the task state store",
                    check=("scheduler",),
                )
                done.killed[mode] = airflow.kill_task(
                    DURABLE_RETRY, run_id, "generate", with_supervisor=with_supervisor
                )

            def all_deferred_in_a_triggerer() -> set[int] | None:
                still_rendering(emulator, 4)
                if mapped_states(airflow, FANOUT_4, done.fanout_run) != {"deferred": 4}:
                    return None
                rows = [row for row in trigger_rows(airflow) if row["classpath"] == TRIGGER_CLASSPATH]
                ids = {row["triggerer_id"] for row in rows}
                return ids if len(rows) == 4 and None not in ids else None

            owners = airflow.wait_for(
                all_deferred_in_a_triggerer, 60, "4 generations deferred in a triggerer"
            )
            airflow.wait_for(lambda: triggers_polling(emulator, 4), 30, "the 4 triggers to poll")
            assert len(owners) == 1, owners
            done.old_triggerer = owners.pop()
            done.deferred_triggers = {row["id"] for row in trigger_rows(airflow)}
            airflow.kill("triggerer")  # SIGKILL: no cleanup, its rows keep its id and a stale heartbeat
            airflow.restart("triggerer")
            yield done
    finally:
        print(f"\nsqlite crashes: {airflow.report()}")
        emulator.stop()


class TestSqliteCrashes:
    """One deployment for these tests (a class, so it is stopped before the PostgreSQL test starts)."""

    @pytest.mark.parametrize("mode", list(KILL_MODES))
    def test_durable_retry_after_sigkill(self, crashes: Crashes, mode: str) -> None:
        """
        A try SIGKILLed mid-poll is retried, and the retry reconnects: one submission, images in XCom.

        ``task-runner``: the supervisor sees exit -9 and reports ``up_for_retry`` at once.
        ``whole-worker``: nobody reports; the scheduler fails the try when its heartbeat is older
        than ``task_instance_heartbeat_timeout``, then retries it.
        """
        airflow, emulator = crashes.airflow, crashes.emulator
        run_id, prompt = crashes.retry_runs[mode], crashes.prompts[mode]
        diffusion_id = crashes.stored_ids[mode]
        with described_on_failure(airflow):
            killed = crashes.killed[mode]
            assert not killed.runner.is_running()
            assert killed.supervisor.is_running() is (mode == "task-runner")
            assert airflow.wait_for_run(DURABLE_RETRY, run_id, timeout=90) == "success"

            history = airflow.history(DURABLE_RETRY, run_id, "generate")
            print(f"\n{mode}: {[(round(s.at, 1), s.state, s.try_number) for s in history]}")
            assert (history[-1].state, history[-1].try_number) == ("success", 2), history
            assert any(seen.state == "running" and seen.try_number == 1 for seen in history), history
            tries = airflow.query(
                "SELECT try_number, state FROM task_instance_history WHERE dag_id = ? AND run_id = ? "
                "AND task_id = ? ORDER BY try_number",
                (DURABLE_RETRY, run_id, "generate"),
            )
            assert [(row["try_number"], row["state"]) for row in tries] == [(1, "failed")], tries

            # The retry found the stored id, saw the diffusion still rendering, and waited for it.
            assert "Reconnecting to existing job" in task_log(airflow, DURABLE_RETRY, run_id, "generate", 2)
            assert [d["id"] for d in submissions_for(emulator, prompt)] == [diffusion_id]
            assert airflow.xcom(DURABLE_RETRY, run_id, "generate", "diffusion_id") == diffusion_id
            urls = airflow.xcom(DURABLE_RETRY, run_id, "generate")
            assert urls
            assert all(url.startswith(f"{emulator.url}/images/{diffusion_id}/") for url in urls)

    def test_triggerer_crash_hands_deferred_generations_to_a_new_triggerer(self, crashes: Crashes) -> None:
        """
        Four generations deferred in a triggerer that is SIGKILLed; a new triggerer takes their triggers.

        Each task resumes in its first try with its own diffusion's images: the trigger rows moved
        to the new triggerer's job, and nothing was submitted again.
        """
        airflow, emulator = crashes.airflow, crashes.emulator
        with described_on_failure(airflow):
            assert airflow.wait_for_run(FANOUT_4, crashes.fanout_run, timeout=90) == "success"
            trigger_of = assert_mapped_generations(airflow, emulator, FANOUT_4, crashes.fanout_run, 4)
            assert set(trigger_of.values()) == crashes.deferred_triggers

            new_triggerers = set(triggerer_heartbeats(airflow)) - {crashes.old_triggerer}
            assert len(new_triggerers) == 1, new_triggerers  # the killed one's row stays, never ended
            new_triggerer = new_triggerers.pop()
            for index, trigger_id in trigger_of.items():
                # The row was seen taken over (the diffusions still rendered for seconds after)...
                assert owners_of(airflow, trigger_id) == [crashes.old_triggerer, new_triggerer]
                # ... and the new one ran it and fired its event.
                logs = trigger_logs(airflow, FANOUT_4, crashes.fanout_run, index)
                assert_fired_by(logs, new_triggerer, killed=crashes.old_triggerer)

    def test_no_duplicate_submission_and_no_key_anywhere_after_the_crashes(self, crashes: Crashes) -> None:
        """Once everything ended: one submission per generation, and the key in no file and no table."""
        airflow, emulator = crashes.airflow, crashes.emulator
        with described_on_failure(airflow):
            for run_id in crashes.retry_runs.values():
                assert airflow.wait_for_run(DURABLE_RETRY, run_id, timeout=90) == "success"
            assert airflow.wait_for_run(FANOUT_4, crashes.fanout_run, timeout=90) == "success"
            assert emulator.stats()["submissions"] == len(KILL_MODES) + 4
            mode = next(iter(KILL_MODES))
            assert_key_nowhere(
                airflow, emulator.api_key, diffusion_id=crashes.stored_ids[mode], prompt=crashes.prompts[mode]
            )


# -- PostgreSQL: two triggerers, one killed ---------------------------------------------------------


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """
    A fresh PostgreSQL database at 127.0.0.1:5432, dropped afterwards; skip if there is no server.

    Airflow also opens the metadata database through an async engine, with ``asyncpg`` for
    PostgreSQL (``airflow.settings``): without it every component dies at start, so say that
    plainly instead of failing in the deployment's logs.
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database())
        except DatabaseUnavailable as exc:
            pytest.skip(f"{exc}; this test needs it")
        if importlib.util.find_spec("asyncpg") is None:
            pytest.fail("asyncpg is not installed: Airflow needs it for a PostgreSQL metadata database")
        yield url


def test_two_triggerers_on_postgres_one_killed(postgres_url: str) -> None:
    """
    20 generations deferred over two triggerers (HA, PostgreSQL); one is SIGKILLed; all 20 succeed.

    ``[triggerer] capacity`` is 10, so the 20 triggers must spread 10/10 over the two. The
    survivor takes the killed one's triggers once that one's heartbeat is older than the health
    check threshold and it has free capacity (as its own generations finish). Exactly 20
    submissions; then the key is searched in every column of every table and every file.
    """
    settings = {"AIRFLOW__TRIGGERER__CAPACITY": "10", "AIRFLOW__CORE__PARALLELISM": "6"}
    with contextlib.ExitStack() as stack:
        # All 20 are deferred and polled 12-17 s after the trigger on 2 cores: 24 s leaves a margin.
        emulator = stack.enter_context(keyed_emulator(latency=24.0))
        airflow = AirflowDeployment(
            DAGS,
            extra_env={**emulator.airflow_env(), **settings},
            database_url=postgres_url,
            components=(*COMPONENTS, "triggerer-2"),
            keep_home=KEEP_HOME,
        )
        stack.callback(lambda: print(f"postgres HA: {airflow.report()}"))
        stack.enter_context(airflow)
        stack.enter_context(described_on_failure(airflow))

        airflow.wait_until_parsed(FANOUT_20)
        run_id = airflow.trigger(FANOUT_20)

        def spread_over_both() -> Counter[int] | None:
            still_rendering(emulator, 20)
            if mapped_states(airflow, FANOUT_20, run_id) != {"deferred": 20}:
                return None
            owners = Counter(row["triggerer_id"] for row in trigger_rows(airflow))
            return owners if owners.total() == 20 and None not in owners and len(owners) == 2 else None

        owners = airflow.wait_for(spread_over_both, 90, "20 deferred generations on two triggerers")
        assert sorted(owners.values()) == [10, 10], owners
        airflow.wait_for(lambda: triggers_polling(emulator, 20), 30, "the 20 triggers to poll")
        triggers_before = {row["id"]: row["triggerer_id"] for row in trigger_rows(airflow)}
        airflow.kill("triggerer-2")  # returns once the process is gone: it beats no more
        killed_at = time.monotonic() - airflow.started_at
        after_kill = triggerer_heartbeats(airflow)

        # Which job was triggerer-2: the one whose heartbeat stopped (a job row records no PID).
        def silent_one() -> tuple[int, int] | None:
            now = triggerer_heartbeats(airflow)
            beating = {job for job in after_kill if now.get(job) != after_kill[job]}
            silent = set(after_kill) - beating
            return (silent.pop(), beating.pop()) if len(silent) == len(beating) == 1 else None

        killed, survivor = airflow.wait_for(
            silent_one, 15, "the live triggerer's next heartbeat", check=("scheduler", "triggerer")
        )
        assert airflow.wait_for_run(FANOUT_20, run_id, timeout=120) == "success"

        print(f"\npostgres HA: owners {dict(owners)}, killed job {killed} at {killed_at:.1f} s")
        trigger_of = assert_mapped_generations(airflow, emulator, FANOUT_20, run_id, 20)
        assert set(trigger_of.values()) == set(triggers_before)
        # The killed one's triggers moved to the survivor; the survivor's never moved. Told by the
        # trigger logs: the survivor takes the orphans only as its own generations end, when theirs
        # are done too, so it fires them at once and their moved rows may live less than a sample.
        taken_over = 0
        for index, trigger_id in trigger_of.items():
            owner = triggers_before[trigger_id]
            assert owner in (killed, survivor)
            logs = trigger_logs(airflow, FANOUT_20, run_id, index)
            assert_fired_by(logs, survivor, killed=killed if owner == killed else None)
            taken_over += owner == killed
        assert taken_over == 10
        assert emulator.stats()["submissions"] == 20
        diffusion = emulator.diffusions()[0]
        assert_key_nowhere(
            airflow, emulator.api_key, diffusion_id=diffusion["id"], prompt=diffusion["prompt"]
        )
