"""
``harness.process_trees`` on real processes: CPU since a mark, children that end, roles.

A deployment's task processes live seconds, so most end between two samples: their CPU must
still be counted (in the reaped time of the worker that waited for them), and counted once.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from harness.process_trees import DeploymentTrees, ProcessTree

#: Reads commands on stdin: ``burn S`` burns S CPU seconds itself, ``child S`` runs a child that
#: burns S CPU seconds and waits for it (so its time becomes the parent's reaped time); ``start S``
#: starts a child that burns S CPU seconds and then sleeps, ``reap`` kills and reaps it.
PARENT = """
import subprocess, sys, time
BURN = (
    "import sys, time\\nend = time.process_time() + float(sys.argv[1])\\n"
    "while time.process_time() < end: pass"
)
sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
print("ready", flush=True)
for line in sys.stdin:
    command, seconds = line.split()
    if command == "burn":
        end = time.process_time() + float(seconds)
        while time.process_time() < end:
            pass
    elif command == "child":
        subprocess.run([sys.executable, "-c", BURN, seconds], check=True)
    elif command == "start":
        running = subprocess.Popen(
            [sys.executable, "-c", BURN + "\\nprint('burnt', flush=True)\\ntime.sleep(60)", seconds],
            stdout=subprocess.PIPE,
        )
        running.stdout.readline()  # it has burnt its CPU, however busy the machine
    elif command == "reap":
        running.kill()
        running.wait()
    print("done", flush=True)
sleeper.kill()
"""


@pytest.fixture
def parent():
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"

    def command(line: str) -> None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"

    try:
        yield proc, command
    finally:
        proc.kill()
        proc.wait(timeout=10)


def settled_tree(pid: int, processes: int) -> ProcessTree:
    """A tree sampled until it sees ``processes`` processes (the child starts a moment later)."""
    tree = ProcessTree(pid)
    deadline = time.monotonic() + 10
    while tree.sample().processes < processes and time.monotonic() < deadline:
        time.sleep(0.05)
    return tree


def test_counts_cpu_since_mark_and_sees_children(parent):
    proc, command = parent
    tree = settled_tree(proc.pid, 2)
    first = tree.sample()
    assert first.processes == 2
    assert first.rss > 0
    tree.mark()
    assert tree.run_cpu_s() == pytest.approx(0.0, abs=1e-6)
    command("burn 0.3")
    after = tree.sample()
    assert 0.25 <= tree.run_cpu_s() <= after.cpu_s
    assert tree.run_cpu_s("main") == pytest.approx(tree.run_cpu_s(), abs=0.05)
    assert tree.peak_rss >= after.rss > 0
    roles = {row["pid"]: row["role"] for row in tree.breakdown()}
    assert roles[proc.pid] == "main"
    assert len(roles) == 2


def test_a_child_that_ended_between_samples_is_counted_once(parent):
    """Never sampled alive: its time appears in the parent's reaped time, and only there."""
    proc, command = parent
    tree = settled_tree(proc.pid, 2)
    tree.mark()
    command("child 0.4")
    tree.sample()
    assert 0.35 <= tree.run_cpu_s() <= 0.4 + 0.3  # the child's interpreter start-up adds a little
    assert tree.run_cpu_s("main") == pytest.approx(tree.run_cpu_s(), abs=0.05)


def test_a_child_seen_alive_then_reaped_is_counted_once(parent):
    """Sampled alive (its own time), then reaped (the parent's reaped time): no double count."""
    proc, command = parent
    tree = settled_tree(proc.pid, 2)
    tree.mark()
    command("start 0.4")
    tree.sample()
    assert tree.sample().processes == 3
    alive = tree.run_cpu_s()
    assert 0.35 <= alive <= 0.7
    command("reap 0")
    tree.sample()
    assert tree.run_cpu_s() == pytest.approx(alive, abs=0.1)
    assert [row["alive"] for row in tree.breakdown()].count(False) == 1


def test_time_used_before_the_mark_by_a_child_that_ends_later_stays_out(parent):
    proc, command = parent
    tree = settled_tree(proc.pid, 2)
    command("start 0.4")
    tree.sample()
    tree.mark()  # the running child has used about 0.4 s by now: not the run's
    command("reap 0")
    tree.sample()
    assert tree.run_cpu_s() == pytest.approx(0.0, abs=0.1)
    assert len(tree.breakdown()) == 3
    tree.mark()  # the ended child is forgotten: a breakdown lists the processes of the window
    assert [row["alive"] for row in tree.breakdown()] == [True, True]


def test_deployment_trees_add_up_components(parent):
    proc, command = parent
    trees = DeploymentTrees({"one": proc.pid})
    trees.sample()
    trees.mark()
    command("burn 0.2")
    assert trees.sample() == pytest.approx(trees.by_component()["one"])
    assert 0.15 <= trees.run_cpu_s() <= trees.cpu_s()


def test_a_tree_whose_root_is_gone_samples_empty():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=10)
    tree = ProcessTree(proc.pid)
    assert tree.sample().processes == 0
    assert tree.run_cpu_s() == 0
