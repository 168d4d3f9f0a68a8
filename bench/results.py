"""What every benchmark reports with: its section of ``bench/RESULTS.md``,
tables, and the machine and commit it measured.

Each benchmark script writes one section of ``RESULTS.md`` (``## Speed``,
``## Accuracy``, ...) and leaves the others as they are.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
#: The shared data beside the checkout (never part of it).
DATA = Path(os.environ.get("CNNGENRE_DATA", REPO.parent / "shared" / "data"))


def table(header: list, rows: list) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores and memory of this machine (from ``lscpu`` and ``/proc/meminfo``)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(re.findall(r"^([^:\n]+):\s*(.+)$", text, flags=re.MULTILINE))
    model = fields.get("Model name", platform.processor() or "unknown CPU").strip()
    memory = "unknown"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return f"{model}, {os.cpu_count()} cores, {memory} RAM"


def git_state() -> str:
    """The commit measured, and the product files changed since it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout

    changed = git("status", "--porcelain", "--", "genre_cnn_core", "beetsplug").splitlines()
    files = ", ".join(line[3:] for line in changed) or "none"
    return f"commit {git('rev-parse', '--short', 'HEAD').strip()}; uncommitted changes in the product: {files}"


def command_line(script: str, argv: list | None = None) -> str:
    """How to rerun ``bench/<script>`` with the arguments it was given (``argv``, or the command line's)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"bench/{script}", *map(str, arguments)])


def context(command: str, started: float | None = None) -> str:
    """The first lines of a section: date, commit, machine, software, how to rerun it and, given the
    ``time.perf_counter()`` the run started at, its wall time (then a blank line)."""
    import numpy

    versions = [f"Python {platform.python_version()}", f"numpy {numpy.__version__}"]
    try:
        import torch

        versions.append(f"torch {torch.__version__}")
    except ImportError:
        pass
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = (f"- run: {date}, {git_state()}\n- machine: {machine()}; {', '.join(versions)}\n"
             f"- rerun: `{command}`\n")
    if started is not None:
        lines += f"- wall time: {(time.perf_counter() - started) / 60:.1f} min\n\n"
    return lines


def replace_section(document: str, heading: str, body: str) -> str:
    """Put ``body`` under ``heading``, replacing that section or appending it.

    A section runs from its heading to the next heading of the same or a
    higher level.
    """
    level = len(heading) - len(heading.lstrip("#"))
    section = f"{heading}\n\n{body.strip()}\n"
    lines = document.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        return (document.rstrip() + "\n\n" if document.strip() else "# Benchmarks\n\n") + section
    end = len(lines)
    for i in range(start + 1, len(lines)):
        match = re.match(r"(#+)\s", lines[i])
        if match and len(match.group(1)) <= level:
            end = i
            break
    after = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + after if after else "")


def write_section(heading: str, body: str, path: Path = RESULTS, problems: Sequence = ()) -> str:
    """Write ``body`` as the ``heading`` section of ``path`` (RESULTS.md), atomically, with what went wrong
    during the run (``problems``) if anything; return the section's text."""
    if problems:
        body += "\n### Problems seen during the run\n\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)  # a quick run's file under bench/out/
    document = path.read_text() if path.exists() else ""
    temp = path.with_suffix(".tmp")
    temp.write_text(replace_section(document, heading, body))
    os.replace(temp, path)
    return body


def use_this_checkout() -> None:
    """Import the product from this checkout, not from an installed copy (the venv may hold an editable
    install of another checkout). Each benchmark's ``main`` calls it first; importing a benchmark module
    changes nothing."""
    if sys.path[:1] != [str(REPO)]:
        sys.path.insert(0, str(REPO))
