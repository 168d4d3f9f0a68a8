#!/usr/bin/env python3
"""Convert musicnn's pretrained ``MSD_musicnn`` checkpoint to a safetensors weights file.

Usage::

    pip download musicnn==0.1.0 --no-deps -d /tmp/mn
    python scripts/convert_musicnn.py /tmp/mn/musicnn-0.1.0-py3-none-any.whl

The TensorFlow 1 checkpoint (``musicnn/MSD_musicnn/.index`` and
``.data-00000-of-00001``) is read straight out of the wheel (a zip file) with
a small pure-Python reader of TensorFlow's *TensorBundle* format, so neither
TensorFlow nor the protobuf package is needed:

* ``.index`` is an SSTable (LevelDB table format, uncompressed blocks) whose
  keys are variable names and whose values are ``BundleEntryProto`` messages
  (dtype, shape, shard, offset, size, crc32c).  The few protobuf fields we
  need are decoded by hand.
* ``.data-00000-of-00001`` holds the raw little-endian tensor bytes.

The variables (optimizer slots such as ``*/Adam`` are skipped) are mapped onto
the ``state_dict`` of :class:`genre_cnn_core.musicnn.MusicnnMSD` and written,
atomically, to ``genre_cnn_core/data/musicnn_msd.safetensors``: the state dict's
tensors, and in the header's metadata ``format`` (``musicnn-msd``), ``source``,
``dtype`` and ``tags`` (a JSON list of the 50 tag names). Neither writing nor
reading it needs torch; ``safetensors.numpy.load_file`` (or the torch API) opens it.

The musicnn model and weights are by Jordi Pons and Xavier Serra (Music
Technology Group, Universitat Pompeu Fabra), ISC licence; see
``genre_cnn_core/data/MUSICNN_LICENSE``.
"""

from __future__ import annotations

import argparse
import ast
import json
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "genre_cnn_core" / "data" / "musicnn_msd.safetensors"
CHECKPOINT_DIR = "musicnn/MSD_musicnn/"
CONFIG_MEMBER = "musicnn/configuration.py"

# ---------------------------------------------------------------------------
# Minimal protobuf wire-format decoding
# ---------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return ``(value, new_pos)``."""
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def _proto_fields(buf: bytes):
    """Yield ``(field_number, wire_type, value)`` for a serialized message.

    Varints are returned as ints, length-delimited fields as bytes and
    fixed32/fixed64 fields as ints.
    """
    pos = 0
    end = len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            (value,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = buf[pos:pos + length]
            pos += length
        elif wire == 5:
            (value,) = struct.unpack_from("<I", buf, pos)
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


# tensorflow/core/framework/types.proto (the subset a checkpoint may hold)
_TF_DTYPES = {
    1: np.dtype("<f4"),  # DT_FLOAT
    2: np.dtype("<f8"),  # DT_DOUBLE
    3: np.dtype("<i4"),  # DT_INT32
    4: np.dtype("u1"),  # DT_UINT8
    6: np.dtype("i1"),  # DT_INT8
    9: np.dtype("<i8"),  # DT_INT64
    10: np.dtype("?"),  # DT_BOOL
    19: np.dtype("<f2"),  # DT_HALF
}


def _parse_shape(buf: bytes) -> tuple[int, ...]:
    """Decode a ``TensorShapeProto`` (field 2: repeated Dim{1: size})."""
    dims = []
    for field, _, value in _proto_fields(buf):
        if field == 2:
            size = 0
            for dfield, _, dvalue in _proto_fields(value):
                if dfield == 1:
                    size = dvalue
            dims.append(size)
        elif field == 3 and value:
            raise ValueError("tensor of unknown rank in checkpoint")
    return tuple(dims)


def _parse_bundle_entry(buf: bytes) -> dict:
    """Decode a ``BundleEntryProto`` (tensor_bundle.proto)."""
    entry = {"dtype": 1, "shape": (), "shard_id": 0, "offset": 0, "size": 0,
             "crc32c": None, "sliced": False}
    for field, _, value in _proto_fields(buf):
        if field == 1:
            entry["dtype"] = value
        elif field == 2:
            entry["shape"] = _parse_shape(value)
        elif field == 3:
            entry["shard_id"] = value
        elif field == 4:
            entry["offset"] = value
        elif field == 5:
            entry["size"] = value
        elif field == 6:
            entry["crc32c"] = value
        elif field == 7:
            entry["sliced"] = True
    return entry


# ---------------------------------------------------------------------------
# SSTable (LevelDB table format) reader
# ---------------------------------------------------------------------------

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_LEN = 48
_BLOCK_TRAILER_LEN = 5  # 1 byte compression type + 4 bytes crc


def _read_block(data: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if data[offset + size] != 0:
        raise ValueError("compressed SSTable blocks are not supported")
    return data[offset:offset + size]


def _block_entries(block: bytes):
    """Yield ``(key, value)`` pairs of one table block (prefix-compressed keys)."""
    (num_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (num_restarts + 1)
    pos = 0
    key = b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + value_len]
        pos += value_len


def read_sstable(data: bytes):
    """Yield all ``(key, value)`` pairs of an uncompressed SSTable, in order."""
    footer = data[-_FOOTER_LEN:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_LEN - 8)
    if magic != _TABLE_MAGIC:
        raise ValueError("not an SSTable / TensorBundle index file")
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_block = _read_block(data, footer[pos:])
    for _, handle in _block_entries(index_block):
        yield from _block_entries(_read_block(data, handle))


# ---------------------------------------------------------------------------
# CRC32C (Castagnoli), masked as TensorFlow stores it
# ---------------------------------------------------------------------------


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc32c(data: bytes) -> int:
    crc = _crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------
# Checkpoint reading
# ---------------------------------------------------------------------------

_OPTIMIZER_MARKERS = ("/Adam", "beta1_power", "beta2_power", "global_step")


def read_checkpoint(index: bytes, shards: list[bytes], *, verify: bool = True,
                    skip_optimizer: bool = True) -> dict[str, np.ndarray]:
    """Read every variable of a TensorBundle checkpoint into numpy arrays.

    Parameters
    ----------
    index : bytes
        Content of the ``.index`` file.
    shards : list of bytes
        Contents of the ``.data-0000i-of-0000n`` files, in shard order.
    verify : bool, optional
        Check each tensor's masked CRC32C (slow-ish pure Python, ~1 s/MB).
    skip_optimizer : bool, optional
        Leave out optimizer slots (``*/Adam*``, ``beta*_power``).

    Returns
    -------
    dict of str to numpy.ndarray
    """
    tensors = {}
    for key, value in read_sstable(index):
        if key == b"":  # BundleHeaderProto
            continue
        name = key.decode("utf-8")
        if skip_optimizer and any(m in name for m in _OPTIMIZER_MARKERS):
            continue
        entry = _parse_bundle_entry(value)
        if entry["sliced"]:
            raise ValueError(f"partitioned variable {name!r} is not supported")
        dtype = _TF_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"{name!r}: unsupported dtype enum {entry['dtype']}")
        raw = shards[entry["shard_id"]][entry["offset"]:entry["offset"] + entry["size"]]
        if len(raw) != entry["size"]:
            raise ValueError(f"{name!r}: truncated data file")
        if verify and entry["crc32c"] is not None and _masked_crc32c(raw) != entry["crc32c"]:
            raise ValueError(f"{name!r}: CRC32C mismatch, corrupt checkpoint")
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(entry["shape"]).copy()
    return tensors


def read_wheel(wheel: Path, *, verify: bool = True) -> tuple[dict[str, np.ndarray], list[str]]:
    """Read the MSD_musicnn variables and the 50 MSD tag names from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        index = zf.read(CHECKPOINT_DIR + ".index")
        shard_names = sorted(n for n in zf.namelist()
                             if n.startswith(CHECKPOINT_DIR + ".data-"))
        shards = [zf.read(n) for n in shard_names]
        tags = _msd_labels(zf.read(CONFIG_MEMBER).decode("utf-8"))
    return read_checkpoint(index, shards, verify=verify), tags


def _msd_labels(config_source: str) -> list[str]:
    """Extract the ``MSD_LABELS`` list literal from musicnn's configuration.py."""
    for node in ast.parse(config_source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", None) == "MSD_LABELS"):
            labels = ast.literal_eval(node.value)
            if len(labels) != 50:
                raise ValueError("expected 50 MSD labels")
            return [str(x) for x in labels]
    raise ValueError("MSD_LABELS not found in musicnn configuration")


# ---------------------------------------------------------------------------
# Mapping onto MusicnnMSD's state_dict
# ---------------------------------------------------------------------------

# TF layer names, in graph construction order, and the module they feed.
# batch_normalization_k: (gamma, beta, moving_mean, moving_variance)
_BN_MAP = {
    "batch_normalization": "input_bn",
    "batch_normalization_1": "timbral74.bn",
    "batch_normalization_2": "timbral77.bn",
    "batch_normalization_3": "temporal128.bn",
    "batch_normalization_4": "temporal64.bn",
    "batch_normalization_5": "temporal32.bn",
    "batch_normalization_6": "mid1.bn",
    "batch_normalization_7": "mid2.bn",
    "batch_normalization_8": "mid3.bn",
    "batch_normalization_9": "pool_bn",
    "batch_normalization_10": "dense_bn",
}
_CONV_MAP = {
    "conv2d": "timbral74.conv",
    "conv2d_1": "timbral77.conv",
    "conv2d_2": "temporal128.conv",
    "conv2d_3": "temporal64.conv",
    "conv2d_4": "temporal32.conv",
    "conv2d_5": "mid1.conv",
    "conv2d_6": "mid2.conv",
    "conv2d_7": "mid3.conv",
}
_DENSE_MAP = {"dense": "dense", "dense_1": "output"}


def _pool_permutation(n_features: int) -> np.ndarray:
    """Index map from our ``cat([max, mean])`` layout to TF's layout.

    musicnn flattens ``concat([max_pool, mean_pool], axis=2)`` of shape
    ``(batch, features, 2)``, i.e. the TF vector interleaves
    ``[max_0, mean_0, max_1, mean_1, ...]``.  We concatenate
    ``[max_0..max_{n-1}, mean_0..mean_{n-1}]`` instead, so our position ``i``
    holds TF position ``perm[i]``.
    """
    idx = np.arange(n_features)
    return np.concatenate([2 * idx, 2 * idx + 1])


def map_to_state_dict(tf_vars: dict[str, np.ndarray], reference: dict) -> dict[str, np.ndarray]:
    """Map TF variables onto our module's state_dict (float32 numpy arrays).

    Parameters
    ----------
    tf_vars : dict
        Variables read by :func:`read_checkpoint`.
    reference : dict
        Name -> shape of each tensor of ``MusicnnMSD``'s state dict, used to check every name and shape.

    Returns
    -------
    dict of str to numpy.ndarray
    """
    out: dict[str, np.ndarray] = {}
    used = set()

    def take(name: str) -> np.ndarray:
        used.add(name)
        return np.asarray(tf_vars[name], dtype=np.float32)

    for tf_name, ours in _BN_MAP.items():
        out[f"{ours}.weight"] = take(f"{tf_name}/gamma")
        out[f"{ours}.bias"] = take(f"{tf_name}/beta")
        out[f"{ours}.running_mean"] = take(f"{tf_name}/moving_mean")
        out[f"{ours}.running_var"] = take(f"{tf_name}/moving_variance")

    for tf_name, ours in _CONV_MAP.items():
        kernel = take(f"{tf_name}/kernel")  # (kh, kw, in, out)
        bias = take(f"{tf_name}/bias")
        if ours.startswith("mid"):
            # kernel (7, C_in, 1, 64) slides over time only: Conv1d(C_in, 64, 7)
            weight = kernel[:, :, 0, :].transpose(2, 1, 0)
        else:
            # Conv2d over (time, mel): (out, in, kh, kw)
            weight = kernel.transpose(3, 2, 0, 1)
        out[f"{ours}.weight"] = np.ascontiguousarray(weight)
        out[f"{ours}.bias"] = bias

    for tf_name, ours in _DENSE_MAP.items():
        out[f"{ours}.weight"] = np.ascontiguousarray(take(f"{tf_name}/kernel").T)
        out[f"{ours}.bias"] = take(f"{tf_name}/bias")

    # Reorder the pooled-feature axis (interleaved in TF) to [max..., mean...].
    perm = _pool_permutation(out["pool_bn.weight"].shape[0] // 2)
    for suffix in ("weight", "bias", "running_mean", "running_var"):
        out[f"pool_bn.{suffix}"] = out[f"pool_bn.{suffix}"][perm]
    out["dense.weight"] = np.ascontiguousarray(out["dense.weight"][:, perm])

    unused = set(tf_vars) - used
    if unused:
        raise ValueError(f"unmapped checkpoint variables: {sorted(unused)}")
    for name, shape in reference.items():
        if name not in out:
            raise ValueError(f"state_dict entry {name!r} has no checkpoint source")
        if tuple(out[name].shape) != tuple(shape):
            raise ValueError(f"{name}: shape {out[name].shape} != expected {tuple(shape)}")
    extra = set(out) - set(reference)
    if extra:
        raise ValueError(f"unexpected entries: {sorted(extra)}")
    return out


def convert(wheel: Path, output: Path = DEFAULT_OUTPUT, *, dtype: str = "float32",
            verify: bool = True) -> dict:
    """Convert the wheel's MSD_musicnn checkpoint and write ``output``.

    Returns the state dict written (numpy arrays).
    """
    sys.path.insert(0, str(REPO_ROOT))
    from genre_cnn_core.files import atomic_write, safetensors_bytes
    from genre_cnn_core.musicnn_numpy import WEIGHTS_FORMAT, _state_shapes

    tf_vars, tags = read_wheel(wheel, verify=verify)
    reference = _state_shapes()
    mapped = map_to_state_dict(tf_vars, reference)
    state_dict = {name: mapped[name].astype(dtype) for name in reference}
    header = {
        "format": WEIGHTS_FORMAT,
        "source": "musicnn 0.1.0 MSD_musicnn (Pons & Serra 2019), ISC licence",
        "dtype": dtype,
        "tags": json.dumps(tags),
    }
    data = safetensors_bytes(state_dict, header)
    atomic_write(str(output), lambda handle: handle.write(data))
    return state_dict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="path to musicnn-0.1.0-py3-none-any.whl")
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"output file (default: {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float32",
                        help="storage dtype of the weights (default: float32; float16 "
                             "halves the file but moves the pooled features by up to "
                             "~0.25 and probabilities by ~1e-3)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the CRC32C check of the checkpoint data")
    args = parser.parse_args(argv)
    state_dict = convert(args.wheel, args.output, dtype=args.dtype, verify=not args.no_verify)
    n_params = sum(t.size for k, t in state_dict.items() if not k.endswith(("running_mean", "running_var")))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB, "
          f"{len(state_dict)} tensors, {n_params} parameters, {args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
