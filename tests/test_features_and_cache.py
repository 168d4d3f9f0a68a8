import os

import numpy as np

from genre_cnn_core import RunConfig
from genre_cnn_core.backbones.scratch import LogMelExtractor
from genre_cnn_core.cache import FeatureCache
from genre_cnn_core.container import audio_identity
from genre_cnn_core.extract import extract_features
from genre_cnn_core.features import FeatureSettings, log_mel, mel_filterbank


def test_log_mel_matches_librosa():
    import librosa

    y = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    reference = librosa.feature.melspectrogram(y=y, sr=16000, n_fft=512, hop_length=256, n_mels=96,
                                               pad_mode="reflect")
    ours = log_mel(y, FeatureSettings())
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, np.log10(10000 * reference + 1), atol=1e-4)
    np.testing.assert_allclose(mel_filterbank(22050, 1024, 128),
                               librosa.filters.mel(sr=22050, n_fft=1024, n_mels=128), atol=1e-6)


def test_cache_reuses_entries_keyed_by_audio_and_settings(library_files, tmp_path):
    cache = FeatureCache(str(tmp_path / "cache"))
    path = str(library_files[0][0])
    extractor = LogMelExtractor(FeatureSettings(excerpt_seconds=2.0, n_excerpts=2))
    [(_, first, error)] = list(extract_features([path], extractor, RunConfig(cache)))
    assert error is None and first.dtype == np.float16
    namespace = extractor.namespace()
    key = cache.key(audio_identity(path), namespace)
    assert np.array_equal(cache.load(key, namespace), first)
    assert cache.key(audio_identity(path), {**namespace, "n_mels": 64}) != key
    assert cache.size() == (1, os.path.getsize(cache._file(key)))
    # An entry is only ever what it was made for: asked for as something else, it is dropped.
    assert cache.load(key, {**namespace, "n_mels": 64}) is None and cache.size() == (0, 0)
    [(_, first, error)] = list(extract_features([path], extractor, RunConfig(cache)))

    # A damaged entry is dropped and recomputed, not trusted.
    entry = cache._file(key)
    with open(entry, "r+b") as handle:
        handle.truncate(40)
    assert cache.load(key, namespace) is None
    [(_, again, _)] = list(extract_features([path], extractor, RunConfig(cache)))
    assert np.array_equal(again, first)
    assert not [p for p in (tmp_path / "cache").rglob(".tmp-*")]

    # Entries are not fsync'ed: one a power failure left whole in size but zeroed in
    # part must fail its checksum, not be served.
    with open(entry, "r+b") as handle:
        size = len(handle.read())
        handle.seek(200)
        handle.write(bytes(size - 200))
    assert cache.load(key, namespace) is None and not os.path.exists(entry)


def test_foreign_zeroed_and_misshapen_entries_are_recomputed(library_files, tmp_path):
    import zlib

    cache = FeatureCache(str(tmp_path / "cache"))
    extractor = LogMelExtractor(FeatureSettings(excerpt_seconds=2.0, n_excerpts=2))
    namespace = extractor.namespace()
    paths = [str(p) for p, _ in library_files[:2]]
    features = {i: f for i, f, _ in extract_features(paths, extractor, RunConfig(cache))}
    keys = [cache.key(audio_identity(p), namespace) for p in paths]

    # Another track's entry copied under this track's name: its header says whose it is.
    with open(cache._file(keys[1]), "rb") as handle:
        foreign = handle.read()
    with open(cache._file(keys[0]), "wb") as handle:
        handle.write(foreign)
    assert cache.load(keys[0], namespace) is None
    # Zeros with a valid checksum are not an entry at all.
    zeros = bytes(4000)
    with open(cache._file(keys[0]), "wb") as handle:
        handle.write(zeros + zlib.crc32(zeros).to_bytes(4, "little"))
    assert cache.load(keys[0], namespace) is None
    # A well-formed entry of the wrong shape is refused by the extractor and recomputed.
    cache.store(keys[0], namespace, np.zeros((2, 96, 7), np.float16))
    [(_, again, error)] = list(extract_features(paths[:1], extractor, RunConfig(cache)))
    assert error is None and np.array_equal(again, features[0])
    assert np.array_equal(cache.load(keys[0], namespace), features[0])


def test_a_file_replaced_by_other_audio_with_the_same_size_and_mtime_misses(library_files, tmp_path):
    import shutil

    cache = FeatureCache(str(tmp_path / "cache"))
    extractor = LogMelExtractor(FeatureSettings(excerpt_seconds=2.0, n_excerpts=1))
    path = tmp_path / "track.wav"
    shutil.copy(library_files[3][0], path)  # WAV: same size for every synthetic track of one length
    [(_, first, _)] = list(extract_features([str(path)], extractor, RunConfig(cache)))
    stat = os.stat(path)
    other = library_files[7][0]
    assert os.path.getsize(other) == stat.st_size
    shutil.copy(other, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    [(_, second, _)] = list(extract_features([str(path)], extractor, RunConfig(cache)))
    assert not np.array_equal(first, second)


def test_disabled_cache_writes_nothing(library_files, tmp_path):
    cache = FeatureCache(None)
    extractor = LogMelExtractor(FeatureSettings(excerpt_seconds=2.0, n_excerpts=1))
    [(_, features, _)] = list(extract_features([str(library_files[0][0])], extractor, RunConfig(cache)))
    assert features is not None and not cache.enabled and cache.size() == (0, 0)


def test_cache_folder_that_cannot_be_used_is_disabled_with_a_reason(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = FeatureCache(str(blocker))
    assert not cache.enabled and "file" in cache.problem


def test_parallel_extraction_matches_serial_and_reports_bad_files(library_files, tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(b"fLaC" + b"\0" * 100)
    paths = [str(p) for p, _ in library_files[:4]] + [str(bad)]
    extractor = LogMelExtractor(FeatureSettings(excerpt_seconds=2.0, n_excerpts=1))
    serial = {i: (f, e) for i, f, e in extract_features(paths, extractor, RunConfig(n_jobs=1))}
    parallel = {i: (f, e) for i, f, e in extract_features(paths, extractor, RunConfig(n_jobs=2))}
    assert sorted(parallel) == list(range(5))
    for i in range(4):
        assert serial[i][1] is None and np.array_equal(serial[i][0], parallel[i][0])
    assert serial[4][0] is None and parallel[4][1] == serial[4][1]


def test_log_mel_workers_never_import_torch(library_files, tmp_path):
    # What a loky worker runs for the scratch backbone: unpickle the task, decode,
    # log-mel, cache. torch's import would add seconds to every worker's start.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import pickle, sys
        from genre_cnn_core.cache import FeatureCache
        from genre_cnn_core.backbones.scratch import LogMelExtractor
        from genre_cnn_core.container import audio_identity
        from genre_cnn_core.extract import _compute_batch
        from genre_cnn_core.features import FeatureSettings
        task = pickle.loads(pickle.dumps((LogMelExtractor(FeatureSettings(excerpt_seconds=2.0, n_excerpts=2)),
                                          FeatureCache({str(tmp_path)!r}))))
        path = {str(library_files[0][0])!r}
        key = task[1].key(audio_identity(path), task[0].namespace())
        [(index, features, error)] = _compute_batch(*task, [(0, path, key)])
        assert error is None and features.shape[:2] == (2, 96), (error, features)
        print("torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
