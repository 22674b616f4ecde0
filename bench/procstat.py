"""CPU time and system calls of a process from /proc, for the harness (bench/run.py) and its clients
(bench/clients.py)."""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    """The pids of a process's children, from the kernel's list (/proc/<pid>/task/<pid>/children), or []."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def syscalls(pid: int) -> tuple[int, int] | None:
    """(read-type, write-type) system calls a process has made so far, from /proc/<pid>/io, or None."""
    try:
        with open(f"/proc/{pid}/io") as f:
            fields = dict(line.split(": ", 1) for line in f.read().splitlines())
        return int(fields["syscr"]), int(fields["syscw"])
    except (OSError, KeyError, ValueError):
        return None
