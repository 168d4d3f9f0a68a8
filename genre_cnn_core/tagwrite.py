"""Writing tags so that a kill at any moment leaves the old file or the new one, never a damaged one.

beets writes tags with mediafile, which saves them with mutagen in place:
when they outgrow the room the file keeps for them, mutagen moves
everything after them, the whole audio of a large file, and a process
killed meanwhile leaves a file that does not decode. Neither beets nor
mediafile nor mutagen offers a write that cannot leave a damaged file,
hence this module. It does not write tags itself: the caller's writer
(beets' ``Item.write``, which sends beets' ``write`` and ``after_write``
events; by default mediafile) writes them, and this module chooses where:

- on the file itself when saving the tags there changes no byte outside
  the room they have. That is found out first, by letting mediafile save
  the same tags, as beets would (mutagen's default padding), into a
  stand-in for the file that records what would be written: the save only
  counts as fitting if it neither grows nor shrinks the file, and the
  bytes it changes lie within one page of the file (4 KiB, file-aligned:
  the write of a killed process stops only at a page boundary), or in an
  ID3 tag (MP3, and WAVE, AIFF and DSF files that hold one), whose size
  and place stay, so that a kill can garble the tags but never the audio
  or where it starts;
- otherwise (no room, too much padding, a FLAC, Ogg, MP4 or ASF change
  spanning pages, where a torn write would break the metadata chain, a
  page checksum or an atom size; APEv2 formats, which mutagen truncates to
  write) on a temporary copy next to the file, whose audio is then checked
  against the original's, flushed to disk and renamed over the file, with
  its owner, mode and extended attributes.

A power cut is another matter: only that copy is flushed to disk before it
takes the file's place; in-place writes are left to the system, as beets
leaves them.

Hard links: renaming a copy over one name would leave the file's other names
with the old tags and the old inode, so a file with several links is written
in place when its tags fit, and refused otherwise.

Symbolic links: the file they point to is written and the link is kept.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping

import mediafile
import mutagen

from .container import audio_identity, container_problem

try:
    import fcntl
except ImportError:  # Windows: no locks, and a copy left behind always counts as stale
    fcntl = None

IN_PLACE = "in place"
REWRITTEN = "rewritten"

#: A process killed during a write stops at a page boundary: bytes within
#: one page are written all or not at all.
_PAGE = 4096

#: mediafile's names of the formats whose tags are one ID3 block of fixed
#: size and place (at the start of MP3, in its own chunk of WAVE and AIFF,
#: at the end of DSF): garbled, it garbles no audio.
_ID3_BLOCK_TYPES = {"mp3", "wav", "aiff", "dsf"}

#: A save that would write more than this in place is not a tag edit
#: mutagen would make without moving data; it goes through a copy.
_MAX_RECORDED = 64 << 20

_TEMP_MARK = ".cnngenre-tmp"
_TEMP_NAME = re.compile(r"^\..+" + re.escape(_TEMP_MARK) + r"(\.[^.]*)?$")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class TagWriteRefused(OSError):
    """Tags were not written because that could damage the file.

    ``str(error)`` is a one-line reason. The file is as it was.
    """


def write_tags(path, tags: Mapping, write: Callable[[str | None], None] | None = None, *,
               id3v23: bool = False) -> str:
    """Write tags to a file so that a kill at any moment leaves it whole.

    Parameters
    ----------
    path : str or os.PathLike
        The file; a symbolic link is followed and kept.
    tags : mapping
        The tags ``write`` sets, as :meth:`mediafile.MediaFile.update` takes
        them (``{"genres": ["Jazz"], "comments": None}``: None removes a
        tag). Used to find out beforehand whether they fit in place.
    write : callable, optional
        Writes ``tags``, called once: with None to write the file itself
        (when they fit in place), or with the path of a temporary copy of
        it. beets' ``Item.write(path=...)`` is such a writer. By default
        mediafile writes them.
    id3v23 : bool
        Write ID3v2.3 rather than ID3v2.4 tags to MP3 files, as beets'
        ``id3v23`` option does (``write`` must do the same).

    Returns
    -------
    str
        ``"in place"`` when the tags fitted in the room the file had for
        them, ``"rewritten"`` when the file was replaced by the written copy
        (which keeps room for later writes).

    Raises
    ------
    TagWriteRefused
        When the container is inconsistent (see
        :func:`~genre_cnn_core.container.container_problem`), a hard-linked
        file's tags do not fit in place, no temporary copy can be made next
        to the file, another write to the same file is in progress, or the
        copy's audio differs from the original's. The file is untouched.
    mediafile.UnreadableFileError
        When mediafile cannot read or write the file's tags.
    OSError
        When the file cannot be read or written (missing, not writable,
        immutable, disk full); the file is untouched.
    Exception
        Whatever ``write`` raises; a copy it was writing is removed.
    """
    target = os.path.realpath(path)
    status = os.stat(target)
    if not stat.S_ISREG(status.st_mode):
        raise TagWriteRefused("not a regular file")
    problem = container_problem(target)
    if problem:
        raise TagWriteRefused(f"inconsistent container: {problem}")
    if write is None:
        def write(where):
            media = mediafile.MediaFile(where or target, id3v23=id3v23)
            media.update(tags)
            media.save()
    temp = _temp_path(target)
    _remove_stale_copy(temp)
    with open(target, "r+b") as file:  # a read-only or immutable file is refused here, not replaced
        fits = _fits_in_place(_Recorder(file, target), tags, id3v23)
    if fits:
        write(None)
        return IN_PLACE
    if status.st_nlink > 1:
        raise TagWriteRefused(f"the tags do not fit in place and the file has {status.st_nlink} hard links, "
                              "which a new copy would split")
    _rewrite(target, status, temp, write)
    return REWRITTEN


def remove_leftover_copies(folders: Iterable) -> list[str]:
    """Remove the temporary copies that killed writes left in these folders.

    A write in progress holds a lock on its copy and is left alone. A folder
    that cannot be listed is passed over.

    Returns
    -------
    list of str
        The paths removed.
    """
    removed = []
    for folder in map(os.fsdecode, folders):
        try:
            with os.scandir(folder) as entries:
                names = [entry.name for entry in entries if _TEMP_NAME.match(entry.name)]
        except OSError:
            continue
        for name in names:
            temp = os.path.join(folder, name)
            with contextlib.suppress(OSError):  # TagWriteRefused: a write in progress
                if _remove_stale_copy(temp):
                    removed.append(temp)
    return removed


class _NoRoom(mutagen.MutagenError):
    """The new tags do not fit; a MutagenError, which mediafile reports quietly (others it logs as errors)."""


class _Recorder:
    """A file object that reads a file and keeps what is written to it, refusing to grow or shrink it.

    mutagen and mediafile accept any file object; reads see the recorded
    writes, so mutagen works as it would on the file itself.
    """

    def __init__(self, file, name: str):
        self.file = file
        self.name = name
        self.size = os.fstat(file.fileno()).st_size
        self.position = 0
        self.writes: list[tuple[int, bytes]] = []
        self.recorded = 0
        self.refusal: str | None = None  # why the save cannot be made in place

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return True

    def fileno(self):
        raise io.UnsupportedOperation("fileno")  # mutagen's mmap moves would bypass the recording

    def tell(self):
        return self.position

    def seek(self, offset, whence=os.SEEK_SET):
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self.position = base + offset
        return self.position

    def read(self, size=-1):
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        data = self._bytes(self.position, end)
        self.position += len(data)
        return data

    def refuse(self, reason: str):
        self.refusal = reason
        raise _NoRoom(reason)

    def write(self, data):
        data = bytes(data)
        if self.position + len(data) > self.size:
            self.refuse("the tags would grow the file")
        self.recorded += len(data)
        if self.recorded > _MAX_RECORDED:
            self.refuse("the save would rewrite too much of the file")
        if data:
            self.writes.append((self.position, data))
        self.position += len(data)
        return len(data)

    def truncate(self, size=None):
        size = self.position if size is None else size
        if size != self.size:  # mutagen "truncates" at the end when there is no ID3v1 tag to update
            self.refuse("the tags would change the file's size")
        return size

    def flush(self):
        pass

    def _bytes(self, start: int, end: int) -> bytes:
        """The file's bytes from ``start`` to ``end`` as the recorded writes leave them."""
        if end <= start:
            return b""
        self.file.seek(start)
        data = self.file.read(end - start)
        if not self.writes:
            return data
        data = bytearray(data)
        for offset, written in self.writes:
            low, high = max(start, offset), min(end, offset + len(written))
            if low < high:
                data[low - start:high - start] = written[low - offset:high - offset]
        return bytes(data)

    def changed_pages(self) -> set[int]:
        """The pages of the file (:data:`_PAGE` bytes, file-aligned) whose bytes the recorded writes change."""
        spans = []
        for offset, written in sorted(self.writes):
            end = offset + len(written)
            if spans and offset <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], end)
            else:
                spans.append([offset, end])
        pages = set()
        for start, end in spans:
            self.file.seek(start)
            old, new = memoryview(self.file.read(end - start)), memoryview(self._bytes(start, end))
            for page in range(start // _PAGE, (end - 1) // _PAGE + 1):
                low, high = max(start, page * _PAGE) - start, min(end, (page + 1) * _PAGE) - start
                if old[low:high] != new[low:high]:
                    pages.add(page)
        return pages


def _fits_in_place(recorder: _Recorder, tags: Mapping, id3v23: bool) -> bool:
    """Whether saving ``tags`` as beets does changes no byte of the file outside the room they have."""
    media = mediafile.MediaFile(recorder, id3v23=id3v23)
    media.update(tags)
    recorder.seek(0)  # where a file mutagen opens itself would be
    try:
        media.save()  # mutagen's default padding, as beets' Item.write saves
    except mediafile.UnreadableFileError:  # how mediafile passes on what mutagen raised
        if recorder.refusal:
            return False
        raise
    return len(recorder.changed_pages()) <= 1 or media.type in _ID3_BLOCK_TYPES


def _rewrite(target: str, status: os.stat_result, temp: str, write) -> None:
    """Write the tags to a copy of ``target`` and rename the copy over it."""
    identity = audio_identity(target)
    try:
        handle = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
    except OSError as error:
        raise TagWriteRefused(f"the tags do not fit in place and no temporary copy can be made next to the file "
                              f"({error.strerror})") from None
    renamed = False
    try:
        if fcntl:
            fcntl.flock(handle, fcntl.LOCK_EX)  # marks the copy as in use (see _remove_stale_copy)
        shutil.copyfile(target, temp)
        write(temp)  # mutagen's default padding leaves room for later writes
        if audio_identity(temp) != identity:
            raise TagWriteRefused("writing the tags would have changed the audio; the file is left as it was")
        _copy_owner_and_mode(target, status, temp)
        os.fsync(handle)  # the copy's data, written through other descriptors of the same file
        os.replace(temp, target)
        renamed = True
        _fsync_folder(os.path.dirname(target))
    finally:
        os.close(handle)
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temp)


def _copy_owner_and_mode(target: str, status: os.stat_result, temp: str) -> None:
    """Give the copy the original's owner (where permitted), mode and extended attributes."""
    if hasattr(os, "chown"):
        with contextlib.suppress(PermissionError):
            # Only root may give a file away; others may still set its group.
            os.chown(temp, status.st_uid if os.geteuid() == 0 else -1, status.st_gid)
    shutil.copystat(target, temp)  # mode, extended attributes and times, then:
    os.utime(temp)  # the tags changed now, as an in-place write would say


def _fsync_folder(folder: str) -> None:
    """Make a rename durable; some file systems cannot sync a folder."""
    with contextlib.suppress(OSError):
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _temp_path(target: str) -> str:
    """The hidden name of the temporary copy of ``target``, next to it.

    One fixed name per file, so that the next write finds a copy left by a
    killed one. It keeps the file's extension, which mutagen weighs when it
    guesses the format of an untagged file.
    """
    folder, name = os.path.split(target)
    raw = os.fsencode(name)
    if len(raw) > 200:  # keep within the 255 bytes a name may have
        raw = raw[:180] + b"~" + hashlib.blake2b(raw, digest_size=4).hexdigest().encode("ascii")
    extension = os.path.splitext(name)[1]
    return os.path.join(folder, "." + os.fsdecode(raw) + _TEMP_MARK + extension[:16])


def _remove_stale_copy(temp: str) -> bool:
    """Remove a temporary copy left by a killed write; whether there was one.

    A write in progress holds a lock on its copy; the lock dies with its
    process, so an unlocked copy is stale.
    """
    try:
        handle = os.open(temp, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link where the copy goes: not ours to follow
            os.unlink(temp)
            return True
        raise
    try:
        try:
            if fcntl:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TagWriteRefused("another write to this file's tags is in progress") from None
        os.unlink(temp)
        return True
    finally:
        os.close(handle)
