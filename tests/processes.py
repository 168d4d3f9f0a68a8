"""Finding the processes a test started, by a mark in their environment."""

import os


def processes_with(mark) -> list[int]:
    """Live processes whose environment carries ``CNNGENRE_TEST_MARK=mark`` (a zombie's environment reads
    empty)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                if f"CNNGENRE_TEST_MARK={mark}".encode() in handle.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found
