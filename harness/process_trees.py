"""
CPU time and memory of a deployment's process trees, sampled with psutil.

A component is a tree: the scheduler forks its LocalExecutor workers, each worker forks a task
process per try; the dag-processor forks a process per file it parses; the triggerer runs a
trigger runner and a log server. Short-lived processes (a task try lasts seconds) end between two
samples, so a tree's CPU is read the way the kernel keeps it: each live process's own time plus
the time of the children it has reaped (``children_user`` / ``children_system``, which hold
everything below them that has exited). A process that ends moves its time into its parent's
reaped time, so the total neither loses nor counts twice what it used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil

from harness.processes import process_title

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

MB = 1024 * 1024
Key = tuple[int, float]  # pid and create time: never a recycled PID


@dataclass
class ProcessRecord:
    """One process of a tree: its latest CPU times, the base they are counted from, its largest RSS."""

    pid: int
    title: str
    role: str
    parent: Key | None
    #: user + system of the process itself, at its latest sample.
    own_s: float = 0.0
    #: user + system of the children it has reaped (and of everything below them), latest sample.
    reaped_s: float = 0.0
    #: ``own_s + reaped_s`` when :meth:`ProcessTree.mark` was called (0 for a process born after it),
    #: plus the bases of exited children whose time its ``reaped_s`` has taken over.
    base_s: float = 0.0
    peak_rss: int = 0
    alive: bool = True

    @property
    def total_s(self) -> float:
        return self.own_s + self.reaped_s


@dataclass
class TreeSample:
    """A tree at one moment: CPU so far (live processes and what they reaped) and RSS now."""

    cpu_s: float
    rss: int
    processes: int


def airflow_role(proc: psutil.Process, title: str, root_pid: int) -> str:
    """
    What a process of an Airflow component does, from its title (``setproctitle``, Airflow 3.3).

    The triggerer's root is its ``supervisor`` (the database side) and its ``airflow triggerer``
    child the ``trigger runner`` (the event loop where every poll happens); a LocalExecutor worker
    is titled ``airflow worker -- LocalExecutor[: <ti id>]`` and the task process it forks
    ``airflow worker -- <ti id>``. Any other root is ``main``; anything else is named by its title.
    """
    if proc.pid == root_pid:
        return "supervisor" if title.endswith("airflow triggerer") else "main"
    if title.endswith("airflow triggerer") and proc.ppid() == root_pid:
        return "trigger runner"
    if title.startswith("airflow worker -- LocalExecutor"):
        return "executor worker"
    if title.startswith("airflow worker -- "):
        return "task process"
    return title.rsplit("/", 1)[-1][:60]


@dataclass
class ProcessTree:
    """
    Samples a process and its descendants: CPU since :meth:`mark` and RSS.

    :param root_pid: the component's process.
    :param role_of: names what a process does, from the process, its title and the root PID.
    """

    root_pid: int
    role_of: Callable[[psutil.Process, str, int], str] = airflow_role
    records: dict[Key, ProcessRecord] = field(default_factory=dict)
    peak_rss: int = 0

    def sample(self) -> TreeSample:
        """Read every live process of the tree once; note the ones that have ended since."""
        try:
            root = psutil.Process(self.root_pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            procs = []
        rss = 0
        seen: set[Key] = set()
        for proc in procs:  # parents before their children
            with contextlib.suppress(psutil.Error):
                with proc.oneshot():
                    times = proc.cpu_times()
                    memory = proc.memory_info()
                    key = (proc.pid, proc.create_time())
                    record = self.records.get(key)
                    if record is None:
                        title = process_title(proc)
                        parent = self._parent_key(proc)
                        record = self.records[key] = ProcessRecord(
                            proc.pid, title, self.role_of(proc, title, self.root_pid), parent
                        )
                record.own_s = times.user + times.system
                record.reaped_s = times.children_user + times.children_system
                record.peak_rss = max(record.peak_rss, memory.rss)
                rss += memory.rss
                seen.add(key)
        for key, record in self.records.items():
            if record.alive and key not in seen:
                self._ended(record)
        self.peak_rss = max(self.peak_rss, rss)
        return TreeSample(self.cpu_s(), rss, len(seen))

    def _parent_key(self, proc: psutil.Process) -> Key | None:
        with contextlib.suppress(psutil.Error):
            parent = proc.parent()
            if parent is not None:
                key = (parent.pid, parent.create_time())
                return key if key in self.records else None
        return None

    def _ended(self, record: ProcessRecord) -> None:
        """
        A process has ended: its time is now in the reaped time of its nearest live ancestor, all of
        it, so that ancestor takes over its base too (what it had used before :meth:`mark`).
        """
        record.alive = False
        ancestor = self.records.get(record.parent) if record.parent else None
        while ancestor is not None and not ancestor.alive:
            ancestor = self.records.get(ancestor.parent) if ancestor.parent else None
        if ancestor is not None:
            ancestor.base_s += record.base_s

    def mark(self) -> None:
        """
        Start counting CPU and peak RSS from now: what was used so far is left out, and processes
        that ended before now are forgotten (their time is in a live ancestor's, left out too).
        """
        self.records = {key: record for key, record in self.records.items() if record.alive}
        for record in self.records.values():
            record.base_s = record.total_s
            record.peak_rss = 0
        self.peak_rss = 0

    def cpu_s(self) -> float:
        """CPU seconds of the tree as of the last sample (live processes and what they reaped)."""
        return sum(record.total_s for record in self.records.values() if record.alive)

    def run_cpu_s(self, role: str | None = None) -> float:
        """
        CPU seconds since :meth:`mark`, by the whole tree or by the live processes of one role
        (with what they reaped: a LocalExecutor worker's holds its ended task processes).
        """
        return sum(
            record.total_s - record.base_s
            for record in self.records.values()
            if record.alive and (role is None or record.role == role)
        )

    def breakdown(self) -> list[dict[str, Any]]:
        """
        Each process seen since :meth:`mark`: role, pid, title, whether it is alive, CPU s since the
        mark (its own and what it reaped; for an ended one, up to its last sample), the reaped part
        in all, and its peak RSS MB.
        """
        return [
            {
                "role": record.role,
                "pid": record.pid,
                "title": record.title[:120],
                "alive": record.alive,
                "cpu_s": round(record.total_s - record.base_s, 3),
                "reaped_cpu_s": round(record.reaped_s, 3),
                "peak_rss_mb": round(record.peak_rss / MB, 1),
            }
            for record in self.records.values()
        ]


@dataclass
class DeploymentTrees:
    """
    Every component's tree (``api-server``, ``scheduler`` with its workers and task processes,
    ``dag-processor``, ``triggerer``), sampled together: the deployment's CPU, by component.

    :param roots: component name -> root PID.
    """

    roots: Mapping[str, int]
    trees: dict[str, ProcessTree] = field(init=False)

    def __post_init__(self) -> None:
        self.trees = {name: ProcessTree(pid) for name, pid in self.roots.items()}

    def sample(self) -> float:
        """Sample every tree; return the CPU seconds since :meth:`mark`, all components."""
        for tree in self.trees.values():
            tree.sample()
        return self.run_cpu_s()

    def mark(self) -> None:
        for tree in self.trees.values():
            tree.mark()

    def cpu_s(self) -> float:
        """CPU seconds of every tree so far (not since :meth:`mark`), as of the last sample."""
        return sum(tree.cpu_s() for tree in self.trees.values())

    def run_cpu_s(self) -> float:
        return sum(tree.run_cpu_s() for tree in self.trees.values())

    def by_component(self) -> dict[str, float]:
        """CPU seconds since :meth:`mark`, per component."""
        return {name: tree.run_cpu_s() for name, tree in self.trees.items()}
