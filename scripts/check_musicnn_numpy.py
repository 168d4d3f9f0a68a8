#!/usr/bin/env python3
"""Check the numpy musicnn (genre_cnn_core.musicnn_numpy) against the torch port.

On real music (default)::

    python scripts/check_musicnn_numpy.py [--data /work/shared/data]

embeds every clip of ``gtzan-dev`` and ``jamendo`` (4 patches of 3 s per
track, as the musicnn extractor does) with both networks, applies the
shipped default model's head to both, and prints the largest differences of
embeddings and probabilities and the top-1 agreement, for float32 embeddings
and for the float16 ones the feature cache stores.

Speed (``--speed``)::

    python scripts/check_musicnn_numpy.py --speed

times a forward pass, one thread, each configuration in a fresh process
(``OPENBLAS_NUM_THREADS=1`` and friends, plus ``threadpool_limits(1)`` and
``torch.set_num_threads(1)``), in milliseconds per patch at batch sizes 4,
16 and 64: the torch port, the torch port with the dead filters pruned, and
the numpy version; then the start-up of a fresh process importing each.
Minimum over repeats (``--patches`` patches in all per timing, at least
``--repeats`` runs) of both wall-clock and CPU time: on a shared machine,
the CPU time is the steadier one.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BATCH_SIZES = (4, 16, 64)
SINGLE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def track_paths(data: str) -> list[tuple[str, str]]:
    """``(collection, path)`` of every track listed in the collections' labels.csv."""
    tracks = []
    for collection in ("gtzan-dev", "jamendo"):
        with open(os.path.join(data, collection, "labels.csv"), newline="") as handle:
            tracks += [(collection, os.path.join(data, row["path"])) for row in csv.DictReader(handle)]
    return tracks


def check_real_audio(data: str) -> None:
    import torch

    from genre_cnn_core import DEFAULT_MODEL, GenreModel, musicnn, musicnn_numpy
    from genre_cnn_core.features import FeatureSettings, fixed_frames, track_log_mels

    torch.set_num_threads(1)
    settings = FeatureSettings(excerpt_seconds=3.0, n_excerpts=4)
    network, fast = musicnn.load_pretrained(), musicnn_numpy.load_pretrained()
    head = GenreModel.load(DEFAULT_MODEL)
    tracks = track_paths(data)
    started = time.perf_counter()
    by_torch, by_numpy, collections = [], [], []
    for collection, path in tracks:
        patches = np.stack([fixed_frames(s, musicnn.PATCH_FRAMES).T for s in track_log_mels(path, settings)])
        with torch.inference_mode():
            out = network(torch.from_numpy(patches))
        by_torch.append(torch.cat([out.mean_pool, out.max_pool, torch.sigmoid(out.logits)], dim=1).numpy())
        by_numpy.append(fast.embed(patches))
        collections.append(collection)
    print(f"{len(tracks)} tracks, {4 * len(tracks)} patches, in {time.perf_counter() - started:.0f} s")
    per_patch = np.abs(np.concatenate(by_torch) - np.concatenate(by_numpy))
    print(f"per-patch max abs diff: mean_pool {per_patch[:, :753].max():.2e}, "
          f"max_pool {per_patch[:, 753:1506].max():.2e}, tag probabilities {per_patch[:, 1506:].max():.2e}")
    collections = np.array(collections)
    for label, dtype in (("float32 embeddings", np.float32), ("float16 embeddings (as cached)", np.float16)):
        theirs = [e.mean(axis=0).astype(dtype) for e in by_torch]
        ours = [e.mean(axis=0).astype(dtype) for e in by_numpy]
        p_theirs, p_ours = head.predict_proba(theirs), head.predict_proba(ours)
        print(f"{label}:")
        for collection in ("gtzan-dev", "jamendo", None):
            rows = collections == collection if collection else np.ones(len(collections), bool)
            agree = (p_theirs[rows].argmax(1) == p_ours[rows].argmax(1))
            embedding_diff = np.abs(np.stack(theirs)[rows].astype(np.float32) - np.stack(ours)[rows]).max()
            print(f"  {collection or 'all':9s} top-1 agreement {agree.sum()}/{rows.sum()}, "
                  f"max probability diff {np.abs(p_theirs[rows] - p_ours[rows]).max():.2e}, "
                  f"max embedding diff {embedding_diff:.2e}")


# --- speed -----------------------------------------------------------------

_TIMING = """
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
kind, batch, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
x = np.random.default_rng(0).uniform(0, 4, (batch, 187, 96)).astype(np.float32)
if kind == "numpy":
    from genre_cnn_core.musicnn_numpy import load_pretrained
    forward = load_pretrained().forward
else:
    import torch
    torch.set_num_threads(1)
    from genre_cnn_core import musicnn
    network = musicnn.load_pretrained()
    if kind == "torch-pruned":
        sys.path.insert(0, "scripts")
        from check_musicnn_numpy import pruned_torch_forward
        network = pruned_torch_forward(network)
    tensor = torch.from_numpy(x)
    def forward(_):
        with torch.inference_mode():
            return network(tensor)
with threadpool_limits(1):
    forward(x)
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        forward(x)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
print(json.dumps({"wall_ms": 1000 * min(wall) / batch, "cpu_ms": 1000 * min(cpu) / batch}))
"""


def pruned_torch_forward(network, dead_gain: float | None = None):
    """The torch port with its dead front-end filters replaced by constants (for timing only).

    The live filters run through the port's own CPU path
    (``musicnn._conv_freq_max_cpu``); the mid and back ends are the port's.
    """
    import torch
    import torch.nn.functional as F

    from genre_cnn_core import musicnn
    from genre_cnn_core.musicnn_numpy import DEAD_GAIN

    dead_gain = DEAD_GAIN if dead_gain is None else dead_gain
    blocks = []
    for name in ("timbral74", "timbral77", "temporal128", "temporal64", "temporal32"):
        block = getattr(network, name)
        scale, shift = musicnn._bn_affine(block.bn)
        gain = scale.abs() * block.conv.weight.abs().flatten(1).sum(1)
        live = gain > dead_gain
        sign = torch.where(scale < 0, -1.0, 1.0)
        constants = scale * F.relu(block.conv.bias) + shift
        weight = (block.conv.weight * sign[:, None, None, None])[live].contiguous()
        blocks.append((block.conv.kernel_size[0], live, weight, (block.conv.bias * sign)[live], sign[live],
                       scale[live], shift[live], constants))

    def front_end(x):
        n_frames = x.shape[1]
        x = F.pad(network.input_bn(x.unsqueeze(1)).squeeze(1), (0, 0, musicnn._PAD_BEFORE, musicnn._PAD_AFTER))
        parts = []
        for kernel, live, weight, bias, sign, scale, shift, constants in blocks:
            start = musicnn._PAD_BEFORE - (kernel - 1) // 2
            peak = musicnn._conv_freq_max_cpu(x[:, start:start + n_frames + kernel - 1], weight)
            full = constants.expand(x.shape[0], n_frames, -1).clone()
            full[:, :, live] = torch.addcmul(shift, F.relu((peak + bias) * sign), scale)
            parts.append(full)
        return torch.cat(parts, dim=2)

    network._front_end = front_end
    return network


def time_forward(kind: str, batch: int, repeats: int) -> dict:
    env = dict(os.environ, **SINGLE_THREAD, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-c", _TIMING, kind, str(batch), str(repeats)], cwd=REPO, env=env,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def time_startup(code: str, repeats: int) -> float:
    """Fastest wall-clock seconds of a fresh ``python -c code``."""
    env = dict(os.environ, **SINGLE_THREAD, PYTHONPATH=REPO)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def check_speed(patches: int, repeats: int) -> None:
    from threadpoolctl import threadpool_info

    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    print(f"numpy BLAS: {', '.join(blas)}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(not set)')}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print("ms per patch, one thread, min over repeats (wall / CPU):")
    print(f"  {'batch':>5s}  {'torch':>13s}  {'torch pruned':>13s}  {'numpy':>13s}  speed-up (CPU)")
    for batch in BATCH_SIZES:
        # as many patches at every batch size: the minimum of few short runs is a noisy one
        rows = {kind: time_forward(kind, batch, max(repeats, patches // batch))
                for kind in ("torch", "torch-pruned", "numpy")}
        cells = "  ".join(f"{rows[k]['wall_ms']:6.1f}/{rows[k]['cpu_ms']:6.1f}" for k in rows)
        print(f"  {batch:5d}  {cells}  {rows['torch']['cpu_ms'] / rows['numpy']['cpu_ms']:.1f}x")
    patch = "import numpy as np; x = np.zeros((4, 187, 96), np.float32); "
    startups = {
        "python -c pass": "pass",
        "import numpy": "import numpy",
        "import torch": "import torch",
        "import genre_cnn_core.musicnn_numpy": "import genre_cnn_core.musicnn_numpy",
        "import genre_cnn_core.musicnn": "import genre_cnn_core.musicnn",
        "numpy: load weights + embed 4 patches": patch + "from genre_cnn_core.musicnn_numpy import load_pretrained; "
                                                        "load_pretrained().embed(x)",
        "torch: load weights + embed 4 patches": patch + "import torch; torch.set_num_threads(1); "
                                                        "from genre_cnn_core.musicnn import load_pretrained; "
                                                        "load_pretrained()(torch.from_numpy(x))",
    }
    print("process start-up, fastest wall-clock seconds:")
    for label, code in startups.items():
        print(f"  {label:40s} {time_startup(code, repeats):.2f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data", help="folder holding gtzan-dev/ and jamendo/")
    parser.add_argument("--speed", action="store_true", help="time the forward passes and start-up instead")
    parser.add_argument("--patches", type=int, default=512, help="patches per forward-pass timing (--speed)")
    parser.add_argument("--repeats", type=int, default=7, help="fewest repeats per timing (--speed)")
    args = parser.parse_args(argv)
    if args.speed:
        check_speed(args.patches, args.repeats)
    else:
        check_real_audio(args.data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
