#!/usr/bin/env python3
"""Generate ``tests/fixtures/musicnn_reference.npz`` with musicnn's ORIGINAL graph.

This runs the TensorFlow graph shipped in the musicnn 0.1.0 wheel (MetaGraph
``musicnn/MSD_musicnn/.meta`` + checkpoint) on a fixed, deterministic input,
so that ``tests/test_musicnn_port.py`` can check our PyTorch port
(:mod:`genre_cnn_core.musicnn`) against it.  No musicnn code is imported or
copied: the graph is rebuilt by ``tf.compat.v1.train.import_meta_graph``.

TensorFlow is NOT a dependency of this project.  Run this script once, in a
throwaway virtualenv outside the repository::

    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu numpy librosa   # TF 2.21.0 was used
    pip download musicnn==0.1.0 --no-deps -d /tmp/mn
    /tmp/tfvenv/bin/python scripts/make_musicnn_reference.py \
        /tmp/mn/musicnn-0.1.0-py3-none-any.whl

Input patches (float32, shape (3, 187, 96) = (patch, time frame, mel band),
values rounded to float16, as musicnn's own extractor stores them):

0. seeded random "log-mel-like" patch, values in [0, ~4.5];
1. log-mel patch of a synthetic A-major chord (see :func:`chord_signal`),
   computed like musicnn's extractor: 16 kHz, n_fft 512, hop 256, 96 mel
   bands, centred STFT with reflect padding (librosa < 0.10 default),
   ``log10(10000 * mel + 1)`` in float32;
2. silence (all zeros), which exercises the zero padding at the patch edges.

Saved arrays: ``x`` (float16), ``logits``, ``probs`` (sigmoid), ``mean_pool``
and ``max_pool`` (753-d each), ``penultimate`` (200-d), plus ``tf_version``
and ``librosa_version`` strings.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "fixtures" / "musicnn_reference.npz"
CKPT_DIR = "musicnn/MSD_musicnn/"

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
N_FRAMES = 187
SEED = 20190801


def random_patch(rng: np.random.Generator) -> np.ndarray:
    """A log-mel-like patch: falling spectral envelope, onsets and noise."""
    mel = np.arange(N_MELS, dtype=np.float64)
    t = np.arange(N_FRAMES, dtype=np.float64)
    envelope = 3.2 - 2.2 * mel / N_MELS
    onsets = 0.8 * np.exp(-((t[:, None] % 23) / 6.0))  # a beat every 23 frames
    noise = 0.45 * rng.standard_normal((N_FRAMES, N_MELS))
    return np.clip(envelope[None, :] + onsets + noise, 0.0, None)


def chord_signal(seconds: float = 3.0) -> np.ndarray:
    """A-major chord (A3, C#4, E4, A4), 5 harmonics each, re-struck every 0.75 s."""
    rng = np.random.default_rng(SEED + 1)
    t = np.arange(int(seconds * SR)) / SR
    y = np.zeros_like(t)
    for f0 in (220.0, 277.183, 329.628, 440.0):
        for h in range(1, 6):
            y += np.sin(2 * np.pi * f0 * h * t + 0.3 * h) / h
    envelope = np.exp(-3.0 * (t % 0.75))
    y = 0.1 * y * envelope + 0.003 * rng.standard_normal(t.shape)
    return y.astype(np.float32)


def chord_patch() -> tuple[np.ndarray, str]:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=chord_signal(), sr=SR, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
        center=True, pad_mode="reflect").T
    # float32 log compression.  (musicnn's extractor casts the mel power to
    # float16 first; numpy then also computes 10000 * mel in float16, which
    # overflows to inf wherever mel > 6.55, i.e. on loud tonal content.)
    logmel = np.log10(10000 * mel.astype(np.float32) + 1)
    return logmel[:N_FRAMES].astype(np.float64), librosa.__version__


def load_graph(tf, wheel: Path, workdir: Path):
    """Import musicnn's MetaGraph and restore the MSD_musicnn checkpoint."""
    with zipfile.ZipFile(wheel) as zf:
        for member in (".index", ".data-00000-of-00001", ".meta"):
            (workdir / ("ckpt" + member)).write_bytes(zf.read(CKPT_DIR + member))

    meta = tf.compat.v1.MetaGraphDef()
    meta.ParseFromString((workdir / "ckpt.meta").read_bytes())
    # The graph was written by TF 1.12; its cached "_output_shapes" attributes
    # (on the training/gradient nodes) are rejected by current TF.  They are
    # only hints, so drop them.
    for node in meta.graph_def.node:
        if "_output_shapes" in node.attr:
            del node.attr["_output_shapes"]

    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
    sess = tf.compat.v1.Session(graph=graph)
    saver.restore(sess, str(workdir / "ckpt"))
    return graph, sess


def find_tensors(graph) -> dict:
    """Locate input, is_training and output tensors in the imported graph."""
    ops = [op for op in graph.get_operations()
           if not op.name.startswith(("gradients", "save"))]
    placeholders = [op for op in ops if op.type == "Placeholder"]
    x = [op.outputs[0] for op in placeholders
         if op.outputs[0].dtype.name == "float32"
         and op.outputs[0].shape.rank == 3
         and op.outputs[0].shape.as_list() == [None, N_FRAMES, N_MELS]]
    is_training = [op.outputs[0] for op in placeholders
                   if op.outputs[0].dtype.name == "bool"]
    sigmoid = [op.outputs[0] for op in ops if op.type == "Sigmoid"]
    assert len(x) == len(is_training) == len(sigmoid) == 1, (x, is_training, sigmoid)
    g = graph.get_tensor_by_name
    return {
        "x": x[0],
        "is_training": is_training[0],
        "probs": sigmoid[0],
        "logits": sigmoid[0].op.inputs[0],  # model/dense_1/BiasAdd
        # temporal max / mean of the concatenated mid-level features (B, 753, 1)
        "max_pool": g("model/Max:0"),
        "mean_pool": g("model/moments/Squeeze:0"),
        # bn_dense, the penultimate layer (B, 200), inference branch
        "penultimate": g("model/batch_normalization_10/batchnorm/add_1:0"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="musicnn-0.1.0-py3-none-any.whl")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()

    rng = np.random.default_rng(SEED)
    chord, librosa_version = chord_patch()
    x = np.stack([random_patch(rng), chord, np.zeros((N_FRAMES, N_MELS))])
    x = x.astype(np.float16)  # musicnn's extractor yields float16 log-mels

    with tempfile.TemporaryDirectory() as tmp:
        graph, sess = load_graph(tf, args.wheel, Path(tmp))
        tensors = find_tensors(graph)
        names = ["logits", "probs", "mean_pool", "max_pool", "penultimate"]
        values = sess.run([tensors[n] for n in names],
                          feed_dict={tensors["x"]: x.astype(np.float32),
                                     tensors["is_training"]: False})
        sess.close()

    out = {n: np.asarray(v, dtype=np.float32).reshape(x.shape[0], -1)
           for n, v in zip(names, values)}
    assert out["mean_pool"].shape == out["max_pool"].shape == (x.shape[0], 753)
    assert out["penultimate"].shape == (x.shape[0], 200)
    assert out["logits"].shape == (x.shape[0], 50)
    np.testing.assert_allclose(out["probs"], 1 / (1 + np.exp(-out["logits"])), atol=1e-6)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(suffix=".npz", dir=args.output.parent)
    with os.fdopen(fd, "wb") as fh:
        np.savez_compressed(fh, x=x, tf_version=np.array(tf.__version__),
                            librosa_version=np.array(librosa_version), **out)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp_path, 0o666 & ~mask)  # mkstemp creates 0600
    os.replace(tmp_path, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e3:.0f} kB), "
          f"TF {tf.__version__}")
    for i, p in enumerate(out["probs"]):
        print(i, [f"{v:.3f}" for v in p[:8]])


if __name__ == "__main__":
    main()
