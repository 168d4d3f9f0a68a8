import numpy as np
import pytest

from genre_cnn_core.audio import AudioError, excerpt_starts, load_excerpts
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
