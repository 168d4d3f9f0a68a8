import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from genre_cnn_core import audio
from genre_cnn_core.audio import PREROLL_SECONDS, AudioError, excerpt_starts, load_excerpts, resample

from synth import write_audio

SR = 22050


def chirp(seconds: int, sr: int = SR) -> np.ndarray:
    """A tone whose pitch tells the time: 200 Hz + 20 Hz per second elapsed."""
    t = np.arange(seconds * sr) / sr
    return (0.5 * np.sin(2 * np.pi * (200 * t + 10 * t * t))).astype(np.float32)


def dominant_hz(y: np.ndarray, sr: int) -> float:
    padded = 8 * len(y)
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)), padded))
    return np.fft.rfftfreq(padded, 1 / sr)[spectrum.argmax()]


def test_excerpts_spread_over_the_track():
    assert excerpt_starts(100.0, 10.0, 3) == [22.5, 45.0, 67.5]
    assert excerpt_starts(8.0, 10.0, 3) == [0.0]


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3", "m4a", "aiff", "opus"])
def test_seeking_decodes_the_right_excerpt_quietly(tmp_path, capfd, ext):
    path = tmp_path / f"stairs.{ext}"
    write_audio(path, chirp(60), SR)
    capfd.readouterr()
    excerpts = load_excerpts(str(path), 16000, excerpt_seconds=1.0, n_excerpts=3)
    assert capfd.readouterr().err == ""  # libmpg123 complains on every MP3 seek
    assert len(excerpts) == 3
    for excerpt, start in zip(excerpts, excerpt_starts(60.0, 1.0, 3)):
        assert abs(len(excerpt) - 16000) <= 400
        # The middle of an excerpt must carry the pitch of that moment:
        # a seek off by a quarter of a second is off by 5 Hz.
        middle = excerpt[6000:10000]
        assert abs(dominant_hz(middle, 16000) - (200 + 20 * (start + 0.5))) < 4, (ext, start)


def test_short_file_is_read_whole(tmp_path):
    path = tmp_path / "short.wav"
    write_audio(path, chirp(2), SR)
    excerpts = load_excerpts(str(path), 16000, excerpt_seconds=10.0, n_excerpts=3)
    assert len(excerpts) == 1 and abs(len(excerpts[0]) - 32000) < 10


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty file"), (b"this is not audio at all" * 50, "not a readable audio file"), (None, "file not found")],
)
def test_bad_files_raise_one_line_reasons(tmp_path, content, reason):
    path = tmp_path / "bad.mp3"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError) as error:
        load_excerpts(str(path), 16000, 3.0, 3)
    assert reason in str(error.value)
    assert "\n" not in str(error.value)


# ------------------------------------------------ files that lie about their length

def cut(path, fraction: float) -> None:
    """Keep the first ``fraction`` of a file's bytes, as an interrupted download does."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _id3v2_size(data: bytes) -> int:
    """Bytes of the ID3v2 tag in front of an MP3's frames (0 without one)."""
    if data[:3] != b"ID3":
        return 0
    size = 0
    for byte in data[6:10]:  # "syncsafe": 7 bits a byte
        size = size << 7 | byte & 0x7F
    return 10 + size + (10 if data[5] & 0x10 else 0)


def claim_mp3_frames(path, frames: int) -> None:
    """Rewrite the frame count in an MP3's Xing/Info header."""
    data = bytearray(path.read_bytes())
    first_frame = _id3v2_size(data)
    tags = [data.find(tag, first_frame, first_frame + 64) for tag in (b"Xing", b"Info")]
    header = max(tags)
    assert header > 0 and data[header + 7] & 1, "no Xing/Info header with a frame count"
    data[header + 8:header + 12] = frames.to_bytes(4, "big")
    path.write_bytes(data)


def claim_flac_samples(path, samples: int) -> None:
    """Rewrite the 36-bit total-samples field of a FLAC's STREAMINFO."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0, "STREAMINFO must come first"
    field = 8 + 13  # after the block header, block and frame sizes, rate, channels and bit depth
    data[field] = data[field] & 0xF0 | samples >> 32 & 0x0F
    data[field + 1:field + 5] = (samples & 0xFFFFFFFF).to_bytes(4, "big")
    path.write_bytes(data)


def claim_huge_length(path) -> None:
    if path.suffix == ".mp3":
        claim_mp3_frames(path, 2**32 - 1)
    else:
        claim_flac_samples(path, 2**36 - 1)


def write_streamable_m4a(path, y: np.ndarray, sr: int) -> None:
    """An M4A with its index (moov) before the audio, as downloads have it, so a cut keeps the index."""
    import av

    plain = path.with_name("plain_" + path.name)
    write_audio(plain, y, sr)
    with av.open(str(plain)) as source, av.open(str(path), "w", format="mp4",
                                                 options={"movflags": "faststart"}) as output:
        stream = output.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(source.streams.audio[0]):
            if packet.dts is not None:  # the demuxer's final empty packet
                packet.stream = stream
                output.mux(packet)
    plain.unlink()
    data = path.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")


def decodable_seconds(path) -> float:
    """Seconds of audio FFmpeg decodes from the start of a file before its data ends or breaks."""
    import av

    samples = 0
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        sr = stream.sample_rate
        try:
            for frame in container.decode(stream):
                samples += frame.samples
        except av.FFmpegError:
            pass
    return samples / sr


def libsndfile_refuses(*args):
    raise RuntimeError("Format not recognised")  # what soundfile raises for a format it cannot read


@pytest.fixture(scope="module")
def chirps(tmp_path_factory):
    """ext -> a healthy 60 s chirp in that format."""
    folder = tmp_path_factory.mktemp("chirps")
    paths = {}
    for ext in ("wav", "flac", "mp3", "ogg", "opus", "m4a"):
        paths[ext] = folder / f"chirp.{ext}"
        if ext == "m4a":
            write_streamable_m4a(paths[ext], chirp(60), SR)
        else:
            write_audio(paths[ext], chirp(60), SR)
    return paths


def damaged_copy(chirps, tmp_path, ext, damage):
    path = tmp_path / f"damaged.{ext}"
    path.write_bytes(chirps[ext].read_bytes())
    {"cut to 10%": lambda: cut(path, 0.10), "cut to 3%": lambda: cut(path, 0.03),
     "huge length claim": lambda: claim_huge_length(path)}[damage]()
    return path


def assert_excerpts_over_real_audio(excerpts, real_seconds, n_excerpts):
    """Each 1 s excerpt at 16 kHz sits where ``excerpt_starts`` puts it over the real length, and is real audio."""
    assert len(excerpts) == n_excerpts
    for excerpt, start in zip(excerpts, excerpt_starts(real_seconds, 1.0, n_excerpts)):
        assert abs(len(excerpt) - 16000) <= 16
        # Its middle and its end carry the pitch of their moments. Placed over
        # the claimed length instead, an excerpt would be off by seconds; the
        # tolerance, 2 Hz or 0.1 s, covers an MP3 frame and the decoders' delays.
        for at in (0.5, 0.875):
            piece = excerpt[int((at - 0.125) * 16000):int((at + 0.125) * 16000)]
            assert abs(dominant_hz(piece, 16000) - (200 + 20 * (start + at))) < 2, (start, at)
            assert np.sqrt(np.mean(piece ** 2)) > 0.25  # the chirp's level (0.5 peak), not silence or a fade


LIES = [(ext, damage, reader) for ext in ("mp3", "flac") for damage in ("cut to 10%", "cut to 3%", "huge length claim")
        for reader in ("libsndfile", "ffmpeg")] + [("m4a", damage, "ffmpeg") for damage in ("cut to 10%", "cut to 3%")]


@pytest.mark.parametrize("ext, damage, reader", LIES)
def test_file_that_lies_about_its_length_gives_excerpts_of_its_real_audio(chirps, tmp_path, capfd, monkeypatch,
                                                                          ext, damage, reader):
    path = damaged_copy(chirps, tmp_path, ext, damage)
    if reader == "ffmpeg":
        monkeypatch.setattr(audio, "_read_soundfile", libsndfile_refuses)
    real = decodable_seconds(path)
    assert (real < 0.2 * 60) if damage.startswith("cut") else (59 < real < 61)  # the damage took
    capfd.readouterr()
    excerpts = load_excerpts(str(path), 16000, excerpt_seconds=1.0, n_excerpts=3)
    assert capfd.readouterr().err == ""
    assert_excerpts_over_real_audio(excerpts, real, 3)


@pytest.mark.parametrize("ext, reader", [("flac", "libsndfile"), ("mp3", "libsndfile"), ("flac", "ffmpeg"),
                                         ("m4a", "ffmpeg")])
def test_when_seeking_fails_too_one_pass_reads_the_excerpts(chirps, tmp_path, monkeypatch, ext, reader):
    path = damaged_copy(chirps, tmp_path, ext, "cut to 10%")
    name = "_soundfile_excerpts" if reader == "libsndfile" else "_pyav_excerpts"
    seeking, calls = getattr(audio, name), []

    def seeking_fails_after_the_first_try(*args):
        calls.append(args)
        if len(calls) > 1:  # the try over the real length
            if reader == "libsndfile":
                raise RuntimeError("Internal psf_fseek() failed.")
            return None
        return seeking(*args)

    monkeypatch.setattr(audio, name, seeking_fails_after_the_first_try)
    if reader == "ffmpeg":
        monkeypatch.setattr(audio, "_read_soundfile", libsndfile_refuses)
    excerpts = load_excerpts(str(path), 16000, excerpt_seconds=1.0, n_excerpts=3)
    assert len(calls) == 2
    assert_excerpts_over_real_audio(excerpts, decodable_seconds(path), 3)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg"])
@pytest.mark.parametrize("excerpt_seconds, n_excerpts", [(1.0, 3), (15.0, 5)])  # apart, and overlapping
def test_reading_through_gives_the_excerpts_seeking_gives(chirps, ext, excerpt_seconds, n_excerpts):
    with audio.quiet_stderr():
        with audio._open_soundfile(audio._Source(chirps[ext])) as f:
            frames = f.frames
            starts = excerpt_starts(frames / f.samplerate, excerpt_seconds, n_excerpts)
            sought = audio._soundfile_excerpts(f, starts, excerpt_seconds, frames)
        with audio._open_soundfile(audio._Source(chirps[ext])) as f:
            read_through = audio._soundfile_windows(f, starts, excerpt_seconds, frames)
    assert len(sought) == len(read_through) == n_excerpts
    for a, b in zip(sought, read_through):
        assert len(a) == len(b) == int(round(excerpt_seconds * SR))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # libmpg123 rounds differently on the two paths


@pytest.mark.parametrize("ext, reader", [(ext, reader) for ext in ("wav", "flac", "mp3", "ogg", "opus")
                                         for reader in ("libsndfile", "ffmpeg")] + [("m4a", "ffmpeg")])
@pytest.mark.parametrize("seconds, excerpt_seconds", [(60, 1.0), (2, 10.0)])  # seeking, and read whole
def test_healthy_file_is_not_measured(tmp_path, monkeypatch, ext, reader, seconds, excerpt_seconds):
    """Only a file whose excerpts are not where its header says costs a pass over the whole file."""
    path = tmp_path / f"healthy.{ext}"
    write_audio(path, chirp(seconds), SR)
    if reader == "ffmpeg":
        monkeypatch.setattr(audio, "_read_soundfile", libsndfile_refuses)
    passes = []
    monkeypatch.setattr(audio, "_soundfile_decodable_frames", lambda *args: passes.append(args))
    monkeypatch.setattr(audio, "_pyav_decodable_span", lambda *args: passes.append(args))
    excerpts = load_excerpts(str(path), 16000, excerpt_seconds, 3)
    assert passes == []
    assert len(excerpts) == (3 if seconds > excerpt_seconds else 1)


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "ogg"])
def test_healthy_file_gives_the_excerpts_a_seek_to_each_start_gives(chirps, ext):
    """The samples of a plain seek and read at the starts planned over the header's length."""
    expected = []
    with audio.quiet_stderr(), sf.SoundFile(str(chirps[ext])) as f:
        sr = f.samplerate
        for start in excerpt_starts(f.frames / sr, 3.0, 3):
            f.seek(int(round((start - PREROLL_SECONDS) * sr)))
            frames = f.read(int(round((PREROLL_SECONDS + 3.0) * sr)), dtype="float32", always_2d=True)
            expected.append(resample(frames[int(round(PREROLL_SECONDS * sr)):].mean(axis=1), sr, 16000))
    excerpts = load_excerpts(str(chirps[ext]), 16000, 3.0, 3)
    assert len(excerpts) == 3
    for got, want in zip(excerpts, expected):
        assert np.array_equal(got, want)


@pytest.mark.parametrize("reader", ["libsndfile", "ffmpeg"])
def test_huge_claim_on_a_long_file_is_not_decoded_into_memory(tmp_path, monkeypatch, reader):
    path = tmp_path / "forty_minutes.flac"
    with sf.SoundFile(str(path), "w", 8000, 1, format="FLAC") as f:
        t = np.arange(8000 * 60) / 8000
        for minute in range(40):  # a tone whose pitch tells the minute
            f.write((0.5 * np.sin(2 * np.pi * (200 + 10 * minute) * t)).astype(np.float32))
    claim_flac_samples(path, 2**36 - 1)
    if reader == "ffmpeg":
        monkeypatch.setattr(audio, "_read_soundfile", libsndfile_refuses)
    tracemalloc.start()
    excerpts = load_excerpts(str(path), 16000, 10.0, 3)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20_000_000  # the whole file decoded would be 77 MB of float32
    assert [len(e) for e in excerpts] == [160000] * 3
    for excerpt, start in zip(excerpts, excerpt_starts(40 * 60.0, 10.0, 3)):
        assert abs(dominant_hz(excerpt[:16000], 16000) - (200 + 10 * int(start // 60))) < 2


@pytest.mark.parametrize("name", ["FLAC with a huge claim and no audio frames",
                                  "MP3 with a huge claim and no audio frames", "M4A with its index at the end, cut"])
def test_file_with_no_decodable_audio_still_fails_in_one_line(chirps, tmp_path, name):
    path = tmp_path / f"empty.{name[:4].strip().lower()}"
    if name.startswith("FLAC"):
        path.write_bytes(chirps["flac"].read_bytes()[:120])  # STREAMINFO, a comment, no whole frame
        claim_flac_samples(path, 2**36 - 1)
    elif name.startswith("MP3"):
        path.write_bytes(chirps["mp3"].read_bytes()[:240])  # the Xing frame, no audio frame
        claim_mp3_frames(path, 2**32 - 1)
    else:
        write_audio(path, chirp(60), SR)
        cut(path, 0.10)
    with pytest.raises(AudioError) as error:
        load_excerpts(str(path), 16000, 1.0, 3)
    assert "\n" not in str(error.value) and "Traceback" not in str(error.value)
