#!/usr/bin/env python
"""What one musicnn forward pass costs on the CPU, lever by lever: the ``## Forward pass`` section of
``bench/RESULTS.md``.

Usage (from the repository root)::

    python bench/forward.py [--clips 40] [--repeats 5]

The issue's levers, each on the same real patches (4 × 3 s log-mel patches of
``--clips`` gtzan-dev clips, one per track as the product reads them):

- round 1's float32 torch network (``musicnn.load_pretrained``), its CPU path;
- the same graph with plain convolutions, frozen by TorchScript (``torch.jit.freeze``
  folds batch norm into the convolutions) and, when installed (``pip install onnxruntime onnx``;
  not a dependency of the product), run by ONNX Runtime in float32 and after its dynamic int8
  quantisation, and the shipped numpy network's pruned layers (live filters only, :func:`pruned_module`)
  exported and run by ONNX Runtime in float32;
- torch's dynamic int8 quantisation of the dense layers;
- the numpy network with every filter, and with the filters training left dead pruned
  (the shipped CPU path).

Every lever runs in this process with one thread (each worker of the product has one),
on batches of 16 patches (4 tracks); the figure is the median over ``--repeats``
passes of milliseconds per patch. Predictions: the shipped default model's top-1 genre on
each lever's per-track embeddings against the float32 torch network's, and the largest
difference of a tag probability. Finally the thread count: one pass of the shipped
network with 1 and with 2 threads, on an idle machine and with one core kept busy by
another process (what a second worker does).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import datasets
import numpy as np
import results

BATCH = 16


def spin(stop) -> None:
    """Keep one core busy until ``stop`` is set (another worker's load)."""
    while not stop.is_set():
        pass


def patches_of(paths: list) -> np.ndarray:
    """``(tracks, 4, 187, 96)`` log-mel patches, as the default backbone reads each track."""
    from genre_cnn_core import get_backbone, musicnn_numpy
    from genre_cnn_core.features import fixed_frames, track_log_mels

    settings = get_backbone("musicnn").default_settings
    return np.stack([np.stack([fixed_frames(s, musicnn_numpy.PATCH_FRAMES).T for s in track_log_mels(p, settings)])
                     for p in paths]).astype(np.float32)


@contextlib.contextmanager
def plain_convolutions():
    """Round 1's network with its CPU path's chunked convolution (Python loops) swapped for ``conv2d``,
    while a graph of it is traced or exported."""
    import torch.nn.functional as F

    from genre_cnn_core import musicnn

    chunked = musicnn._conv_freq_max_cpu
    musicnn._conv_freq_max_cpu = lambda x, weight: F.conv2d(x.unsqueeze(1), weight).amax(dim=3).transpose(1, 2)
    try:
        yield
    finally:
        musicnn._conv_freq_max_cpu = chunked


def embedding_of(mean_pool, max_pool, logits) -> np.ndarray:
    """The embedding ``MusicnnExtractor`` keeps, from one pass's outputs."""
    return np.concatenate([mean_pool, max_pool, 1 / (1 + np.exp(-logits))], axis=1)


def pruned_module(network, n_frames: int = 187):
    """The shipped numpy network (dead filters pruned) as a torch module of plain ops, for ONNX export.

    Its live filters only, from ``network``'s own pruned parameters; a layer's dead channels are
    constants, put in place by a product with a one-hot matrix plus a row of constants, so that
    every layer sees its full width as in the numpy network; the mid-end's per-frame biases (what
    the constant inputs add under "same" padding) are those of ``n_frames`` frames.
    """
    import torch
    import torch.nn.functional as F

    from genre_cnn_core import musicnn_numpy

    def tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def widen(live, constants):
        """(values @ one_hot + constants): the live channels' values placed among the constants."""
        one_hot = np.zeros((int(live.sum()), live.size), np.float32)
        one_hot[np.arange(int(live.sum())), np.flatnonzero(live)] = 1
        return tensor(one_hot), tensor(np.where(live, 0, constants))

    class Pruned(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.banks = []
            for bank in network._timbral:
                self.banks.append((tensor(bank.weight[:, None]), (3, 3), bank))
            for bank in network._temporal:
                before = (bank.kernel - 1) // 2
                self.banks.append((tensor(bank.weight[:, None]), (before, bank.kernel - 1 - before), bank))
            self.front = widen(network._front_live, network._front_constants)
            self.mids = []
            live, constants = network._front_live, network._front_constants
            for index, block in enumerate(network._mid):
                weight = block.weight.T.reshape(len(block.bias), int(live.sum()), musicnn_numpy._MID_WIDTH)
                self.mids.append((np.flatnonzero(live), tensor(weight), tensor(block.frame_bias(n_frames)),
                                  tensor(block.scale), tensor(block.shift), widen(block.live, block.constants)))
                if index == 0:
                    live, constants = block.live, block.constants
                else:
                    live, constants = block.live | live, block.constants + constants

        def forward(self, x):
            x = x * float(network._input_scale) + float(network._input_shift)
            parts = []
            for weight, (before, after), bank in self.banks:
                padded = F.pad(x, (0, 0, before, after)).unsqueeze(1)
                peak = F.conv2d(padded, weight).amax(dim=3).transpose(1, 2)  # (B, T, live filters)
                sign = tensor(bank.sign)
                parts.append(torch.relu((peak + tensor(bank.bias) * sign) * sign) * tensor(bank.scale)
                             + tensor(bank.shift))
            one_hot, constants = self.front
            front = torch.cat(parts, dim=2) @ one_hot + constants  # (B, T, 561)
            features = [front]
            current = front
            for index, (inputs, weight, frame_bias, scale, shift, (one_hot, constants)) in enumerate(self.mids):
                out = F.conv1d(current[:, :, torch.from_numpy(inputs)].transpose(1, 2), weight, padding=3)
                values = torch.relu(out.transpose(1, 2) + frame_bias) * scale + shift
                block = values @ one_hot + constants  # (B, T, 64)
                current = block if index == 0 else block + current
                features.append(current)
            max_pool = torch.cat([f.amax(dim=1) for f in features], dim=1)
            mean_pool = torch.cat([f.mean(dim=1) for f in features], dim=1)
            pooled = torch.cat([max_pool, mean_pool], dim=1) * tensor(network._pool_scale) + tensor(
                network._pool_shift)
            hidden = torch.relu(pooled @ tensor(network._dense_weight) + tensor(network._dense_bias))
            penultimate = hidden * tensor(network._dense_scale) + tensor(network._dense_shift)
            logits = penultimate @ tensor(network._output_weight) + tensor(network._output_bias)
            return logits, mean_pool, max_pool, penultimate

    return Pruned().eval()


def levers(folder: Path) -> tuple[dict, dict]:
    """Each lever's batch function (patches in, embeddings out), and why the ones left out were."""
    import torch

    from genre_cnn_core import musicnn, musicnn_numpy

    torch.set_num_threads(1)
    reference = musicnn.load_pretrained()

    def run_torch(network):
        def forward(x):
            with torch.inference_mode():
                out = network(torch.from_numpy(x))
            return embedding_of(out.mean_pool.numpy(), out.max_pool.numpy(), out.logits.numpy())
        return forward

    found, missing = {"torch float32 (round 1's network)": run_torch(reference)}, {}
    quantised = torch.ao.quantization.quantize_dynamic(musicnn.load_pretrained(), {torch.nn.Linear},
                                                       dtype=torch.qint8)
    found["torch, dense layers dynamic int8"] = run_torch(quantised)

    example = torch.zeros(BATCH, 187, 96)
    with plain_convolutions(), torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(reference, example, strict=False).eval())

    def run_traced(x):
        with torch.inference_mode():
            logits, mean_pool, max_pool, _ = traced(torch.from_numpy(x))
        return embedding_of(mean_pool.numpy(), max_pool.numpy(), logits.numpy())
    found["TorchScript frozen (batch norm folded), conv2d"] = run_traced

    try:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        missing["ONNX Runtime"] = f"not installed ({error})"
    else:
        model_path, int8_path = folder / "musicnn.onnx", folder / "musicnn-int8.onnx"
        with plain_convolutions(), contextlib.redirect_stdout(io.StringIO()):  # the exporter prints the graph
            torch.onnx.export(reference, (example,), str(model_path), dynamo=False, input_names=["x"],
                              output_names=["logits", "mean_pool", "max_pool", "penultimate"],
                              dynamic_axes={"x": {0: "batch"}})
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(str(model_path), str(int8_path), weight_type=QuantType.QInt8)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1

        def run_onnx(path):
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

            def forward(x):
                logits, mean_pool, max_pool, _ = session.run(None, {"x": x})
                return embedding_of(mean_pool, max_pool, logits)
            return forward
        found["ONNX Runtime float32, conv2d"] = run_onnx(model_path)
        found["ONNX Runtime dynamic int8, conv2d"] = run_onnx(int8_path)
        pruned_path = folder / "musicnn-pruned.onnx"
        with contextlib.redirect_stdout(io.StringIO()), torch.inference_mode():
            torch.onnx.export(pruned_module(musicnn_numpy.load_pretrained()), (example,), str(pruned_path),
                              dynamo=False, input_names=["x"],
                              output_names=["logits", "mean_pool", "max_pool", "penultimate"],
                              dynamic_axes={"x": {0: "batch"}})
        found["ONNX Runtime float32, dead filters pruned"] = run_onnx(pruned_path)

    found["numpy, every filter"] = musicnn_numpy.load_pretrained(dead_gain=0.0).embed
    found["numpy, dead filters pruned (shipped)"] = musicnn_numpy.load_pretrained().embed
    return found, missing


def per_patch_ms(forward, patches: np.ndarray, repeats: int) -> float:
    """Median over ``repeats`` passes over all patches, in batches of :data:`BATCH`, ms per patch."""
    flat = patches.reshape(-1, *patches.shape[2:])
    forward(flat[:BATCH])  # first call: allocations, lazy initialisation
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, len(flat), BATCH):
            forward(flat[start:start + BATCH])
        times.append((time.perf_counter() - started) * 1000 / len(flat))
    return statistics.median(times)


def track_embeddings(forward, patches: np.ndarray) -> np.ndarray:
    """Per-track embeddings (mean over its patches), float16 as the cache keeps them."""
    flat = patches.reshape(-1, *patches.shape[2:])
    per_patch = np.concatenate([forward(flat[s:s + BATCH]) for s in range(0, len(flat), BATCH)])
    return per_patch.reshape(len(patches), patches.shape[1], -1).mean(1).astype(np.float16)


def head_to_head(first, second, patches: np.ndarray, rounds: int) -> tuple[float, float, float]:
    """Medians of ms per patch of two forwards timed in alternation (one pass each per round, the order
    swapped every round), and the median of the rounds' ratios ``second / first``: a load that drifts
    during the run weighs on both alike."""
    times: dict = {first: [], second: []}
    for index in range(rounds):
        for forward in ((first, second) if index % 2 == 0 else (second, first)):
            times[forward].append(per_patch_ms(forward, patches, 1))
    ratios = [b / a for a, b in zip(times[first], times[second])]
    return statistics.median(times[first]), statistics.median(times[second]), statistics.median(ratios)


def threads_ms(forward, patches: np.ndarray, threads: int, busy_core: bool, repeats: int) -> float:
    """ms per patch of ``forward`` with ``threads`` BLAS threads, another process spinning or not."""
    from threadpoolctl import threadpool_limits

    stop = multiprocessing.Event()
    spinner = multiprocessing.Process(target=spin, args=(stop,)) if busy_core else None
    if spinner:
        spinner.start()
        time.sleep(0.5)
    try:
        with threadpool_limits(limits=threads):
            return per_patch_ms(forward, patches, repeats)
    finally:
        stop.set()
        if spinner:
            spinner.join()


def main(argv=None) -> None:
    results.use_this_checkout()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=40, help="gtzan-dev clips (4 patches each; default 40)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per lever (default 5)")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    from threadpoolctl import threadpool_limits

    from genre_cnn_core import DEFAULT_MODEL, GenreModel

    tracks = datasets.load_gtzan()
    chosen = [tracks[i] for i in np.linspace(0, len(tracks) - 1, min(args.clips, len(tracks))).astype(int)]
    patches = patches_of([t.path for t in chosen])
    model = GenreModel.load(str(DEFAULT_MODEL))
    print(f"{len(chosen)} clips, {patches.shape[0] * patches.shape[1]} patches")

    with tempfile.TemporaryDirectory() as folder:
        found, missing = levers(Path(folder))
        reference_name = next(iter(found))
        reference = track_embeddings(found[reference_name], patches)
        reference_top = model.predict_proba(list(reference)).argmax(1)
        rows, speeds = [], {}
        for name, forward in found.items():
            with threadpool_limits(limits=1):
                ms = speeds[name] = per_patch_ms(forward, patches, args.repeats)
            embeddings = track_embeddings(forward, patches)
            agreement = float(np.mean(model.predict_proba(list(embeddings)).argmax(1) == reference_top))
            tag_diff = float(np.abs(embeddings[:, -50:].astype(np.float32) - reference[:, -50:]).max())
            rows.append([name, f"{ms:.1f} ms", f"{speeds[reference_name] / ms:.2f} ×", f"{agreement:.1%}",
                         f"{tag_diff:.1e}"])
            print(rows[-1])
        rows += [[name, "not measured", "", "", why] for name, why in missing.items()]

        shipped = found["numpy, dead filters pruned (shipped)"]
        onnx_pruned = found.get("ONNX Runtime float32, dead filters pruned")
        if onnx_pruned is not None:
            with threadpool_limits(limits=1):
                numpy_ms, onnx_ms, ratio = head_to_head(shipped, onnx_pruned, patches, 4 * args.repeats)
            head_text = (f"\n\nThe pruned network, numpy (shipped) against ONNX Runtime, timed in alternation "
                         f"({4 * args.repeats} rounds of one pass each, one thread): numpy {numpy_ms:.1f} ms, "
                         f"ONNX Runtime {onnx_ms:.1f} ms per patch; median ratio ONNX Runtime ÷ numpy "
                         f"{ratio:.2f}.")
            print(head_text.strip())
        else:
            head_text = ""
        thread_rows = []
        for busy_core in (False, True):
            one, two = (threads_ms(shipped, patches, n, busy_core, args.repeats) for n in (1, 2))
            thread_rows.append(["one core busy with another process" if busy_core else "idle",
                                f"{one:.1f} ms", f"{two:.1f} ms", f"{two / one:.2f} ×"])
            print(thread_rows[-1])

    minutes = (time.perf_counter() - started) / 60
    body = (results.context(f"python bench/forward.py --clips {args.clips} --repeats {args.repeats}")
            + f"- wall time: {minutes:.1f} min; {load_now()}\n\n"
            f"{len(chosen)} gtzan-dev clips, 4 patches of 3 s each ({patches.shape[0] * patches.shape[1]} "
            f"patches); one process, one thread, batches of {BATCH} patches; median of {args.repeats} passes. "
            "\"top-1 same\": the default model's primary genre on the lever's per-track embeddings (float16, as "
            "cached) equals the one on the float32 torch network's; \"tag diff\": the largest difference of a "
            "tag probability.\n\n"
            + results.table(["lever", "per patch", "vs round 1", "top-1 same", "tag diff"], rows) + head_text
            + "\n\nThe shipped network (numpy, dead filters pruned), 1 against 2 BLAS threads:\n\n"
            + results.table(["machine", "1 thread", "2 threads", "2 ÷ 1"], thread_rows)
            + "\n\nThe product runs one BLAS thread per worker (`devices.compute_threads`), one worker per "
            "core.\n")
    results.write_section("## Forward pass", body)
    print(f"wrote the ## Forward pass section of {results.RESULTS}")


def load_now() -> str:
    """The load average at the end, to judge the figures by."""
    one, five, _ = os.getloadavg()
    return f"load average at the end {one:.2f} (1 min), {five:.2f} (5 min)"


if __name__ == "__main__":
    main()
