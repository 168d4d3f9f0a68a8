"""Crash-safe tag writes through beets: in place when the tags fit, through a renamed copy otherwise, refused
when unsafe; beets' events fire; one warning per file; leftover copies removed; -W then -w."""

import contextlib
import fcntl
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mediafile
import mutagen
import numpy as np
import pytest
import soundfile as sf
from beets.library import Item
from beets.test.helper import PluginTestHelper
from beets.util import cached_classproperty

from beetsplug.cnngenre.writing import write_item
from genre_cnn_core.container import audio_identity
from genre_cnn_core.tagwrite import IN_PLACE, REWRITTEN, TagWriteRefused, write_tags

from synth import synth_track, tag, write_audio

FORMATS = ("wav", "flac", "ogg", "mp3", "aiff", "opus", "m4a")
SR = 22050
ROOT = Path(__file__).resolve().parent.parent


TAGS = {"genre": "Jazz", "comments": "written by cnngenre"}
PREDICTION = {"cnn_genre": "jazz", "cnn_genre_score": 0.87, "comments": "written by cnngenre"}


@pytest.fixture(autouse=True)
def _fresh_field_types():
    """beets caches a model's field types on first use: those of a test that used Item without the plugin
    must not be the types of one that loads it."""
    yield
    cached_classproperty.cache.clear()


def write_like_cnngenre(path):
    """What `beet cnngenre -w` does to a file whose tags lag: beets' Item.write, through write_item."""
    item = Item.from_path(str(path))
    item.update(PREDICTION)
    return write_item(item)


def sha(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def leftovers(folder, *keep):
    """Files in ``folder`` other than ``keep``: temporary copies left behind."""
    return sorted(set(os.listdir(folder)) - {os.path.basename(name) for name in keep})


def without_padding(path):
    """Tags that fill their room exactly: the next bigger tag cannot fit in place."""
    tag(path, genre="Rock", artist="Someone", title="Something")
    mutagen.File(path).save(padding=lambda info: 0)


@pytest.fixture(scope="module")
def masters(tmp_path_factory):
    folder = tmp_path_factory.mktemp("masters")
    paths = {}
    for ext in FORMATS:
        paths[ext] = str(folder / f"track.{ext}")
        write_audio(paths[ext], synth_track("techno", seed=1, seconds=6.0, sr=SR), SR)
    return paths


def copy_of(masters, folder, ext, name=None):
    path = str(Path(folder) / (name or f"track.{ext}"))
    shutil.copyfile(masters[ext], path)
    return path


# -- Both ways ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", FORMATS)
def test_in_place_when_the_tags_fit(masters, tmp_path, ext):
    path = copy_of(masters, tmp_path, ext)
    tag(path, genre="Rock", artist="Someone", title="Something")  # mutagen leaves padding
    before = os.stat(path)
    identity = audio_identity(path)
    assert write_tags(path, TAGS) == IN_PLACE
    after = os.stat(path)
    assert (after.st_ino, after.st_size) == (before.st_ino, before.st_size)
    media = mediafile.MediaFile(path)
    assert (media.genre, media.comments, media.artist) == ("Jazz", "written by cnngenre", "Someone")
    assert audio_identity(path) == identity
    assert leftovers(tmp_path, path) == []


@pytest.mark.parametrize("ext", FORMATS)
def test_rewritten_when_the_tags_do_not_fit(masters, tmp_path, ext):
    path = copy_of(masters, tmp_path, ext)
    without_padding(path)
    before = os.stat(path)
    identity = audio_identity(path)
    assert write_tags(path, TAGS) == REWRITTEN
    assert os.stat(path).st_ino != before.st_ino
    media = mediafile.MediaFile(path)
    assert (media.genre, media.comments, media.artist) == ("Jazz", "written by cnngenre", "Someone")
    assert audio_identity(path) == identity
    assert leftovers(tmp_path, path) == []
    # The copy kept room for later writes of the same size.
    inode = os.stat(path).st_ino
    assert write_tags(path, {"genre": "Blues"}) == IN_PLACE
    assert os.stat(path).st_ino == inode


def with_picture(path, padding):
    """A 60 KB picture, which mutagen stores after the other tags (ID3 sorts frames by size)."""
    media = mediafile.MediaFile(path)
    media.images = [mediafile.Image(data=b"\xff\xd8\xff\xe0" + random.Random(0).randbytes(60_000))]
    media.genre = "Rock"
    media.save(padding=lambda info: padding)


def test_change_spanning_pages_of_flac_is_rewritten(masters, tmp_path):
    """A torn write there would break the metadata chain: in place only within one page."""
    path = copy_of(masters, tmp_path, "flac")
    with_picture(path, padding=8_000)
    inode = os.stat(path).st_ino
    assert write_tags(path, {"genre": "Funk"}) == IN_PLACE  # same length
    assert os.stat(path).st_ino == inode
    assert write_tags(path, TAGS) == REWRITTEN  # longer: the picture after the comments moves
    media = mediafile.MediaFile(path)
    assert media.genre == "Jazz" and len(media.images[0].data) == 60_004


def test_change_spanning_pages_of_an_id3_tag_is_in_place(masters, tmp_path):
    """An ID3 tag keeps its size and place: torn, it garbles no audio."""
    path = copy_of(masters, tmp_path, "mp3")
    with_picture(path, padding=8_000)
    inode = os.stat(path).st_ino
    identity = audio_identity(path)
    assert write_tags(path, TAGS) == IN_PLACE
    assert os.stat(path).st_ino == inode and audio_identity(path) == identity
    media = mediafile.MediaFile(path)
    assert media.genre == "Jazz" and len(media.images[0].data) == 60_004


def test_more_padding_than_mutagen_keeps_is_rewritten(masters, tmp_path):
    """beets saves with mutagen's default padding, which shrinks a large one: that would move the audio."""
    path = copy_of(masters, tmp_path, "flac")
    tag(path, genre="Rock")
    mutagen.File(path).save(padding=lambda info: 200_000)
    identity, size = audio_identity(path), os.path.getsize(path)
    assert write_tags(path, TAGS) == REWRITTEN
    assert audio_identity(path) == identity and os.path.getsize(path) < size - 150_000  # the copy kept less


def test_the_same_tags_again_change_no_byte(masters, tmp_path):
    path = copy_of(masters, tmp_path, "ogg")
    tag(path, genre="Rock")
    assert write_tags(path, TAGS) == IN_PLACE
    before, inode = sha(path), os.stat(path).st_ino
    assert write_tags(path, TAGS) == IN_PLACE
    assert sha(path) == before and os.stat(path).st_ino == inode


def test_untagged_wav_and_aiff_are_rewritten(masters, tmp_path):
    """mutagen adds the ID3 chunk before it asks about padding: never in place."""
    for ext in ("wav", "aiff"):
        path = copy_of(masters, tmp_path, ext)
        assert write_tags(path, TAGS) == REWRITTEN
        assert mediafile.MediaFile(path).genre == "Jazz"


def test_rewrite_decodes_to_the_same_samples(masters, tmp_path):
    path = copy_of(masters, tmp_path, "flac")
    without_padding(path)
    before, _ = sf.read(path, dtype="int16")
    assert write_tags(path, TAGS) == REWRITTEN
    after, _ = sf.read(path, dtype="int16")
    np.testing.assert_array_equal(before, after)


def test_id3v23(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    write_tags(path, TAGS, id3v23=True)
    assert mutagen.File(path).tags.version[:2] == (2, 3)
    assert mediafile.MediaFile(path).genre == "Jazz"


# -- What a rewrite keeps ---------------------------------------------------------------------------------------


def test_rewrite_keeps_mode_owner_and_extended_attributes(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    without_padding(path)
    os.chmod(path, 0o640)
    os.utime(path, (1_000_000_000, 1_000_000_000))
    try:
        os.setxattr(path, "user.cnngenre.test", b"kept")
        has_xattrs = True
    except OSError:  # the file system keeps none
        has_xattrs = False
    if os.geteuid() == 0:
        os.chown(path, 4321, 4321)
    assert write_tags(path, TAGS) == REWRITTEN
    status = os.stat(path)
    assert status.st_mode & 0o7777 == 0o640
    assert status.st_mtime > 1_000_000_000  # the file changed now
    if has_xattrs:
        assert os.getxattr(path, "user.cnngenre.test") == b"kept"
    if os.geteuid() == 0:
        assert (status.st_uid, status.st_gid) == (4321, 4321)


def test_symlink_target_is_written_and_the_link_kept(masters, tmp_path):
    (tmp_path / "music").mkdir()
    (tmp_path / "links").mkdir()
    target = copy_of(masters, tmp_path / "music", "mp3")
    without_padding(target)
    link = tmp_path / "links" / "track.mp3"
    link.symlink_to(target)
    assert write_tags(link, TAGS) == REWRITTEN
    assert link.is_symlink() and os.readlink(link) == target
    assert mediafile.MediaFile(target).genre == "Jazz"
    assert leftovers(tmp_path / "music", target) == [] and leftovers(tmp_path / "links", link) == []


def test_hard_linked_file_in_place_when_the_tags_fit(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    tag(path, genre="Rock")
    other = tmp_path / "other.mp3"
    os.link(path, other)
    assert write_tags(path, TAGS) == IN_PLACE
    assert mediafile.MediaFile(other).genre == "Jazz"
    assert os.stat(path).st_nlink == 2


def test_hard_linked_file_refused_when_the_tags_do_not_fit(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    without_padding(path)
    other = tmp_path / "other.mp3"
    os.link(path, other)
    before = sha(path)
    with pytest.raises(TagWriteRefused, match="2 hard links"):
        write_tags(path, TAGS)
    assert sha(path) == sha(other) == before and os.stat(path).st_nlink == 2
    assert leftovers(tmp_path, path, other) == []


# -- Refusals -----------------------------------------------------------------------------------------------------


def lie(path, offset, value):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(value.to_bytes(4, "little"))


@pytest.mark.parametrize("field", ["data size", "RIFF size"])
def test_wav_with_a_lying_header_is_refused_untouched(masters, tmp_path, field):
    path = copy_of(masters, tmp_path, "wav")
    size = os.path.getsize(path)
    if field == "data size":
        lie(path, 40, size)  # more than the file holds
    else:
        lie(path, 4, size - 8 - 5000)  # a tag chunk would land inside the audio
    before = sha(path)
    with pytest.raises(TagWriteRefused, match="inconsistent container") as refused:
        write_tags(path, TAGS)
    assert "\n" not in str(refused.value)
    assert sha(path) == before
    assert leftovers(tmp_path, path) == []


def test_copy_whose_audio_differs_is_not_used(masters, tmp_path, monkeypatch):
    from genre_cnn_core import tagwrite

    path = copy_of(masters, tmp_path, "mp3")
    without_padding(path)
    before = sha(path)
    identities = iter(["original", "something else"])
    monkeypatch.setattr(tagwrite, "audio_identity", lambda path: next(identities))
    with pytest.raises(TagWriteRefused, match="would have changed the audio"):
        write_tags(path, TAGS)
    assert sha(path) == before
    assert leftovers(tmp_path, path) == []


def test_not_audio(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_bytes(b"not audio at all\n" * 100)
    with pytest.raises(mediafile.UnreadableFileError):
        write_tags(path, TAGS)
    assert path.read_bytes() == b"not audio at all\n" * 100
    assert leftovers(tmp_path, path) == []


def test_not_a_regular_file(tmp_path):
    with pytest.raises(TagWriteRefused, match="not a regular file"):
        write_tags(tmp_path, TAGS)
    with pytest.raises(FileNotFoundError):
        write_tags(tmp_path / "missing.mp3", TAGS)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any file")
def test_read_only_file_is_not_replaced(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    without_padding(path)
    os.chmod(path, 0o444)
    before = sha(path)
    with pytest.raises(PermissionError):
        write_tags(path, TAGS)
    assert sha(path) == before


# -- SIGKILL ----------------------------------------------------------------------------------------------------

#: Writes the tags of argv[1]. "random": first times a write to the scratch
#: copy argv[3], prints how long it took and waits for a line on stdin; the
#: other moments make the process kill itself there.
CHILD = r"""
import os, shutil, signal, sys, time
sys.path.insert(0, "tests")
from test_tagwrite import write_like_cnngenre

path, moment = sys.argv[1], sys.argv[2]

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if moment == "random":
    start = time.perf_counter()
    write_like_cnngenre(sys.argv[3])
    print(time.perf_counter() - start, flush=True)
    sys.stdin.readline()
elif moment == "copied":
    copy = shutil.copyfile
    shutil.copyfile = lambda *args: (copy(*args), die())
elif moment == "saved":
    os.fsync = die
elif moment == "before rename":
    os.replace = die
elif moment == "renamed":
    replace = os.replace
    os.replace = lambda *args: (replace(*args), die())
write_like_cnngenre(path)
print("done", flush=True)
"""


def mp3_frames(data):
    """Offsets of the MPEG audio frames of an untagged MP3."""
    bitrates = {3: [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],  # MPEG-1 layer III
                2: [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160]}  # MPEG-2 and 2.5
    rates = {3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000]}
    offsets, offset = [], 0
    while offset + 4 <= len(data) and data[offset] == 0xFF and data[offset + 1] & 0xE0 == 0xE0:
        version = (data[offset + 1] >> 3) & 3
        bitrate = bitrates[3 if version == 3 else 2][data[offset + 2] >> 4] * 1000
        rate = rates[version][(data[offset + 2] >> 2) & 3]
        offsets.append(offset)
        offset += (144 if version == 3 else 72) * bitrate // rate + ((data[offset + 2] >> 1) & 1)
    return offsets + [offset]


@pytest.fixture(scope="module")
def big_mp3(tmp_path_factory):
    """An MP3 of about 40 MB whose ID3 tag has no padding, and what a successful write makes of it."""
    folder = tmp_path_factory.mktemp("big")
    seed = folder / "seed.mp3"
    write_audio(seed, synth_track("chiptune", seed=4, seconds=20.0, sr=SR), SR)
    data = seed.read_bytes()
    frames = mp3_frames(data)
    assert len(frames) > 100 and frames[-1] == len(data)
    audio = data[frames[1]:]  # the first frame is the encoder's Xing header, true of one copy only
    old = folder / "old.mp3"
    old.write_bytes(audio * (40_000_000 // len(audio)))
    without_padding(old)
    new = folder / "new.mp3"
    shutil.copyfile(old, new)
    assert write_like_cnngenre(new) == REWRITTEN
    return {"old": str(old), "new": str(new), "old sha": sha(old), "new sha": sha(new),
            "identity": audio_identity(old)}


def child(*args):
    return subprocess.Popen([sys.executable, "-c", CHILD, *map(str, args)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def check_whole(big_mp3, path):
    """The file is the old one or the new one, byte for byte; returns which."""
    digest = sha(path)
    assert digest in (big_mp3["old sha"], big_mp3["new sha"])
    assert audio_identity(path) == big_mp3["identity"]
    return "old" if digest == big_mp3["old sha"] else "new"


def test_rewritten_big_mp3_decodes_to_the_same_samples(big_mp3):
    for start in (0, 600 * SR, 1500 * SR):
        old, _ = sf.read(big_mp3["old"], start=start, frames=5 * SR, dtype="int16")
        new, _ = sf.read(big_mp3["new"], start=start, frames=5 * SR, dtype="int16")
        assert len(old) == 5 * SR
        np.testing.assert_array_equal(old, new)


@pytest.mark.parametrize("moment", ["copied", "saved", "before rename", "renamed"])
def test_sigkill_at_chosen_moments(big_mp3, tmp_path, moment):
    path = str(tmp_path / "track.mp3")
    shutil.copyfile(big_mp3["old"], path)
    process = child(path, moment)
    process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL
    assert check_whole(big_mp3, path) == ("new" if moment == "renamed" else "old")
    stale = leftovers(tmp_path, path)
    assert len(stale) == (0 if moment == "renamed" else 1)
    if stale:
        # While a live process holds the copy, another write is refused; once it is gone the copy is stale.
        with open(tmp_path / stale[0], "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            with pytest.raises(TagWriteRefused, match="in progress"):
                write_like_cnngenre(path)
        assert check_whole(big_mp3, path) == "old"
    assert write_like_cnngenre(path) == (IN_PLACE if moment == "renamed" else REWRITTEN)
    assert check_whole(big_mp3, path) == "new"
    assert leftovers(tmp_path, path) == []


def test_sigkill_at_random_moments(big_mp3, tmp_path):
    """Real kills spread over the time a write takes; each leaves the old file or the new one."""
    (tmp_path / "scratch").mkdir()
    path = str(tmp_path / "track.mp3")
    scratch = str(tmp_path / "scratch" / "track.mp3")
    rng = random.Random(7)
    kills = 8
    outcomes = []
    shutil.copyfile(big_mp3["old"], path)
    for i in range(kills):
        shutil.copyfile(big_mp3["old"], scratch)
        process = child(path, "random", scratch)
        took = float(process.stdout.readline())
        delay = (i + rng.random()) / kills * took * 1.2
        process.stdin.write("go\n")
        process.stdin.flush()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=delay)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=120)
        outcomes.append((check_whole(big_mp3, path), bool(leftovers(tmp_path, path, "scratch"))))
        if outcomes[-1][0] == "new":
            shutil.copyfile(big_mp3["old"], path)
    print("kills (file, temporary copy left):", outcomes)
    assert write_like_cnngenre(path) == REWRITTEN
    assert check_whole(big_mp3, path) == "new"
    assert leftovers(tmp_path, path, "scratch") == []


# -- Through the plugin -----------------------------------------------------------------------------------------


class TestWritesThroughBeets(PluginTestHelper):
    """`beet cnngenre -w` writes with beets' Item.write: its events fire and `beet write` agrees."""

    plugin = "cnngenre"

    @pytest.fixture(autouse=True)
    def _setup(self, scratch_model_path, masters, tmp_path):
        self.config["cnngenre"]["model"] = scratch_model_path
        self.config["import"]["write"] = False
        self.folder = tmp_path / "music"
        self.folder.mkdir()
        self.masters = masters

    def add(self, count=1, ext="mp3"):
        items = []
        for n in range(count):
            path = copy_of(self.masters, self.folder, ext, name=f"track{n}.{ext}")
            without_padding(path)  # some writes go through a copy
            item = Item.from_path(path)
            self.lib.add(item)
            items.append(item)
        return items

    def listen(self, event):
        from beets import plugins

        seen = []
        plugins.BeetsPlugin.listeners[event].append(lambda item, path, **kwargs: seen.append((item.id, path)))
        return seen

    def test_events_fire_and_a_later_w_writes_what_W_left_lagging(self, capsys):
        items = self.add(2)
        self.run_command("cnngenre", "-W", "-j", "1")
        stored = [self.lib.get_item(item.id) for item in items]
        assert all(item.cnn_genre and item.get("cnn_write_pending") for item in stored)
        assert all(mediafile.MediaFile(item.path).cnn_genre is None for item in stored)
        capsys.readouterr()

        written, after = self.listen("write"), self.listen("after_write")
        self.run_command("cnngenre", "-w", "-j", "1")  # predicts nothing: writes the lagging tags
        out = capsys.readouterr().out
        assert "predicted 0, skipped 2" in out and "wrote 2 files" in out
        assert sorted(i for i, _ in written) == sorted(i for i, _ in after) == sorted(i.id for i in items)
        for item in items:
            stored = self.lib.get_item(item.id)
            assert not stored.get("cnn_write_pending")
            media = mediafile.MediaFile(stored.path)
            assert (media.cnn_genre, media.cnn_genre_score) == (stored.cnn_genre, stored.cnn_genre_score)
            assert stored.mtime == pytest.approx(os.path.getmtime(stored.path))

        self.run_command("cnngenre", "-w", "-j", "1")  # nothing lags now
        assert "wrote 0 files" in capsys.readouterr().out
        assert len(written) == 2

    def test_beet_write_and_modify_agree_with_cnngenre(self, capsys):
        [item] = self.add(1)
        self.run_command("cnngenre", "-w", "-j", "1")
        capsys.readouterr()
        self.run_command("write", "-p")
        assert capsys.readouterr().out == ""  # beets finds nothing to write
        self.run_command("modify", "-y", "-w", f"id:{item.id}", "cnn_genre=blues")
        assert mediafile.MediaFile(item.path).cnn_genre == "blues"
        self.run_command("modify", "-y", "-w", f"id:{item.id}", "cnn_genre!")
        assert mediafile.MediaFile(item.path).cnn_genre is None

    def test_reading_a_file_stores_no_prediction(self):
        [item] = self.add(1)
        media = mediafile.MediaFile(item.path)
        media.cnn_genre, media.cnn_genre_score = "metal", 0.5
        media.save()
        item.read()
        item.store()
        stored = self.lib.get_item(item.id)
        assert "cnn_genre" not in stored.keys(with_album=False)
        assert "cnn_genre_score" not in stored.keys(with_album=False)

    def test_one_warning_per_file_and_a_count_when_a_reason_repeats(self, monkeypatch, caplog, capsys):
        import genre_cnn_core
        from beetsplug.cnngenre.writing import SHOWN_PER_REASON

        items = self.add(SHOWN_PER_REASON + 2)

        def read_only(path, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(genre_cnn_core, "write_tags", read_only)
        for _ in range(2):
            caplog.clear()
            self.run_command("cnngenre", "-w", "-j", "1")
            lines = [r.getMessage() for r in caplog.records if "tags not written" in r.getMessage()]
            named = [line for line in lines if line.startswith(str(self.folder))]
            assert len(named) == SHOWN_PER_REASON
            assert len({line.split(":")[0] for line in named}) == SHOWN_PER_REASON  # each file at most once
            assert [line for line in lines if line not in named] == [
                f"tags not written to {len(items)} files in all (Permission denied); "
                "`beet ls cnn_write_pending:true` lists the files whose tags lag"]
            assert f"wrote 0 files ({len(items)} not written)" in capsys.readouterr().out
        assert all(self.lib.get_item(item.id).cnn_write_pending for item in items)

    def test_a_copy_left_by_a_killed_write_is_removed_by_the_next_run(self, caplog):
        [item] = self.add(1)
        leftover = self.folder / f".{item.filepath.name}.cnngenre-tmp.mp3"
        shutil.copyfile(item.path, leftover)
        self.run_command("cnngenre", "-W", "-j", "1")  # any run over the file, writing or not
        assert not leftover.exists()
        assert [r.getMessage() for r in caplog.records if "interrupted tag write" in r.getMessage()] == [
            f"{leftover}: removed, a temporary copy left by an interrupted tag write"]

    def test_a_copy_in_use_is_left_alone(self):
        [item] = self.add(1)
        leftover = self.folder / f".{item.filepath.name}.cnngenre-tmp.mp3"
        shutil.copyfile(item.path, leftover)
        with open(leftover, "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # a write in progress in another process
            self.run_command("cnngenre", "-W", "-j", "1")
            assert leftover.exists()
