"""Synthetic music for tests: three "genres" that differ clearly in timbre
and rhythm, written in the formats a beets library holds and tagged with
mutagen."""

from __future__ import annotations

import numpy as np
import soundfile as sf

GENRES = ("techno", "ambient", "chiptune")
SUBTYPES = {"wav": ("WAV", "PCM_16"), "flac": ("FLAC", "PCM_16"), "ogg": ("OGG", "VORBIS"),
            "mp3": ("MP3", "MPEG_LAYER_III"), "aiff": ("AIFF", "PCM_16"), "opus": ("OGG", "OPUS")}


def synth_track(genre: str, seed: int, seconds: float = 4.0, sr: int = 22050) -> np.ndarray:
    """A few seconds of one synthetic genre, varied by ``seed``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = np.zeros_like(t)
    if genre == "techno":  # four-on-the-floor kick and off-beat noise hats
        beat = 60.0 / rng.uniform(120, 135)
        for start in np.arange(0, seconds, beat):
            n = t[(t >= start) & (t < start + 0.25)] - start
            y[(t >= start) & (t < start + 0.25)] += np.sin(2 * np.pi * 55 * n) * np.exp(-n * 18)
            hat = (t >= start + beat / 2) & (t < start + beat / 2 + 0.05)
            y[hat] += 0.3 * rng.standard_normal(hat.sum())
    elif genre == "ambient":  # slow, soft sine pads
        root = rng.uniform(110, 220)
        for ratio in (1.0, 1.25, 1.5, 2.0):
            y += 0.15 * np.sin(2 * np.pi * root * ratio * t + rng.uniform(0, 6)) * (1 + 0.3 * np.sin(0.5 * t))
    elif genre == "chiptune":  # fast square-wave arpeggios
        step = 60.0 / rng.uniform(140, 160) / 4
        notes = rng.uniform(440, 880) * np.array([1.0, 1.26, 1.5, 2.0])
        for i, start in enumerate(np.arange(0, seconds, step)):
            part = (t >= start) & (t < start + step)
            y[part] = 0.25 * np.sign(np.sin(2 * np.pi * notes[i % 4] * t[part]))
    else:
        raise ValueError(genre)
    y += 0.003 * rng.standard_normal(len(t))
    return (0.8 * y / max(1e-9, np.abs(y).max())).astype(np.float32)


def write_audio(path, y: np.ndarray, sr: int, ext: str | None = None) -> None:
    """Write audio in the format named by the extension (``m4a`` via PyAV)."""
    ext = ext or str(path).rsplit(".", 1)[-1]
    if ext == "m4a":
        import av

        with av.open(str(path), "w", format="mp4") as container:
            stream = container.add_stream("aac", rate=sr)
            stream.layout = "mono"
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y[None, :]), format="flt", layout="mono")
            frame.sample_rate = sr
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
        return
    fmt, subtype = SUBTYPES[ext]
    if ext == "opus":  # Opus only runs at 48 kHz
        import soxr

        y, sr = soxr.resample(y, sr, 48000), 48000
    sf.write(str(path), y, sr, format=fmt, subtype=subtype)


def tag(path, genre: str | None = None, artist: str = "", title: str = "") -> None:
    """Write genre, artist and title tags with mutagen."""
    import mutagen

    path = str(path)
    if path.endswith((".wav", ".aiff")):
        from mutagen.id3 import TCON, TIT2, TPE1

        audio = mutagen.File(path)
        if audio.tags is None:
            audio.add_tags()
        for frame, value in ((TCON, genre), (TPE1, artist), (TIT2, title)):
            if value:
                audio.tags.add(frame(encoding=3, text=[value]))
        audio.save()
        return
    audio = mutagen.File(path, easy=True)
    if audio.tags is None:
        audio.add_tags()
    for key, value in (("genre", genre), ("artist", artist), ("title", title)):
        if value:
            audio[key] = [value]
    audio.save()


def make_library_files(folder, per_genre: int = 8, seconds: float = 4.0, spellings=None, seed: int = 0):
    """Tagged synthetic tracks, formats cycling over MP3, FLAC, Ogg and WAV.

    Two tracks per artist, so an artist-grouped split has several artists
    per genre. Returns ``[(path, genre), ...]``.
    """
    spellings = spellings or {}
    formats = ("mp3", "flac", "ogg", "wav")
    files = []
    for g, genre in enumerate(GENRES):
        for i in range(per_genre):
            ext = formats[i % len(formats)]
            path = folder / f"{genre}_{i:02d}.{ext}"
            write_audio(path, synth_track(genre, seed=seed + 100 * g + i, seconds=seconds), 22050)
            written = spellings.get(genre, [genre])[i % len(spellings.get(genre, [genre]))]
            tag(path, genre=written, artist=f"{genre} artist {i // 2}", title=f"{genre} {i}")
            files.append((path, genre))
    return files
