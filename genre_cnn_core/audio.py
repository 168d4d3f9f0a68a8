"""Decoding short excerpts of audio files by seeking, never whole tracks.

libsndfile (through soundfile) reads WAV, AIFF, FLAC, Ogg Vorbis, Opus and
MP3; anything else (MP4/M4A with AAC or ALAC, WMA, ...) is decoded with
PyAV, whose wheels carry their own FFmpeg.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

#: Audio decoded before an excerpt and thrown away. MP3 frames borrow bits
#: from earlier frames (the bit reservoir), so the first frames after a seek
#: decode wrongly; half a second covers that.
PREROLL_SECONDS = 0.5

#: Shortest decodable audio worth a prediction.
MIN_SECONDS = 0.1


class AudioError(Exception):
    """A file could not be decoded; ``str(error)`` is a one-line reason."""


def excerpt_starts(duration: float, excerpt_seconds: float, n_excerpts: int) -> list[float]:
    """Start times of excerpts spread evenly over a track.

    Intros and outros are skipped: the excerpts sit at 1/(n+1), 2/(n+1), ...
    of the part of the track where a whole excerpt fits.

    Parameters
    ----------
    duration : float
        Length of the track in seconds.
    excerpt_seconds : float
        Length of one excerpt.
    n_excerpts : int
        How many excerpts.

    Returns
    -------
    list of float
        Start times in seconds; ``[0.0]`` when the track is no longer than
        one excerpt (it is then read whole).
    """
    room = duration - excerpt_seconds
    if room <= 0:
        return [0.0]
    return [room * (i + 1) / (n_excerpts + 1) for i in range(n_excerpts)]


_STDERR_LOCK = threading.Lock()
_stderr_users = 0
_saved_stderr = None


@contextlib.contextmanager
def quiet_stderr():
    """Silence C libraries (libmpg123 reports every seek) on file descriptor 2.

    Threads share the descriptor, so the first thread in redirects it and
    the last one out restores it.
    """
    global _stderr_users, _saved_stderr
    with _STDERR_LOCK:
        if _stderr_users == 0:
            try:
                sys.stderr.flush()
                saved = os.dup(2)
            except (OSError, ValueError, AttributeError):
                saved = None
            if saved is not None:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 2)
                os.close(devnull)
            _saved_stderr = saved
        _stderr_users += 1
    try:
        yield
    finally:
        with _STDERR_LOCK:
            _stderr_users -= 1
            if _stderr_users == 0 and _saved_stderr is not None:
                os.dup2(_saved_stderr, 2)
                os.close(_saved_stderr)
                _saved_stderr = None


def to_mono(frames: np.ndarray) -> np.ndarray:
    """Average the channels of ``(samples, channels)`` audio into float32 mono."""
    mono = frames.mean(axis=1) if frames.ndim == 2 else frames
    return np.nan_to_num(np.asarray(mono, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono audio with soxr (the resampler librosa uses)."""
    if orig_sr == target_sr or len(y) == 0:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def _read_soundfile(path, excerpt_seconds, n_excerpts):
    import soundfile as sf

    # A file object, not the name: libsndfile cannot open names that are not UTF-8.
    with quiet_stderr(), open(path, "rb") as handle, sf.SoundFile(handle) as f:
        sr = f.samplerate
        duration = f.frames / sr if 0 < f.frames < 2**62 else excerpt_seconds
        excerpts, failure = [], None
        for start in excerpt_starts(duration, excerpt_seconds, n_excerpts):
            preroll = min(PREROLL_SECONDS, start) if f.seekable() else 0.0
            try:
                if f.seekable():
                    f.seek(int(round((start - preroll) * sr)))
                frames = f.read(int(round((preroll + excerpt_seconds) * sr)), dtype="float32", always_2d=True)
            except (RuntimeError, sf.LibsndfileError) as error:  # e.g. a truncated file
                failure = error
                continue
            excerpts.append(to_mono(frames[int(round(preroll * sr)):]))
    if not excerpts and failure is not None:
        raise failure
    return excerpts, sr


def _read_pyav(path, excerpt_seconds, n_excerpts):
    import av

    with open(path, "rb") as handle:
        try:
            container = av.open(handle)
        except av.FFmpegError as error:
            raise AudioError(f"not a readable audio file ({error.strerror or error})") from None
        with container:
            return _read_pyav_container(container, excerpt_seconds, n_excerpts)


def _read_pyav_container(container, excerpt_seconds, n_excerpts):
    import av

    if not container.streams.audio:
        raise AudioError("no audio stream")
    stream = container.streams.audio[0]
    sr = stream.sample_rate or stream.codec_context.sample_rate
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = excerpt_seconds
    excerpts = [_decode_pyav_excerpt(container, stream, sr, start, excerpt_seconds)
                for start in excerpt_starts(duration, excerpt_seconds, n_excerpts)]
    return excerpts, sr


def _decode_pyav_excerpt(container, stream, sr, start, excerpt_seconds):
    import av

    seek_to = max(0.0, start - PREROLL_SECONDS)
    if seek_to > 0:
        container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
    # One resampler per excerpt: a seek invalidates its timestamps.
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
    chunks, first_time, n_samples = [], None, 0
    needed = None
    try:
        for frame in container.decode(stream):
            if first_time is None:
                first_time = float(frame.pts * frame.time_base) if frame.pts is not None else seek_to
                needed = int(round((start - first_time + excerpt_seconds) * sr))
            for out in resampler.resample(frame):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                n_samples += len(chunk)
            if needed is not None and n_samples >= needed:
                break
    except av.FFmpegError:
        if not chunks:  # damaged data: keep what decoded before it
            raise
    if not chunks:
        return np.zeros(0, np.float32)
    audio = np.concatenate(chunks)
    skip = max(0, int(round((start - first_time) * sr)))
    return to_mono(audio[skip:skip + int(round(excerpt_seconds * sr))])


def load_excerpts(path, sample_rate: int, excerpt_seconds: float, n_excerpts: int) -> list[np.ndarray]:
    """Decode a few excerpts of an audio file to mono at one sample rate.

    Parameters
    ----------
    path : str, bytes or os.PathLike
        The audio file.
    sample_rate : int
        Sample rate of the returned audio.
    excerpt_seconds : float
        Length of each excerpt.
    n_excerpts : int
        Excerpts spread over the track (see :func:`excerpt_starts`); a
        track no longer than one excerpt is read whole.

    Returns
    -------
    list of np.ndarray
        Mono float32 excerpts.

    Raises
    ------
    AudioError
        When the file is missing, unreadable, not audio, or too short.
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise AudioError("file not found") from None
    except OSError as error:
        raise AudioError(error.strerror or str(error)) from None
    if os.path.isdir(path):
        raise AudioError("is a folder, not an audio file")
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError("permission denied")

    try:
        excerpts, sr = _read_soundfile(path, excerpt_seconds, n_excerpts)
    except AudioError:
        raise
    except Exception:  # libsndfile refuses the format: try FFmpeg
        try:
            excerpts, sr = _read_pyav(path, excerpt_seconds, n_excerpts)
        except AudioError:
            raise
        except Exception as error:
            raise AudioError(f"cannot decode audio ({type(error).__name__}: {error})") from None

    excerpts = [e for e in excerpts if len(e) >= MIN_SECONDS * sr]
    if not excerpts:
        raise AudioError(f"no decodable audio (shorter than {MIN_SECONDS} s)")
    return [resample(e, sr, sample_rate) for e in excerpts]
