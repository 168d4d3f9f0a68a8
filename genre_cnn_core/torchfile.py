"""Read files written by ``torch.save`` without importing torch.

A file written by ``torch.save`` (PyTorch 1.6 and later) is a zip archive
whose records all live under one folder, ``<name>/``:

``<name>/data.pkl``
    the saved object, pickled; each tensor refers to its storage by a
    *persistent id* ``("storage", <storage type>, <key>, <location>,
    <elements>)`` and is rebuilt by ``torch._utils._rebuild_tensor_v2``.
``<name>/data/<key>``
    the raw bytes of each storage.
``<name>/byteorder``
    ``little`` or ``big`` (absent in old files, which are little-endian).

:func:`read_torch_file` returns what ``torch.load(f, weights_only=True)``
returns, with numpy arrays in place of tensors.  Like ``weights_only``, it
never runs code stored in the file: its unpickler knows only the globals
that tensors and plain containers need, each replaced by a checking
stand-in, and refuses any other with :class:`UnsafeTorchFileError`.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import stat
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["DEFAULT_MAX_BYTES", "TorchFileError", "UnsafeTorchFileError", "read_torch_file"]

#: Default cap on the file's size and on the bytes its records unpack to.
DEFAULT_MAX_BYTES = 1 << 30


class TorchFileError(ValueError):
    """A file is not a readable ``torch.save`` file (the message says why, in one line)."""


class UnsafeTorchFileError(TorchFileError, pickle.UnpicklingError):
    """The file's pickle asks for a global that is neither a tensor nor plain data.

    Attributes
    ----------
    global_name : str
        The refused global, e.g. ``"os.system"``.
    """

    def __init__(self, global_name: str):
        super().__init__(f"unsupported GLOBAL {global_name}: the file asks for code or a class, "
                         "and only tensors and plain data are loaded")
        self.global_name = global_name


class _StorageType(NamedTuple):
    """Stand-in for a ``torch.<Name>Storage`` class (immutable, so a pickle cannot alter it)."""

    name: str
    dtype: np.dtype | None  # None: a storage this reader does not support


class _Storage(NamedTuple):
    """A storage read from the archive: a 1-D array of its elements, in native byte order.

    An untyped storage (``torch.UntypedStorage``) is bytes in the file's byte
    order, ``byteorder``; the tensor rebuilt on it says how to read them.
    """

    type: _StorageType
    array: np.ndarray
    byteorder: str = "little"


class _Global(NamedTuple):
    """An allowed global: a checking stand-in for the torch or builtin callable.

    A named tuple has neither ``__dict__`` nor settable attributes, so a
    pickle's BUILD opcode cannot change it between loads (it could change a
    plain function's ``__defaults__``).
    """

    name: str
    function: Callable

    def __call__(self, *args):
        return self.function(*args)


class _Marker(NamedTuple):
    """An allowed global that is only ever an argument (``torch.Tensor``)."""

    name: str


_BFLOAT16 = np.dtype("<u2")  # read as raw bits, widened exactly to float32

# Storage classes torch writes for each dtype (torch.storage._dtype_to_storage_type_map).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": _BFLOAT16,
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
    "UntypedStorage": np.dtype("u1"),  # bytes; _rebuild_tensor_v3 gives the dtype
}
_UNSUPPORTED_STORAGES = ("QInt8Storage", "QInt32Storage", "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage")

# dtypes that torch pickles as globals ("torch float32"); None = no numpy equivalent.
_TORCH_DTYPES = {
    "float64": np.dtype("<f8"), "float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "bfloat16": None,
    "int64": np.dtype("<i8"), "int32": np.dtype("<i4"), "int16": np.dtype("<i2"), "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"), "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"), "uint64": np.dtype("<u8"),
    "bool": np.dtype("?"), "complex64": np.dtype("<c8"), "complex128": np.dtype("<c16"),
    "complex32": None, "float8_e5m2": None, "float8_e4m3fn": None, "float8_e5m2fnuz": None,
    "float8_e4m3fnuz": None, "float8_e8m0fnu": None, "float4_e2m1fn_x2": None,
    "qint8": None, "qint32": None, "quint8": None, "quint4x2": None, "quint2x4": None,
}


def _brief(value) -> str:
    """A short description of a value read from the file, for an error message.

    Never a full ``repr``: a pickle can build nested containers that share
    parts, whose ``repr`` grows exponentially with the file.
    """
    if isinstance(value, (_StorageType, _Marker)):
        return f"torch.{value.name}" if isinstance(value, _StorageType) else value.name
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    if type(value) in (tuple, list) and len(value) <= 8 and all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return "(" + ", ".join(_brief(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    length = f" of {len(value)} items" if isinstance(value, (tuple, list, dict, set)) else ""
    return f"a {type(value).__name__}{length}"


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(condition: bool, reason: str) -> None:
    if not condition:
        raise TorchFileError(f"damaged data.pkl: {reason}")


def _empty_hooks(hooks) -> None:
    _check(isinstance(hooks, dict) and not hooks, "a tensor with backward hooks")


def _strided_view(array: np.ndarray, storage_offset, size, stride) -> np.ndarray:
    """The tensor ``(storage_offset, size, stride)`` over a 1-D storage, sharing its memory.

    Every element the view can reach is checked to lie inside the storage:
    ``as_strided`` itself would read whatever memory the numbers point at.
    """
    _check(_is_int(storage_offset) and storage_offset >= 0, f"storage offset {_brief(storage_offset)}")
    _check(isinstance(size, (tuple, list)) and all(_is_int(n) and n >= 0 for n in size), f"size {_brief(size)}")
    _check(isinstance(stride, (tuple, list)) and len(stride) == len(size)
           and all(_is_int(s) and s >= 0 for s in stride), f"stride {_brief(stride)} for size {_brief(size)}")
    _check(len(size) <= 64, f"{len(size)} dimensions")
    if 0 in size:  # no element to reach
        base = np.empty(0, dtype=array.dtype)
    else:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        _check(last < array.size, f"a tensor reaching element {_brief(last)} of a storage of {array.size}")
        base = array[storage_offset:]
    return np.lib.stride_tricks.as_strided(base, shape=tuple(size), strides=tuple(s * array.itemsize for s in stride))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    _check(type(storage) is _Storage and storage.type.name != "UntypedStorage", "a tensor without a typed storage")
    _check(isinstance(requires_grad, bool), f"requires_grad {_brief(requires_grad)}")
    _empty_hooks(backward_hooks)
    if metadata:
        raise TorchFileError(f"unsupported tensor: it carries metadata {_brief(metadata)} (conjugate or negative bit)")
    return _strided_view(storage.array, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    _check(type(storage) is _Storage and storage.type.name == "UntypedStorage", "a tensor without an untyped storage")
    _check(isinstance(dtype, str) and dtype.startswith("torch."), f"dtype {_brief(dtype)}")
    element = _TORCH_DTYPES.get(dtype[len("torch."):])
    if element is None:
        raise TorchFileError(f"unsupported tensor dtype {dtype}")
    raw = storage.array
    _check(raw.size % element.itemsize == 0, f"{raw.size} bytes of storage for {dtype} elements")
    elements = raw.view(element.newbyteorder("<" if storage.byteorder == "little" else ">"))
    if not elements.dtype.isnative:
        elements = elements.astype(element.newbyteorder("="))
    return _rebuild_tensor_v2(_Storage(_StorageType(dtype, element), elements), storage_offset, size, stride,
                              requires_grad, backward_hooks, metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks):
    _check(isinstance(data, np.ndarray) and isinstance(requires_grad, bool), "a parameter without a tensor")
    _empty_hooks(backward_hooks)
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    if state:
        raise TorchFileError("unsupported parameter: it carries Python attributes")
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _rebuild_from_type_v2(function, new_type, args, state):
    # torch.save uses this for a tensor that has Python attributes or is a subclass.
    _check(type(function) is _Global and function.function in (_rebuild_tensor_v2, _rebuild_tensor_v3)
           and isinstance(args, tuple), "a tensor rebuilt by an unknown function")
    if type(new_type) is not _Marker or new_type.name != "torch.Tensor":
        raise TorchFileError(f"unsupported tensor subclass {_brief(new_type)}")
    if state:
        raise TorchFileError("unsupported tensor: it carries Python attributes")
    return function(*args)


def _encode(text="", encoding="latin1"):
    # Protocol 2 pickles bytes as _codecs.encode(str, "latin1").
    _check(isinstance(text, str) and encoding in ("latin1", "latin-1"), "bytes")
    return text.encode("latin-1")


def _bytearray(data=b""):
    _check(isinstance(data, bytes), "bytearray")
    return bytearray(data)


def _container(kind: type) -> Callable:
    def build(items=()):
        _check(isinstance(items, (list, tuple)), f"{kind.__name__} of {type(items).__name__}")
        return kind(items)
    return build


def _complex(real=0.0, imag=0.0):
    _check(all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (real, imag)), "complex")
    return complex(real, imag)


def _size(items=()):
    _check(isinstance(items, (list, tuple)) and all(_is_int(n) for n in items), "torch.Size")
    return tuple(items)


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = {"collections.OrderedDict": collections.OrderedDict}
    functions = {
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter_with_state,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.Size": _size,
        "_codecs.encode": _encode,
        "builtins.bytearray": _bytearray,
        "builtins.set": _container(set),
        "builtins.complex": _complex,
    }
    allowed.update((name, _Global(name, function)) for name, function in functions.items())
    allowed["torch.Tensor"] = _Marker("torch.Tensor")
    for name, dtype in _STORAGE_DTYPES.items():
        allowed[f"torch.{name}"] = _StorageType(name, dtype)
    allowed["torch.storage.UntypedStorage"] = allowed["torch.UntypedStorage"]
    for name in _UNSUPPORTED_STORAGES:
        allowed[f"torch.{name}"] = _StorageType(name, None)
    # a dtype stored as data comes back as its name, e.g. "torch.float32"
    allowed.update((f"torch.{name}", f"torch.{name}") for name in _TORCH_DTYPES)
    return allowed


_ALLOWED_GLOBALS = _allowed_globals()


class _ArchiveReader:
    """Reads records of one archive, within a byte budget."""

    def __init__(self, archive: zipfile.ZipFile, max_bytes: int):
        self.archive = archive
        self.records = {info.filename: info for info in archive.infolist()}
        self.budget = max_bytes
        self.max_bytes = max_bytes
        pickles = [name for name in self.records if name.endswith("/data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise TorchFileError("not a torch.save file: no data.pkl record" if not pickles
                                 else "not a torch.save file: several data.pkl records")
        self.prefix = pickles[0][:-len("data.pkl")]

    def has(self, name: str) -> bool:
        return self.prefix + name in self.records

    def size(self, name: str) -> int:
        return self.records[self.prefix + name].file_size

    def read(self, name: str, expected_size: int | None = None) -> bytearray:
        """The record ``<prefix><name>``, checked against its declared size and CRC."""
        info = self.records.get(self.prefix + name)
        if info is None:
            raise TorchFileError(f"damaged file: record {name} is missing")
        size = info.file_size
        if expected_size is not None and size != expected_size:
            raise TorchFileError(f"damaged file: record {name} holds {size} bytes, {expected_size} expected")
        if size > self.budget:
            raise TorchFileError(f"record {name} unpacks to {size} bytes, more than the {self.max_bytes} allowed")
        self.budget -= size
        buffer = bytearray(size)
        try:
            with self.archive.open(info) as handle:
                filled = 0
                view = memoryview(buffer)
                while filled < size:
                    count = handle.readinto(view[filled:])
                    if not count:
                        break
                    filled += count
                handle.read(1)  # reaching the end makes zipfile check the CRC
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as error:
            raise TorchFileError(f"damaged file: record {name}: {error}") from None
        if filled != size:
            raise TorchFileError(f"damaged file: record {name} is truncated")
        return buffer


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl``, loading storages from the archive and allowing only known globals."""

    def __init__(self, data: bytes, reader: _ArchiveReader | None, byteorder: str):
        super().__init__(io.BytesIO(data))
        self.reader = reader
        self.byteorder = byteorder
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str):
        # protocol 2 pickles carry Python 2 names (__builtin__.set)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        try:
            return _ALLOWED_GLOBALS[f"{module}.{name}"]
        except KeyError:
            raise UnsafeTorchFileError(f"{module}.{name}") from None

    def persistent_load(self, pid):
        if self.reader is None:
            raise TorchFileError("a pickle referring to storages outside a zip archive")
        _check(isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage", f"persistent id {_brief(pid)}")
        _, storage_type, key, location, numel = pid
        _check(type(storage_type) is _StorageType, f"storage type {_brief(storage_type)}")
        _check(isinstance(key, str) and isinstance(location, str) and _is_int(numel) and numel >= 0,
               f"storage {_brief(key)}")
        if storage_type.dtype is None:
            raise TorchFileError(f"unsupported tensor type torch.{storage_type.name}")
        if key in self.storages:
            storage = self.storages[key]
            _check(storage.type == storage_type and storage.array.size == numel,
                   f"storage {key} reused as another type")
            return storage
        raw = self.reader.read(f"data/{key}", numel * storage_type.dtype.itemsize)
        storage = _Storage(storage_type, _decode_storage(raw, storage_type, self.byteorder), self.byteorder)
        self.storages[key] = storage
        return storage


def _decode_storage(raw: bytearray, storage_type: _StorageType, byteorder: str) -> np.ndarray:
    """Elements of a storage's raw bytes, in native byte order."""
    dtype = storage_type.dtype
    if storage_type.name == "UntypedStorage":
        return np.frombuffer(raw, dtype=np.uint8)
    if dtype == np.dtype("?"):
        bits = np.frombuffer(raw, dtype=np.uint8)
        _check(bits.size == 0 or int(bits.max()) <= 1, "a bool storage holding values other than 0 and 1")
    if byteorder == "big":
        dtype = dtype.newbyteorder(">")
    array = np.frombuffer(raw, dtype=dtype)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if storage_type.dtype is _BFLOAT16:
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _unpickle(data: bytes, reader: _ArchiveReader | None, byteorder: str = "little"):
    try:
        return _RestrictedUnpickler(data, reader, byteorder).load()
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ArithmeticError, LookupError, TypeError,
            ValueError, MemoryError, RecursionError) as error:  # what a malformed pickle can make the unpickler raise
        raise TorchFileError(f"damaged data.pkl ({type(error).__name__}: {error})") from None


def _refuse_plain_pickle(data: bytes) -> None:
    """Explain why a pickle that is not in a zip archive is refused.

    It is a legacy (before PyTorch 1.6) ``torch.save`` file or a plain
    pickle. Its first object is unpickled with the same restrictions, so
    that a file asking to run code says so.
    """
    if not data.startswith(b"\x80"):
        return
    try:
        _unpickle(data, None)
    except UnsafeTorchFileError:
        raise
    except TorchFileError:
        pass
    raise TorchFileError("not a zip-format torch.save file: a legacy (before PyTorch 1.6) torch.save file "
                         "or a plain pickle, which this reader does not load")


def _open_regular(source, max_bytes: int):
    """A binary file object for ``source``, refused unless it is a regular file within ``max_bytes``.

    A path is opened non-blocking: opening a FIFO for reading would otherwise
    wait for a writer forever.
    """
    if isinstance(source, (str, bytes, os.PathLike)):
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_BINARY", 0))
        try:
            _check_regular(os.fstat(fd), max_bytes)
            handle = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        return handle, True
    if not all(hasattr(source, attribute) for attribute in ("read", "seek", "tell")):
        raise TypeError(f"expected a path or a binary file object, got {type(source).__name__}")
    try:
        fileno = source.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fileno = None
    if fileno is not None:
        _check_regular(os.fstat(fileno), max_bytes)
    start = source.tell()
    size = source.seek(0, os.SEEK_END) - start
    source.seek(start)
    if size > max_bytes:
        raise TorchFileError(f"file is {size} bytes, more than the {max_bytes} allowed")
    return source, False


def _check_regular(status: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(status.st_mode) else "a directory" if stat.S_ISDIR(status.st_mode) \
            else "a device or socket"
        raise TorchFileError(f"not a regular file ({kind})")
    if status.st_size > max_bytes:
        raise TorchFileError(f"file is {status.st_size} bytes, more than the {max_bytes} allowed")


def read_torch_file(path_or_fileobj, max_bytes: int = DEFAULT_MAX_BYTES):
    """Load a file written by ``torch.save``, with numpy arrays for tensors, without torch.

    Parameters
    ----------
    path_or_fileobj : str, bytes, os.PathLike or binary file object
        The file; a file object must be seekable and is read from its
        current position and left open.
    max_bytes : int, optional
        Largest file, and most bytes its records may unpack to in all
        (``data.pkl`` and the tensors' storages).

    Returns
    -------
    object
        What ``torch.load(f, weights_only=True)`` returns, with each tensor
        (or parameter) as a numpy array of the same dtype, shape and strides;
        tensors that shared a storage share memory.  bfloat16 tensors come
        back as float32 (exactly: a bfloat16 is the top half of a float32),
        a ``torch.Size`` as a tuple, a torch dtype as its name
        (``"torch.float32"``).

    Raises
    ------
    UnsafeTorchFileError
        The pickle asks for any global other than tensor rebuilding and
        plain containers (``os.system``, a class, ...); nothing is run.
    TorchFileError
        Not a zip-format ``torch.save`` file, not a regular file (a FIFO is
        refused without waiting on it), larger than ``max_bytes``, damaged
        (truncated, bad CRC, a tensor reaching outside its storage), or
        holding tensors of a kind this reader does not support (quantized,
        float8, subclasses, tensors with Python attributes).
    OSError
        The path cannot be opened (``FileNotFoundError``, ``PermissionError``).
    """
    handle, owned = _open_regular(path_or_fileobj, max_bytes)
    try:
        start = handle.tell()
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as error:
            handle.seek(start)
            _refuse_plain_pickle(handle.read(max_bytes))
            raise TorchFileError(f"not a torch.save file: not a zip archive, or a truncated one ({error})") from None
        with archive:
            reader = _ArchiveReader(archive, max_bytes)
            byteorder = "little"
            if reader.has("byteorder"):
                byteorder = bytes(reader.read("byteorder", min(reader.size("byteorder"), 8))).decode("ascii", "replace")
                if byteorder not in ("little", "big"):
                    raise TorchFileError(f"damaged file: byte order {byteorder[:20]!r}")
            return _unpickle(reader.read("data.pkl"), reader, byteorder)
    finally:
        if owned:
            handle.close()
