"""Files that misbehave, for the tests: a FIFO that never hangs a test, a file that counts what is read."""

import contextlib
import os
import threading


@contextlib.contextmanager
def fifo_at(path):
    """Make a FIFO at ``path`` for the block. Should anything block opening it for reading, a writer
    comes after a while and closes at once, so the test fails on its result instead of hanging."""
    os.mkfifo(path)
    stop = threading.Event()

    def unblock():
        stop.wait(5.0)
        while not stop.is_set():
            with contextlib.suppress(OSError):  # no reader is blocked on it
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            stop.wait(0.2)

    watchdog = threading.Thread(target=unblock, daemon=True)
    watchdog.start()
    try:
        yield path
    finally:
        stop.set()
        watchdog.join()


class CountingFile:
    """An open file whose reads add their byte counts to the list ``counts``."""

    def __init__(self, handle, counts: list):
        self.handle, self.counts = handle, counts

    def read(self, size=-1):
        data = self.handle.read(size)
        self.counts.append(len(data))
        return data

    def readinto(self, buffer):
        count = self.handle.readinto(buffer)
        self.counts.append(count)
        return count

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()
