"""Log-mel spectrograms, computed with a precomputed filterbank.

The mel filterbank follows Slaney's Auditory Toolbox (the default of
librosa), so features match those musicnn was trained on, without paying
librosa's import and JIT cost in every worker process.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .audio import load_excerpts


@dataclasses.dataclass(frozen=True)
class FeatureSettings:
    """How audio becomes a log-mel spectrogram; saved inside every model.

    Attributes
    ----------
    sample_rate : int
        Audio is resampled to this rate (Hz).
    n_fft : int
        FFT size in samples.
    hop_length : int
        Samples between frames.
    n_mels : int
        Mel bands.
    excerpt_seconds : float
        Length of each excerpt decoded from a track.
    n_excerpts : int
        Excerpts decoded per track.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    excerpt_seconds: float = 10.0
    n_excerpts: int = 3

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "FeatureSettings":
        """Rebuild settings saved by :meth:`as_dict`, checking each one.

        Raises
        ------
        ValueError
            When ``values`` holds settings this version does not know, or
            a value of the wrong type or outside what can work.
        """
        if not isinstance(values, dict):
            raise ValueError("not a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        if set(values) != names:
            unknown, missing = set(values) - names, names - set(values)
            raise ValueError(", ".join([f"unsupported: {', '.join(sorted(unknown))}"] * bool(unknown)
                                       + [f"missing: {', '.join(sorted(missing))}"] * bool(missing)))
        for name, (low, high) in _RANGES.items():
            value = values[name]
            whole = name != "excerpt_seconds"
            if (isinstance(value, bool) or not isinstance(value, int if whole else (int, float))
                    or not low <= value <= high):
                kind = "an integer" if whole else "a number"
                raise ValueError(f"{name} must be {kind} from {low} to {high}, not {value!r}")
        settings = cls(**values)
        if (settings.n_fft & (settings.n_fft - 1) or settings.hop_length > settings.n_fft
                or settings.n_fft > MAX_FFT_PER_HOP * settings.hop_length):
            raise ValueError(f"n_fft {settings.n_fft} must be a power of two, from hop_length "
                             f"{settings.hop_length} to {MAX_FFT_PER_HOP} times it")
        audio = settings.n_excerpts * settings.excerpt_seconds
        if audio > MAX_SECONDS_PER_TRACK:
            raise ValueError(f"{settings.n_excerpts} excerpts of {settings.excerpt_seconds} s: {audio:g} s of audio "
                             f"per track, more than {MAX_SECONDS_PER_TRACK} s")
        return settings

    def frames(self, seconds: float) -> int:
        """Number of spectrogram frames in ``seconds`` of audio."""
        return 1 + int(seconds * self.sample_rate) // self.hop_length


#: What each setting can be: settings come from model files, which must not make a run slower or larger
#: than a few times what the backbones ask for (musicnn reads 4 x 3 s, the scratch CNN 3 x 10 s a track).
_RANGES = {"sample_rate": (8000, 48000), "n_fft": (64, 4096), "hop_length": (16, 4096), "n_mels": (8, 256),
           "excerpt_seconds": (0.5, 30.0), "n_excerpts": (1, 16)}
#: Most audio decoded per track, all excerpts together (seconds).
MAX_SECONDS_PER_TRACK = 120
#: Largest FFT per hop: bounds the spectrogram's size per second of audio.
MAX_FFT_PER_HOP = 4


def hz_to_mel(hz):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel):
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, linear)


@functools.lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Area-normalised triangular mel filters, shape ``(n_mels, 1 + n_fft // 2)``."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_hz[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def log_mel(y: np.ndarray, settings: FeatureSettings) -> np.ndarray:
    """Log-compressed mel spectrogram of mono audio.

    Power spectrogram (Hann window, centred frames, reflected edges), mel
    filterbank, then ``log10(10000 * x + 1)`` in float32, the compression
    musicnn was trained with.

    Parameters
    ----------
    y : np.ndarray
        Mono audio at ``settings.sample_rate``.
    settings : FeatureSettings

    Returns
    -------
    np.ndarray
        float32, shape ``(n_mels, frames)``.
    """
    # scipy's FFT, not torch's: feature workers then never import torch
    # (2 s of start-up per process), and it is as fast on one core.
    import scipy.fft

    n_fft, hop = settings.n_fft, settings.hop_length
    signal = np.ascontiguousarray(y, dtype=np.float32)
    if len(signal) < n_fft:
        signal = np.pad(signal, (0, n_fft - len(signal)))
    padded = np.pad(signal, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    spectrum = scipy.fft.rfft(frames * _hann(n_fft), axis=1, workers=1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    mel = power @ _filterbank_transposed(settings.sample_rate, n_fft, settings.n_mels)
    mel *= 10000.0
    mel += 1.0
    return np.log10(mel, out=mel).T


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """Periodic Hann window (the STFT convention of librosa and torch)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _filterbank_transposed(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    return np.ascontiguousarray(mel_filterbank(sample_rate, n_fft, n_mels).T)


def fixed_frames(spectrogram: np.ndarray, frames: int) -> np.ndarray:
    """Crop or tile a ``(n_mels, T)`` spectrogram to exactly ``frames`` frames.

    Tiling rather than zero padding keeps the statistics of very short
    tracks close to those of the music they hold.
    """
    length = spectrogram.shape[1]
    if length >= frames:
        return spectrogram[:, :frames]
    reps = -(-frames // length)
    return np.tile(spectrogram, (1, reps))[:, :frames]


def track_log_mels(path, settings: FeatureSettings) -> np.ndarray:
    """Log-mel spectrograms of a track's excerpts.

    Returns
    -------
    np.ndarray
        float32, shape ``(n_excerpts, n_mels, frames)``; every excerpt has
        the frame count of a full excerpt (short tracks are tiled).

    Raises
    ------
    genre_cnn_core.audio.AudioError
        When the file cannot be decoded.
    """
    excerpts = load_excerpts(path, settings.sample_rate, settings.excerpt_seconds, settings.n_excerpts)
    frames = settings.frames(settings.excerpt_seconds)
    return np.stack([fixed_frames(log_mel(e, settings), frames) for e in excerpts])
