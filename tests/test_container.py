"""Audio identity of files across tag edits, moves and audio changes, and container sanity checks."""

import os
import random
import re
import shutil
import struct
from pathlib import Path

import mediafile
import mutagen
import numpy as np
import pytest
from mutagen.apev2 import APEv2
from mutagen.id3 import ID3, TIT2
from special_files import CountingFile

from genre_cnn_core import container
from genre_cnn_core.container import audio_identity, container_problem

from synth import synth_track, tag, write_audio

FORMATS = ("wav", "flac", "ogg", "mp3", "aiff", "opus", "m4a")
SR = 22050
#: Short tracks have payloads read whole, long ones are sampled.
LENGTHS = {"short": 1.0, "long": 15.0}


def make(path, seconds=15.0, seed=1, genre="techno", gain=1.0):
    write_audio(path, gain * synth_track(genre, seed=seed, seconds=seconds, sr=SR), SR)
    return str(path)


@pytest.fixture(scope="module")
def masters(tmp_path_factory):
    """Untagged files of every format and length, never changed: tests work on copies."""
    folder = tmp_path_factory.mktemp("masters")
    return {(ext, length): make(folder / f"{length}.{ext}", seconds)
            for ext in FORMATS for length, seconds in LENGTHS.items()}


def copy_of(masters, tmp_path, ext, length="long", name=None):
    path = tmp_path / (name or f"track.{ext}")
    shutil.copyfile(masters[(ext, length)], path)
    return str(path)


def media_edit(path, padding=None, **fields):
    media = mediafile.MediaFile(path)
    for field, value in fields.items():
        setattr(media, field, value)
    media.save(**({} if padding is None else {"padding": padding}))


def id3v23_edit(path):
    media = mediafile.MediaFile(path, id3v23=True)
    media.composer = "Somebody"
    media.save()


# -- Identity survives what tags and locations do ---------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("ext", FORMATS)
def test_identity_survives_tag_edits(masters, tmp_path, ext, length):
    path = copy_of(masters, tmp_path, ext, length)
    original = audio_identity(path)
    assert re.fullmatch(r"[0-9a-f]{20}", original)
    sizes = {os.path.getsize(path)}
    edits = [
        lambda: tag(path, genre="Rock", artist="Someone", title="Something"),  # adds ID3 to WAV and AIFF
        lambda: media_edit(path, genre="Jazz", title="Other", album="An album", track=3, year=2001),
        lambda: media_edit(path, comments="x" * 300_000),  # far beyond any padding: mutagen moves the audio
        lambda: media_edit(path, comments="short", padding=lambda info: 0),  # shrinks, no padding left
        lambda: media_edit(path, lyrics="la la la", padding=lambda info: 0),  # grows with no padding
        lambda: mutagen.File(path).save(padding=lambda info: 50_000),  # lots of padding
        lambda: media_edit(path, genre="Blues"),  # fits in that padding
        lambda: id3v23_edit(path),  # beets' id3v23 option: MP3 tags converted to ID3v2.3
        lambda: mutagen.File(path).delete(),  # all tags gone
    ]
    for edit in edits:
        edit()
        sizes.add(os.path.getsize(path))
        assert audio_identity(path) == original
        assert container_problem(path) is None
    assert len(sizes) > 3  # the edits did move things around


@pytest.mark.parametrize("ext", FORMATS)
def test_identity_survives_copy_rename_and_mtime(masters, tmp_path, ext):
    path = copy_of(masters, tmp_path, ext)
    original = audio_identity(path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    copied = shutil.copy(path, other / f"copy.{ext}")
    renamed = str(tmp_path / f"renamed.{ext}")
    os.rename(path, renamed)
    os.utime(renamed, (1_000_000_000, 1_000_000_000))
    assert audio_identity(copied) == audio_identity(renamed) == original


def test_identity_survives_tags_at_both_ends_of_mp3(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    original = audio_identity(path)
    tag(path, genre="Rock", artist="Someone", title="Something")
    apev2 = APEv2()
    apev2["Title"] = "APE title"
    apev2.save(path)  # at the end (mutagen drops an ID3v1 trailer while at it)
    mutagen.File(path).save(v1=2)  # adds an ID3v1 trailer after the APEv2 tag
    data = Path(path).read_bytes()
    assert data[:3] == b"ID3" and data[-128:-125] == b"TAG" and b"APETAGEX" in data[-300:]
    assert audio_identity(path) == original
    # A Lyrics3v2 block between the APEv2 tag and ID3v1, as old taggers wrote.
    lyrics = b"LYRICSBEGININD0000210EAL00005Title"
    with open(path, "wb") as handle:
        handle.write(data[:-128] + lyrics + b"%06dLYRICS200" % len(lyrics) + data[-128:])
    assert audio_identity(path) == original


def test_identity_survives_id3_before_flac(masters, tmp_path):
    path = copy_of(masters, tmp_path, "flac")
    original = audio_identity(path)
    tags = ID3()
    tags.add(TIT2(encoding=3, text=["An ID3 tag where none belongs"]))
    tags.save(path)  # mutagen puts ID3v2 at the start of any file
    assert Path(path).read_bytes()[:3] == b"ID3"
    assert audio_identity(path) == original
    mutagen.File(path).save(deleteid3=True)
    assert audio_identity(path) == original


def test_identity_survives_tag_edits_of_faststart_m4a(tmp_path):
    """moov before mdat: mutagen moves mdat and rewrites the chunk offsets."""
    import av

    path = str(tmp_path / "faststart.m4a")
    y = synth_track("ambient", seed=3, seconds=10.0, sr=SR)
    with av.open(path, "w", format="mp4", options={"movflags": "faststart"}) as output:
        stream = output.add_stream("aac", rate=SR)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(y[None, :], format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            output.mux(packet)
    data = Path(path).read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")
    original = audio_identity(path)
    before = data.index(b"mdat")
    media_edit(path, comments="x" * 100_000, genre="Ambient")
    assert Path(path).read_bytes().index(b"mdat") > before + 100_000
    assert audio_identity(path) == original


# -- Identity changes with the audio ---------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("ext", FORMATS)
def test_identity_changes_with_the_audio(masters, tmp_path, ext, length):
    seconds = LENGTHS[length]
    path = copy_of(masters, tmp_path, ext, length)
    original = audio_identity(path)
    identities = {original}
    variants = {
        "other signal": make(tmp_path / f"other.{ext}", seconds, genre="chiptune"),
        "other seed": make(tmp_path / f"seed.{ext}", seconds, seed=2),
        "quieter": make(tmp_path / f"quieter.{ext}", seconds, gain=0.9),
        "longer": make(tmp_path / f"longer.{ext}", seconds + 0.5),
    }
    truncated = copy_of(masters, tmp_path, ext, length, name=f"truncated.{ext}")
    with open(truncated, "r+b") as handle:
        handle.truncate(os.path.getsize(truncated) - 3000)
    variants["truncated by 3000 bytes"] = truncated
    for name, variant in variants.items():
        identity = audio_identity(variant)
        assert identity not in identities, name
        identities.add(identity)


def test_identity_changes_when_audio_is_appended_to_a_stream(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    original = audio_identity(path)
    with open(path, "ab") as handle:
        handle.write(Path(masters[("mp3", "short")]).read_bytes())
    assert audio_identity(path) != original


def test_identity_changes_when_one_sampled_chunk_changes(masters, tmp_path):
    path = copy_of(masters, tmp_path, "wav")
    original = audio_identity(path)
    with open(path, "r+b") as handle:
        handle.seek(44)  # the first bytes of the data chunk are always sampled
        byte = handle.read(1)
        handle.seek(44)
        handle.write(bytes([byte[0] ^ 1]))
    assert audio_identity(path) != original


def test_identity_reads_a_bounded_amount(monkeypatch, tmp_path):
    """A 4 GB WAV (sparse) costs a few sampled chunks, not a read of the file."""
    path = tmp_path / "huge.wav"
    data_size = 4_000_000_000
    with open(path, "wb") as handle:
        handle.write(b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE")
        handle.write(b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, 44100, 176400, 4, 16))
        handle.write(b"data" + struct.pack("<I", data_size))
        handle.truncate(44 + data_size)
    read = []
    real_open = container.open_regular
    monkeypatch.setattr(container, "open_regular", lambda *args: CountingFile(real_open(*args), read))
    audio_identity(path)
    assert 0 < sum(read) <= container._SAMPLES * container._SAMPLE_BYTES + container._BLOCK_BYTES
    read.clear()
    assert container_problem(path) is None
    assert 0 < sum(read) <= 2 * container._BLOCK_BYTES


# -- Container problems ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", FORMATS)
def test_normal_files_have_no_problem(masters, tmp_path, ext):
    path = copy_of(masters, tmp_path, ext)
    assert container_problem(path) is None
    tag(path, genre="Rock", artist="Someone", title="Something")
    assert container_problem(path) is None


def patched(path, offset, fmt, value):
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack(fmt, value))


def test_wav_whose_data_chunk_claims_more_than_the_file(masters, tmp_path):
    path = copy_of(masters, tmp_path, "wav")
    size = os.path.getsize(path)
    patched(path, 40, "<I", size)  # the data chunk's size field; the RIFF size still fits the file
    problem = container_problem(path)
    assert problem and "'data' chunk claims" in problem and "\n" not in problem
    patched(path, 4, "<I", size + 44 - 8)  # and a RIFF size that agrees with the data chunk's lie
    assert container_problem(path)


@pytest.mark.parametrize("delta", [-1000, -2, 2, 1000])
def test_wav_whose_riff_size_is_wrong(masters, tmp_path, delta):
    path = copy_of(masters, tmp_path, "wav")
    patched(path, 4, "<I", os.path.getsize(path) - 8 + delta)
    assert "RIFF size field" in container_problem(path)


@pytest.mark.parametrize("delta", [-1, 1])
def test_riff_size_one_pad_byte_off_is_accepted(masters, tmp_path, delta):
    path = copy_of(masters, tmp_path, "wav")
    patched(path, 4, "<I", os.path.getsize(path) - 8 + delta)
    assert container_problem(path) is None


def test_aiff_problems(masters, tmp_path):
    path = copy_of(masters, tmp_path, "aiff")
    size = os.path.getsize(path)
    patched(path, 4, ">I", size - 8 + 100)
    assert "FORM size field" in container_problem(path)
    patched(path, 4, ">I", size - 8)
    ssnd = Path(path).read_bytes().index(b"SSND")
    patched(path, ssnd + 4, ">I", size)
    assert "'SSND' chunk claims" in container_problem(path)


def test_flac_metadata_running_past_the_end(masters, tmp_path):
    path = copy_of(masters, tmp_path, "flac")
    media_edit(path, comments="x" * 20_000)
    with open(path, "r+b") as handle:
        handle.truncate(10_000)  # inside the comment block
    assert "FLAC metadata block" in container_problem(path)
    assert re.fullmatch(r"[0-9a-f]{20}", audio_identity(path))


def test_mp4_atom_larger_than_the_file(masters, tmp_path):
    path = copy_of(masters, tmp_path, "m4a")
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 100)  # moov is last
    assert "MP4 atom 'moov' claims" in container_problem(path)


def test_mp4_atom_larger_than_its_parent(masters, tmp_path):
    path = copy_of(masters, tmp_path, "m4a")
    data = Path(path).read_bytes()
    trak = data.index(b"trak") - 4
    patched(path, trak, ">I", struct.unpack(">I", data[trak:trak + 4])[0] + 10_000)
    assert "beyond the end of its parent 'moov'" in container_problem(path)


def test_id3v2_tag_larger_than_the_file(masters, tmp_path):
    path = copy_of(masters, tmp_path, "mp3")
    tag(path, genre="Rock")
    with open(path, "r+b") as handle:
        handle.seek(6)
        handle.write(bytes([0x7F, 0x7F, 0x7F, 0x7F]))  # 256 MiB, syncsafe
    assert "ID3v2 tag claims" in container_problem(path)
    assert re.fullmatch(r"[0-9a-f]{20}", audio_identity(path))


# -- Bad input ----------------------------------------------------------------------------------------------------


def check_survives(path):
    identity = audio_identity(path)
    assert re.fullmatch(r"[0-9a-f]{20}", identity)
    problem = container_problem(path)
    assert problem is None or (isinstance(problem, str) and problem and "\n" not in problem)


@pytest.mark.parametrize("ext", FORMATS)
def test_truncated_and_damaged_headers_never_raise(masters, tmp_path, ext):
    rng = random.Random(ext)
    data = Path(masters[(ext, "long")]).read_bytes()
    path = tmp_path / f"damaged.{ext}"
    lengths = [*range(64), *range(64, 2048, 37), *rng.sample(range(2048, len(data)), 20)]
    for length in lengths:
        path.write_bytes(data[:length])
        check_survives(path)
    for _ in range(150):
        damaged = bytearray(data[:20_000])
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(0, 600)] = rng.randrange(256)
        path.write_bytes(bytes(damaged))
        check_survives(path)


MAGICS = [b"", b"RIFF", b"RIFX", b"RF64", b"FORM", b"fLaC", b"OggS", b"ID3", b"DSD ", container._ASF_HEADER,
          b"\x00\x00\x00\x18ftyp", b"\xff\xfb"]


@pytest.mark.parametrize("magic", MAGICS, ids=lambda magic: magic[:8].hex() or "none")
def test_random_bytes_never_raise(tmp_path, magic):
    rng = np.random.default_rng(len(magic) + sum(magic))
    path = tmp_path / "random.bin"
    for length in [0, 1, 3, 7, 12, 16, 27, 44, 100, 1000, 70_000, 300_000]:
        body = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        for form in (b"", b"\x10\x00\x00\x00WAVE", b"\x10\x00\x00\x00AIFF", b"\x00" * 8):
            path.write_bytes(magic + form + body)
            check_survives(path)


def test_chains_of_tiny_chunks_are_bounded(tmp_path):
    """A WAV of a million empty chunks and an MP3 of stacked empty ID3 tags do not hang."""
    path = tmp_path / "chunks.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 * 1_000_000) + b"WAVE" + b"JUNK\x00\x00\x00\x00" * 1_000_000)
    check_survives(path)
    path = tmp_path / "stacked.mp3"
    path.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x00" * 200_000)
    check_survives(path)


def test_unreadable_files_raise_oserror(tmp_path):
    with pytest.raises(OSError):
        audio_identity(tmp_path / "missing.mp3")
    with pytest.raises(OSError):
        container_problem(tmp_path / "missing.mp3")
    with pytest.raises(OSError):
        audio_identity(tmp_path)


def test_empty_file_has_an_identity(tmp_path):
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    assert re.fullmatch(r"[0-9a-f]{20}", audio_identity(path))
    assert container_problem(path) is None
