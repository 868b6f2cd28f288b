"""Shared by the bench scripts: run a command and measure wall time, CPU and peak RSS."""

from __future__ import annotations

import importlib.util
import os
import resource
import subprocess
import sys
import threading
import time
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Run:
    wall: float
    cpu: float  # user + sys of the command and every process it waited for
    peak_rss_mb: float  # the whole process tree, sampled every 20 ms
    returncode: int
    stdout: str
    stderr: str
    # the same tree's proportional set size: a page shared by forked processes counted once in
    # all (RSS counts it in each), i.e. the memory the tree takes from the machine (proc(5))
    peak_pss_mb: float = 0.0

    def row(self, label: str) -> str:
        return (
            f"{label:<34} wall {self.wall:7.2f} s   cpu {self.cpu:7.2f} s   "
            f"peak RSS {self.peak_rss_mb:7.1f} MB   peak PSS {self.peak_pss_mb:7.1f} MB"
        )


def _tree_rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) summed over the process and all its descendants, in KiB."""
    total, pss, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return total, pss


def measure(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=True)
    peak = peak_pss = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak, peak_pss
        while not done.is_set():
            rss, pss = _tree_rss_kb(proc.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(wall, cpu, peak / 1024, proc.returncode, out, err, peak_pss / 1024)


def rss2email_venv(path: Path = Path("/tmp/digest-bench-r2e")) -> Path:
    """A throwaway venv with rss2email 3.14 (same input, same machine, same run)."""
    r2e = path / "bin" / "r2e"
    if not r2e.exists():
        venv.create(path, with_pip=True)
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", "rss2email==3.14"], check=True)
    return r2e


def digest_venv(path: Path = Path("/tmp/digest-bench-venv")) -> Path:
    """A throwaway venv with this checkout installed as a user installs it (`pip install .`):
    the same footing as rss2email, and none of the development environment's extra packages
    (trio, for one, costs httpcore 50 ms of imports when it is merely present)."""
    exe = path / "bin" / "digest"
    if not exe.exists():
        venv.create(path, with_pip=True)
        # aiosmtpd: the loopback SMTP sink the send bench mails to; it adds nothing to digest's imports.
        subprocess.run([str(path / "bin" / "pip"), "install", "-q", str(ROOT), "aiosmtpd"], check=True)
    else:  # this checkout's code as it is now; the dependencies are already there
        pip = [str(path / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall"]
        subprocess.run([*pip, str(ROOT)], check=True)
    return exe


def in_project_env() -> None:
    """Re-run the calling bench script with the bench venv's Python (`digest_venv`) when this
    interpreter lacks the project's dependencies, so `python3 bench/X.py` works on a clean machine
    as well as in a development environment."""
    if all(importlib.util.find_spec(m) for m in ("feedparser", "sqlalchemy", "httpx", "aiosmtpd")):
        return
    python = digest_venv().parent / "python"
    print(f"bench: running under {python} (this Python lacks the project's dependencies)", file=sys.stderr)
    os.execv(python, [str(python), *sys.argv])  # noqa: S606 (a fixed path and our own argv)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
