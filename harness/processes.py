"""
The deployment's processes: started, found, signalled and stopped by PID, never by name.

Each component leads a session of its own. Its process group, its descendants and every other
member of its session are remembered once seen and killed by PID (psutil checks the create time,
so a recycled PID is never hit): a task supervisor moves each task process into a process group
of its own (``setpgid``), but not out of the session. A watchdog process does the same when the
harness's own process dies without stopping the deployment (SIGKILL, a CI job timeout).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from pathlib import Path

#: Seconds to wait after each SIGTERM; some scheduler shutdowns ignore the first one (SPEC 8).
STOP_GRACE = 5.0

#: Run by the watchdog process: when its parent dies, it stops every process in the components'
#: sessions (SIGTERM, then SIGKILL) and deletes a temporary home.
_WATCHDOG = """
import os, shutil, signal, sys, time
parent, sid_file, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
while os.getppid() == parent:
    time.sleep(1)
try:
    sids = {int(line) for line in open(sid_file).read().split()}
except OSError:
    sys.exit(0)
for sig, pause in ((signal.SIGTERM, 5), (signal.SIGKILL, 0)):
    for pid in [int(name) for name in os.listdir("/proc") if name.isdigit()]:
        try:
            if os.getsid(pid) in sids:
                os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(pause)
if home:
    shutil.rmtree(home, ignore_errors=True)
"""


def process_title(proc: psutil.Process) -> str:
    """A process's title as ``ps`` shows it: ``setproctitle`` pads ``cmdline()`` with empty entries."""
    return " ".join(part for part in proc.cmdline() if part)


@dataclass
class Component:
    """One long-running ``airflow <command>`` subprocess and the file its output goes to."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: Every process seen under this component (its group leader and descendants), to kill by PID.
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, cwd: Path) -> None:
        """Start it (again), its output appended to its log, as the leader of a new session."""
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so its workers can be killed with it
            )
        self.remember()

    def remember(self) -> None:
        """
        Note the component's current processes, so they can be killed by PID even if orphaned.

        That is its descendants and anything else in its session (each component starts one): task
        processes sit in process groups of their own, and may outlive their supervisor.
        """
        if self.process is None:
            return
        leader_pid = self.process.pid
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(leader_pid)
            self.seen.setdefault(leader.pid, leader)
            for child in leader.children(recursive=True):
                self.seen.setdefault(child.pid, child)
        for pid in psutil.pids():
            with contextlib.suppress(OSError, psutil.Error):
                if pid not in self.seen and os.getsid(pid) == leader_pid:
                    self.seen[pid] = psutil.Process(pid)

    def signal_group(self, sig: int) -> None:
        """Signal the process group this component leads (its id is the leader's PID)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill_all(self) -> None:
        """SIGKILL the component's group and every process of it ever seen (by PID, never recycled)."""
        self.remember()
        self.signal_group(signal.SIGKILL)
        for proc in self.seen.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running():  # also compares the create time: never a recycled PID
                    proc.kill()

    def stop(self) -> str:
        """
        Stop it by PID: SIGTERM to it, a second SIGTERM to its group, then SIGKILL; say what it took.

        The first SIGTERM goes to the leader alone, as ``kill <pid>`` would: a scheduler then
        shuts its LocalExecutor workers down itself, whereas a group-wide SIGTERM also reaches each
        task supervisor, which forwards it to its task, and the scheduler waits for that task
        ("Signal again if you don't want to wait") -- sometimes past a second SIGTERM (SPEC 8).
        """
        process = self.process
        if process is None:
            return "never started"
        began = time.monotonic()
        self.remember()
        sent = []
        for group, grace in ((False, STOP_GRACE), (True, STOP_GRACE / 2)):
            if process.poll() is not None:
                break
            if group:
                self.signal_group(signal.SIGTERM)
            else:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            sent.append("SIGTERM(group)" if group else "SIGTERM")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        if process.poll() is None:
            sent.append("SIGKILL")
        # Whatever is left (the leader, workers or task processes it orphaned) dies now.
        self.kill_all()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        psutil.wait_procs(list(self.seen.values()), timeout=5)
        self.seen.clear()
        return f"{'+'.join(sent) or 'already exited'} in {time.monotonic() - began:.1f} s"


class Watchdog:
    """
    A process that outlives the harness's own: once that dies, it stops every component's session.

    It reads the session ids from ``sid_file`` (rewritten by :meth:`guard` at each start) and
    deletes ``home`` afterwards, if given.
    """

    def __init__(self, sid_file: Path, home: Path | None) -> None:
        self.sid_file = sid_file
        self.home = home
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.sid_file), str(self.home or "")],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal must not kill it before the others
        )

    def guard(self, components: list[Component]) -> None:
        """Tell the watchdog which sessions are ours (each component leads its own)."""
        sids = [str(c.process.pid) for c in components if c.process is not None]
        self.sid_file.write_text("\n".join(sids))

    def stop(self) -> None:
        """Everything is stopped: it has nothing left to guard."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


@dataclass(frozen=True)
class TaskProcesses:
    """The two processes of one running try (see :func:`find_task_processes`)."""

    ti_id: str  # task_instance.id: a new UUID for every try
    supervisor: psutil.Process  # a LocalExecutor worker, titled "airflow worker -- LocalExecutor: <id>"
    runner: psutil.Process  # its forked child that runs execute(), titled "airflow worker -- <id>"


def find_task_processes(scheduler_pid: int, ti_id: str, ti_pid: int | None) -> TaskProcesses | None:
    """
    The processes running one try, found among the scheduler's descendants by their titles.

    How LocalExecutor runs a task on Airflow 3.3 (``executors/local_executor.py``,
    ``sdk/execution_time/supervisor.py`` and ``task_runner.py``): the scheduler forks
    ``[core] parallelism`` worker processes; the worker that takes the task runs its supervisor
    in-process and retitles itself ``airflow worker -- LocalExecutor: <ti id>``; the supervisor
    forks the task runner (a process group of its own), which retitles itself
    ``airflow worker -- <ti id>`` on startup and runs ``execute()``. ``<ti id>`` is
    ``task_instance.id`` in its dashed form, new for every try, so an exact title match is the
    current try's runner and nothing else (the supervisor's title holds the id too, hence exact).
    The runner's PID is also ``task_instance.pid`` (``ti_pid``) once the try runs; it must agree.
    Titles are set with ``setproctitle``: psutil shows them as the first ``cmdline()`` entry,
    padded with empty ones.
    """
    try:
        descendants = psutil.Process(scheduler_pid).children(recursive=True)
    except psutil.Error:
        return None
    for proc in descendants:
        with contextlib.suppress(psutil.Error):
            if process_title(proc) == f"airflow worker -- {ti_id}" and ti_pid in (None, proc.pid):
                supervisor = proc.parent()
                if supervisor is not None and process_title(supervisor).endswith(f": {ti_id}"):
                    return TaskProcesses(ti_id, supervisor, proc)
    return None
