"""Decoding short excerpts of audio files by seeking, never whole tracks.

libsndfile (through soundfile) reads WAV, AIFF, FLAC, Ogg Vorbis, Opus and
MP3; anything else (MP4/M4A with AAC or ALAC, WMA, ...) is decoded with
PyAV, whose wheels carry their own FFmpeg.

Excerpts are placed by the length the file's header claims. A file that
lies about it (a truncated download, a damaged Xing or STREAMINFO frame
count) gives itself away when an excerpt is not where the claim puts it;
its real length is then measured by decoding it once from the start, and
the excerpts are placed over that. libsndfile reads no further than a
length that is too short (a FLAC whose STREAMINFO claims 1,000 samples) and
finds no audio in a streaming WAV (its data size is 0); FFmpeg decodes what
both hold. So a file in which libsndfile finds no audio is read again with
FFmpeg, and so is a FLAC holding more bytes of frames than its claimed
samples would fill uncompressed (its length is then measured).

No file may hold up a run: only regular files are opened (a FIFO named
``x.mp3`` would block), and the decoders read through a budget of
:data:`MAX_READ_BYTES` per file (:data:`MAX_PROBE_BYTES` to find its audio
stream), beyond which the file reads as ended: 20 GB of zeros named
``.mp3`` fail in seconds. Samples that are not finite or far beyond full
scale fail the file: such audio is not music, and numbers that large
overflow every computation that follows.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import numpy as np

from .files import describe_os_error, open_regular, regular_file_problem

#: Audio decoded before an excerpt and thrown away. MP3 frames borrow bits
#: from earlier frames (the bit reservoir), so the first frames after a seek
#: decode wrongly; half a second covers that.
PREROLL_SECONDS = 0.5

#: Shortest decodable audio worth a prediction.
MIN_SECONDS = 0.1

#: How much shorter than its header promised an excerpt may come back before
#: the header is distrusted: decoders trim encoder delay and padding (MP3,
#: Vorbis, Opus pre-skip) a little differently from what headers count.
SHORTFALL_SECONDS = 0.05

#: Frames decoded at a time when a file is read from its start.
SCAN_BLOCK_FRAMES = 65536

#: A length measured up to a point where libsndfile fails is exact to this
#: many frames: finer reads would cost a seek each (soundfile seeks after
#: every read), and seeks next to damaged data are slow.
MEASURE_FRAMES = 256

#: Bytes the decoders may read from one file, every pass together. Excerpts
#: are found by seeking; only a file whose header lies is read through, and
#: a music file is smaller than this.
MAX_READ_BYTES = 1 << 30

#: Bytes FFmpeg may read while it looks for a file's audio stream: headers
#: and cover art are smaller. A file of zeros named ``.mp3`` is searched for
#: an MPEG frame to its end without it.
MAX_PROBE_BYTES = 64 << 20

#: Largest sample magnitude taken for audio (full scale is 1.0). Float files
#: may go a little past full scale; beyond this they hold no music, and the
#: power of their spectrum would overflow float32.
MAX_AMPLITUDE = 1000.0

#: Bytes of FLAC frames per byte of the raw samples they hold, at most: a
#: block FLAC cannot compress is stored verbatim, with a few bytes of header.
FLAC_EXPANSION = 1.05

#: Bytes of FLAC frames beyond what any claimed length accounts for: frame
#: headers and a last partial block.
FLAC_SLACK_BYTES = 65536

#: Bytes per sample of the integer sample formats FLAC stores.
_SAMPLE_WIDTHS = {"PCM_S8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4}

#: How much longer than its header claims an excerpt may come back before
#: the claim is taken for a lie (decoders add a little encoder padding).
OVERRUN_SECONDS = 0.5


class AudioError(Exception):
    """A file could not be decoded; ``str(error)`` is a one-line reason."""


class _ClaimTooShort(Exception):
    """A header claims fewer samples than the file's audio holds, and libsndfile reads no further."""


class _Budget:
    """Bytes the decoders may still read from one file, and whether they ran out."""

    def __init__(self, limit: int):
        self.limit = self.left = limit
        self.spent = False

    def take(self, wanted: int) -> int:
        """How many of ``wanted`` bytes may be read now (0 once the budget is spent)."""
        allowed = max(0, min(wanted, self.left))
        if allowed < wanted:
            self.spent = True
        return allowed

    @contextlib.contextmanager
    def capped(self, limit: int):
        """At most ``limit`` of the bytes left may be read inside the block."""
        kept = max(0, self.left - limit)
        self.left -= kept
        try:
            yield
        finally:
            self.left += kept


class _BudgetedFile:
    """A binary file whose reads end (as at its end) once its :class:`_Budget` is spent.

    Decoders call back into it (libsndfile's virtual I/O, FFmpeg's AVIO);
    an exception there would print a traceback from C, an end of file does not.
    """

    def __init__(self, handle, budget: _Budget, name: str):
        self.handle, self.budget = handle, budget
        self.name = name  # FFmpeg guesses the format from it

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.budget.left + 1
        data = self.handle.read(self.budget.take(size))
        self.budget.left -= len(data)
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        count = self.handle.readinto(view[:self.budget.take(len(view))])
        self.budget.left -= count
        return count

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.handle.seek(offset, whence)

    def tell(self) -> int:
        return self.handle.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True


class _Source:
    """A file to decode and the read budget its passes share."""

    def __init__(self, path, budget: _Budget | None = None):
        self.path, self.budget = path, budget or _Budget(MAX_READ_BYTES)

    @contextlib.contextmanager
    def open(self):
        with open_regular(self.path) as handle:
            yield _BudgetedFile(handle, self.budget, os.fsdecode(self.path))


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
    """Average the channels of ``(samples, channels)`` float32 audio into mono.

    Raises
    ------
    AudioError
        When a sample is NaN, infinite or larger than :data:`MAX_AMPLITUDE`:
        checked before any arithmetic, which such values would overflow.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.size:
        if not np.isfinite(frames).all():
            raise AudioError("the audio holds samples that are not finite numbers (NaN, infinite, or beyond "
                             "float32): not music")
        peak = float(np.abs(frames).max())
        if peak > MAX_AMPLITUDE:
            raise AudioError(f"the audio holds samples of {peak:.3g}, far beyond full scale (1.0): not music")
    return frames.mean(axis=1, dtype=np.float32) if frames.ndim == 2 else frames


def resample(y: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono audio with soxr (the resampler librosa uses)."""
    if orig_sr == target_sr or len(y) == 0:
        return y.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(y, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def _excerpt_windows(starts, excerpt_seconds, sr, available, origin=0.0):
    """Empty excerpts to be filled from audio decoded in one pass.

    Parameters
    ----------
    starts : list of float
        Start times of the excerpts, in seconds.
    excerpt_seconds : float
        Length of one excerpt.
    sr : int
        Sample rate of the decoded audio.
    available : int
        Samples the track really holds; no excerpt reaches past them.
    origin : float
        Time of the first decoded sample.

    Returns
    -------
    list of (int, np.ndarray)
        Index of each excerpt's first sample and its zeroed buffer.
    """
    windows = []
    for start in starts:
        first = max(0, int(round((start - origin) * sr)))
        length = max(0, min(int(round(excerpt_seconds * sr)), available - first))
        windows.append((first, np.zeros(length, np.float32)))
    return windows


def _copy_into_windows(mono, offset, windows):
    """Copy the part of a block of mono audio, whose first sample is sample ``offset``, that falls in each window."""
    for first, buffer in windows:
        low, high = max(first, offset), min(first + len(buffer), offset + len(mono))
        if low < high:
            buffer[low - first:high - first] = mono[low - offset:high - offset]


def _cut_windows(windows, decoded):
    """The excerpts of filled windows, cut where the decoded audio stopped."""
    return [buffer[:max(0, min(len(buffer), decoded - first))] for first, buffer in windows]


@contextlib.contextmanager
def _open_soundfile(source):
    import soundfile as sf

    # A file object, not the name: libsndfile cannot open names that are not UTF-8.
    with source.open() as handle, sf.SoundFile(handle) as f:
        yield f


def _soundfile_plan(start, excerpt_seconds, sr, available, seekable=True):
    """How an excerpt is read: the frame reading starts at, the frames read, and the preroll frames dropped."""
    preroll = min(PREROLL_SECONDS, start) if seekable else 0.0
    first = int(round((start - preroll) * sr))
    return first, min(int(round((preroll + excerpt_seconds) * sr)), available - first), int(round(preroll * sr))


def _soundfile_excerpts(f, starts, excerpt_seconds, available):
    """Excerpts read by seeking to each start.

    Returns None as soon as one comes back shorter than the ``available``
    frames allow: the file does not hold the audio where it says it does.
    libsndfile's errors (``RuntimeError``) propagate.
    """
    excerpts = []
    for start in starts:
        first, wanted, preroll = _soundfile_plan(start, excerpt_seconds, f.samplerate, available, f.seekable())
        if f.seekable():
            f.seek(first)
        frames = f.read(wanted, dtype="float32", always_2d=True)
        if len(frames) < wanted - SHORTFALL_SECONDS * f.samplerate:
            return None
        excerpts.append(to_mono(frames[preroll:]))
    return excerpts


def _soundfile_decodable_frames(source):
    """Frames that decode from the start of a file, whatever its header says.

    A read that fails loses its whole block, so the failing block is read
    again in blocks a sixteenth the size from the last frame that decoded,
    down to :data:`MEASURE_FRAMES`.
    """
    counted, block = 0, SCAN_BLOCK_FRAMES
    while True:
        with _open_soundfile(source) as f:
            if counted:
                try:
                    f.seek(counted)
                except RuntimeError:
                    return counted
            buffer = np.empty((block, f.channels), np.float32)
            try:
                while True:
                    decoded = len(f.read(out=buffer))
                    counted += decoded
                    if decoded < block:
                        return counted
            except RuntimeError:  # soundfile's LibsndfileError is one
                if block <= MEASURE_FRAMES:
                    return counted
                block = max(MEASURE_FRAMES, block // 16)


def _soundfile_windows(f, starts, excerpt_seconds, available):
    """Excerpts read in one pass from the start, skipping what lies between them.

    Each run of overlapping excerpts is read in one call, preroll included,
    as :func:`_soundfile_excerpts` reads it: soundfile repositions the file
    after every read, and a repositioned MP3 decoder has lost its bit
    reservoir, so audio read in several calls is damaged where they meet.
    """
    plans = sorted(_soundfile_plan(start, excerpt_seconds, f.samplerate, available) for start in starts)
    runs = [[plans[0]]]
    for plan in plans[1:]:
        run_end = max(first + wanted for first, wanted, _ in runs[-1])
        if plan[0] < run_end:
            runs[-1].append(plan)
        else:
            runs.append([plan])
    buffer = np.empty((SCAN_BLOCK_FRAMES, f.channels), np.float32)
    excerpts, position = [], 0
    try:
        for run in runs:
            run_first = run[0][0]
            while position < run_first:
                skipped = len(f.read(out=buffer[:min(SCAN_BLOCK_FRAMES, run_first - position)]))
                if not skipped:
                    return excerpts
                position += skipped
            frames = f.read(max(first + wanted for first, wanted, _ in run) - run_first, dtype="float32",
                            always_2d=True)
            position += len(frames)
            for first, wanted, preroll in run:
                excerpts.append(to_mono(frames[first - run_first + preroll:first - run_first + wanted]))
    except RuntimeError:
        pass  # the excerpts read before the damage are kept
    return excerpts


def _read_soundfile(source, excerpt_seconds, n_excerpts):
    with quiet_stderr():
        failure = None
        with _open_soundfile(source) as f:
            sr = f.samplerate
            claimed = f.frames if 0 < f.frames < 2**62 else None
            if claimed is not None and _claims_too_few_samples(f, claimed, source):
                raise _ClaimTooShort
            if claimed is not None:
                starts = excerpt_starts(claimed / sr, excerpt_seconds, n_excerpts)
                try:
                    excerpts = _soundfile_excerpts(f, starts, excerpt_seconds, claimed)
                except RuntimeError as error:  # e.g. a seek past the end of a truncated file
                    excerpts, failure = None, error
                if excerpts is not None:
                    return excerpts, sr

        # The header's length is wrong or missing: place the excerpts over the real one.
        real = _soundfile_decodable_frames(source)
        if real == 0:
            if failure is not None:
                raise failure
            return [], sr
        starts = excerpt_starts(real / sr, excerpt_seconds, n_excerpts)
        excerpts = None
        with _open_soundfile(source) as f:
            if f.seekable():
                try:
                    excerpts = _soundfile_excerpts(f, starts, excerpt_seconds, real)
                except RuntimeError:
                    pass  # seeking does not work in this file: read it through
        if excerpts is None:
            with _open_soundfile(source) as f:
                excerpts = _soundfile_windows(f, starts, excerpt_seconds, real)
    return excerpts, sr


def _claims_too_few_samples(f, claimed, source) -> bool:
    """Whether a FLAC file holds more bytes of frames than the samples its STREAMINFO claims could fill.

    libsndfile stops reading at the claim; FFmpeg decodes every frame.
    """
    from .container import payload_bytes

    width = _SAMPLE_WIDTHS.get(f.subtype)
    if f.format != "FLAC" or width is None:
        return False
    raw = claimed * f.channels * width
    return payload_bytes(source.path) > FLAC_EXPANSION * raw + FLAC_SLACK_BYTES


@contextlib.contextmanager
def _open_pyav(source):
    import av

    with source.open() as handle:
        try:
            with source.budget.capped(MAX_PROBE_BYTES):
                container = av.open(handle)
        except av.FFmpegError as error:
            raise AudioError(f"not a readable audio file ({error.strerror or error})") from None
        with container:
            yield container


def _pyav_audio_stream(container):
    """The first audio stream of a container, its sample rate and claimed duration (None when unknown)."""
    import av

    if not container.streams.audio:
        raise AudioError("no audio stream")
    stream = container.streams.audio[0]
    sr = stream.sample_rate or stream.codec_context.sample_rate
    if not sr or sr <= 0:
        raise AudioError("no sample rate in the audio stream")
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = None
    return stream, sr, duration if duration is not None and duration > 0 else None


def _pyav_excerpts(container, stream, sr, starts, excerpt_seconds, available_seconds):
    """Excerpts decoded after seeking to each start.

    Returns None as soon as one comes back shorter than ``available_seconds``
    allow, or longer. FFmpeg's errors propagate.
    """
    excerpts = []
    for start in starts:
        excerpt = _decode_pyav_excerpt(container, stream, sr, start, excerpt_seconds)
        expected = min(excerpt_seconds, available_seconds - start)
        # Longer than the claim allows: the header says the track is shorter than it is.
        if not expected - SHORTFALL_SECONDS <= len(excerpt) / sr <= expected + OVERRUN_SECONDS:
            return None
        excerpts.append(excerpt)
    return excerpts


def _pyav_decodable_span(container, stream, sr):
    """Time of the first sample and seconds of audio that decode from the start of a stream."""
    import av

    origin, seconds = None, 0.0
    try:
        for frame in container.decode(stream):
            if origin is None:
                origin = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
            seconds += frame.samples / (frame.sample_rate or sr)
    except av.FFmpegError:
        pass  # the audio ends where the damage starts
    return origin or 0.0, seconds


def _pyav_windows(container, stream, sr, starts, excerpt_seconds, origin, available_seconds):
    """Excerpts decoded in one pass from the start, keeping only their windows."""
    import av

    windows = _excerpt_windows(starts, excerpt_seconds, sr, int(round(available_seconds * sr)), origin)
    end = max(first + len(buffer) for first, buffer in windows)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
    position = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunk = to_mono(out.to_ndarray().reshape(-1))
                _copy_into_windows(chunk, position, windows)
                position += len(chunk)
            if position >= end:
                break
    except av.FFmpegError:
        pass  # the excerpts keep what decoded before the damage
    return _cut_windows(windows, position)


def _read_pyav(source, excerpt_seconds, n_excerpts, trust_claim=True):
    import av

    failure = None
    with _open_pyav(source) as container:
        stream, sr, claimed = _pyav_audio_stream(container)
        if claimed is not None and trust_claim:
            starts = excerpt_starts(claimed, excerpt_seconds, n_excerpts)
            try:
                excerpts = _pyav_excerpts(container, stream, sr, starts, excerpt_seconds, claimed)
            except av.FFmpegError as error:  # e.g. damaged data where the claim put an excerpt
                excerpts, failure = None, error
            if excerpts is not None:
                return excerpts, sr

    # The header's length is wrong or missing: place the excerpts over the real one.
    with _open_pyav(source) as container:
        origin, real = _pyav_decodable_span(container, container.streams.audio[0], sr)
    if real <= 0:
        if failure is not None:
            raise failure
        return [], sr
    starts = excerpt_starts(real, excerpt_seconds, n_excerpts)
    excerpts = None
    with _open_pyav(source) as container:
        try:
            excerpts = _pyav_excerpts(container, container.streams.audio[0], sr, starts, excerpt_seconds, real)
        except av.FFmpegError:
            pass  # seeking does not work in this file: decode it through
    if excerpts is None:
        with _open_pyav(source) as container:
            excerpts = _pyav_windows(container, container.streams.audio[0], sr, starts, excerpt_seconds,
                                     origin, real)
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

    Notes
    -----
    The excerpts are placed over the length the file's header claims and
    read by seeking. When one is not there (a seek fails, or a read comes
    back short while the claim said it fits), or the header gives no
    length, the file is decoded once from the start to count the audio it
    really holds, and the excerpts are placed over that; where seeking
    fails again, a second pass from the start keeps only the excerpts.
    Either pass holds no more than a block of audio at a time.
    """
    problem = regular_file_problem(path)
    if problem:
        raise AudioError(problem)
    try:
        size = os.path.getsize(path)
    except OSError as error:  # gone since it was looked at
        raise AudioError(describe_os_error(error)) from None
    if size == 0:
        raise AudioError("empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioError("permission denied")

    source = _Source(path)
    try:
        excerpts, sr = _decode(source, excerpt_seconds, n_excerpts)
    except AudioError:
        if source.budget.spent:
            raise _out_of_budget(source) from None
        raise
    except OSError as error:  # replaced by something else since it was looked at
        raise AudioError(describe_os_error(error)) from None
    except Exception as error:
        if source.budget.spent:
            raise _out_of_budget(source) from None
        raise AudioError(f"cannot decode audio ({type(error).__name__}: {error})") from None

    excerpts = [e for e in excerpts if len(e) >= MIN_SECONDS * sr]
    if not excerpts:
        if source.budget.spent:
            raise _out_of_budget(source)
        raise AudioError(f"no decodable audio (shorter than {MIN_SECONDS} s)")
    return [resample(e, sr, sample_rate) for e in excerpts]


def _decode(source, excerpt_seconds, n_excerpts):
    """Excerpts and their sample rate, by libsndfile, or by FFmpeg where it reads more."""
    try:
        excerpts, sr = _read_soundfile(source, excerpt_seconds, n_excerpts)
    except (AudioError, OSError):
        raise
    except _ClaimTooShort:  # FFmpeg finds the length by decoding
        return _read_pyav(source, excerpt_seconds, n_excerpts, trust_claim=False)
    except Exception:  # libsndfile refuses the format: try FFmpeg
        return _read_pyav(source, excerpt_seconds, n_excerpts)
    found = sum(len(e) for e in excerpts) / sr
    if found < MIN_SECONDS:  # nothing found where FFmpeg may find audio (a streaming WAV)
        try:
            other, other_sr = _read_pyav(source, excerpt_seconds, n_excerpts)
        except Exception:  # FFmpeg reads no more of it: libsndfile's reading stands
            return excerpts, sr
        if sum(len(e) for e in other) / other_sr > found + OVERRUN_SECONDS:
            return other, other_sr
    return excerpts, sr


def _out_of_budget(source) -> AudioError:
    read = (source.budget.limit - source.budget.left) / 2**20
    return AudioError(f"no audio found in the {read:.0f} MiB read: not an audio file, or damaged; skipped")
