"""genre_cnn_core.torchfile reads torch.save files as torch.load(weights_only=True) does, without torch.

Hand-written pickles (``_Pickle``) build files that torch.save would never
write: code to run, tensors reaching outside their storage, damaged records.
"""

import collections
import io
import os
import pickle
import re
import struct
import subprocess
import sys
import textwrap
import threading
import zipfile
from importlib import resources

import numpy as np
import pytest
import torch

from genre_cnn_core.torchfile import TorchFileError, UnsafeTorchFileError, read_torch_file

DATA = resources.files("genre_cnn_core").joinpath("data")


def assert_same(ours, theirs, where="root"):
    """``ours`` (numpy) is exactly what torch.load returned: same types, dtypes, shapes, strides, values."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray), where
        theirs = theirs.detach()
        if theirs.dtype == torch.bfloat16:
            assert ours.dtype == np.float32, where
            theirs = theirs.float()
        assert ours.dtype == theirs.numpy().dtype and ours.shape == tuple(theirs.shape), where
        assert ours.strides == tuple(s * ours.itemsize for s in theirs.stride()), where
        np.testing.assert_array_equal(ours, theirs.numpy(), err_msg=where)
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        assert getattr(ours, "_metadata", None) == getattr(theirs, "_metadata", None), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)) and not isinstance(theirs, torch.Size):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(theirs, torch.Size):
        assert ours == tuple(theirs) and type(ours) is tuple, where
    elif isinstance(theirs, torch.dtype):
        assert ours == str(theirs), where
    else:
        assert type(ours) is type(theirs) and ours == theirs, where


def torch_roundtrip(obj, tmp_path, name="saved.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return read_torch_file(path), torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", ["musicnn_msd.pt", "default_model.pt"])
def test_packaged_files_equal_torch_load(name):
    with DATA.joinpath(name).open("rb") as handle:
        ours = read_torch_file(handle)
        handle.seek(0)
        theirs = torch.load(handle, weights_only=True)
    assert_same(ours, theirs)
    assert ours.get("state_dict") or ours.get("weights"), "the comparison must cover tensors"


def test_tensors_of_every_supported_dtype_shape_and_layout(tmp_path):
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, 4, generator=generator)
    integers = torch.randint(-1000, 1000, (7, 3), generator=generator)
    obj = {
        "float32": base,
        "float64": base.double(),
        "float16": base.half(),
        "bfloat16": base.bfloat16(),
        "int64": integers,
        "int32": integers.int(),
        "int16": integers.short(),
        "int8": (integers % 100).to(torch.int8),
        "uint8": (integers % 200).abs().to(torch.uint8),
        "uint16": (integers.abs() * 60).to(torch.uint16),
        "bool": integers > 0,
        "complex64": torch.complex(base, -base),
        "complex128": torch.complex(base, base).to(torch.complex128),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        # views: each shares a storage with "float32" or with each other
        "transposed": base.transpose(0, 2),
        "sliced": base[1:5:2, :, 1:],
        "column": base[:, 3, 2],
        "expanded": base[0, 0, :1].expand(3, 4),
        "permuted_half": base.half().permute(2, 0, 1),
        "parameter": torch.nn.Parameter(torch.arange(4.0)),
        "module_state": torch.nn.Linear(3, 2).state_dict(),
        "plain": {"text": "é", "number": 2, "real": 0.25, "none": None, "flag": True, "tuple": (1, (2, 3)),
                  "list": [1.5, "x"], "bytes": b"\x00\xff", "bytearray": bytearray(b"ab"),
                  "set": {1, 2}, "complex": 1 + 2j,
                  "size": torch.Size([2, 3]), "dtype": torch.float16, "ordered": collections.OrderedDict(a=1)},
    }
    ours, theirs = torch_roundtrip(obj, tmp_path)
    assert_same(ours, theirs)
    assert np.shares_memory(ours["float32"], ours["transposed"]) and np.shares_memory(ours["float32"], ours["column"])
    ours["float32"][0, 0, 0] = 123.0  # shared like torch's: a write shows through every view
    assert ours["transposed"][0, 0, 0] == 123.0 and ours["expanded"][2, 0] == 123.0


def test_big_endian_file_is_read_in_native_order(tmp_path):
    obj = {"f": torch.arange(6.0).reshape(2, 3).t(), "i": torch.arange(-3, 3), "h": torch.arange(4.0).half(),
           "u16": torch.tensor([1, 258, 65535]).to(torch.uint16)}
    little = tmp_path / "little.pt"
    torch.save(obj, little)
    big = tmp_path / "big.pt"
    itemsizes = {"0": 4, "1": 8, "2": 2, "3": 2}  # storages are numbered in obj's order
    with zipfile.ZipFile(little) as source, zipfile.ZipFile(big, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            key = info.filename.rsplit("/", 1)[-1]
            if info.filename.startswith("little/data/"):
                data = np.frombuffer(data, dtype=f"u{itemsizes[key]}").byteswap().tobytes()
            elif info.filename == "little/byteorder":
                data = b"big"
            target.writestr(info.filename, data)
    ours, theirs = read_torch_file(big), torch.load(big, weights_only=True)
    assert_same(ours, obj)
    # torch.load leaves the bytes of an untyped storage (uint16 here) unswapped, so only ours is right there
    del ours["u16"], theirs["u16"]
    assert_same(ours, theirs)


class _Pickle:
    """Protocol 2 opcodes, written by hand."""

    @staticmethod
    def global_(module, name):
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    @staticmethod
    def text(value):
        data = value.encode()
        return b"X" + struct.pack("<I", len(data)) + data

    @staticmethod
    def int_(value):
        return b"J" + struct.pack("<i", value)

    @staticmethod
    def tuple_(*items):
        return b"(" + b"".join(items) + b"t"

    @classmethod
    def tensor(cls, key, numel, offset, size, stride, storage="FloatStorage", rebuild="_rebuild_tensor_v2"):
        storage_id = cls.tuple_(cls.text("storage"), cls.global_("torch", storage), cls.text(key), cls.text("cpu"),
                                cls.int_(numel)) + b"Q"
        hooks = cls.global_("collections", "OrderedDict") + b")R"
        args = cls.tuple_(storage_id, cls.int_(offset), cls.tuple_(*map(cls.int_, size)),
                          cls.tuple_(*map(cls.int_, stride)), b"\x89", hooks)
        return cls.global_("torch._utils", rebuild) + args + b"R"

    @staticmethod
    def program(body):
        return b"\x80\x02" + body + b"."


def write_archive(path, pickled, records=(), compress=zipfile.ZIP_STORED, prefix="archive"):
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        archive.writestr(f"{prefix}/data.pkl", pickled)
        archive.writestr(f"{prefix}/byteorder", "little")
        archive.writestr(f"{prefix}/version", "3\n")
        for key, data in records:
            archive.writestr(f"{prefix}/data/{key}", data)
    return path


def test_hand_written_archive_is_understood(tmp_path):
    """The hand-written pickles below are valid: this one loads, in torch too."""
    pickled = _Pickle.program(b"}" + _Pickle.text("w") + _Pickle.tensor("0", 6, 1, (2, 2), (1, 2)) + b"s")
    path = write_archive(tmp_path / "ok.pt", pickled, [("0", np.arange(6, dtype="<f4").tobytes())])
    assert_same(read_torch_file(path), torch.load(path, weights_only=True))
    np.testing.assert_array_equal(read_torch_file(path)["w"], [[1, 3], [2, 4]])


CODE_PAYLOADS = {
    "os.system": lambda cmd: _Pickle.global_("os", "system") + _Pickle.tuple_(_Pickle.text(cmd)) + b"R",
    "posix.system": lambda cmd: _Pickle.global_("posix", "system") + _Pickle.tuple_(_Pickle.text(cmd)) + b"R",
    "builtins.eval": lambda cmd: _Pickle.global_("__builtin__", "eval")
    + _Pickle.tuple_(_Pickle.text(f"__import__('os').system({cmd!r})")) + b"R",
    "subprocess.Popen": lambda cmd: _Pickle.global_("subprocess", "Popen")
    + _Pickle.tuple_(_Pickle.tuple_(_Pickle.text("sh"), _Pickle.text("-c"), _Pickle.text(cmd))) + b"R",
    # protocol 4's STACK_GLOBAL takes the names from the stack
    "os.system (STACK_GLOBAL)": lambda cmd: _Pickle.text("os") + _Pickle.text("system") + b"\x93"
    + _Pickle.tuple_(_Pickle.text(cmd)) + b"R",
    # INST calls the class with the marked arguments
    "os.system (INST)": lambda cmd: b"(" + _Pickle.text(cmd) + b"ios\nsystem\n",
}


@pytest.mark.parametrize("payload", sorted(CODE_PAYLOADS))
def test_code_in_the_pickle_is_refused_and_never_run(payload, tmp_path):
    marker = tmp_path / "pwned"
    body = b"}" + _Pickle.text("x") + CODE_PAYLOADS[payload](f"touch {marker}") + b"s"
    path = write_archive(tmp_path / "evil.pt", _Pickle.program(body))
    with pytest.raises(UnsafeTorchFileError) as error:
        read_torch_file(path)
    expected = payload.split(" ")[0]
    assert error.value.global_name == expected
    # the wording model.py turns into "refused to load: the file asks to run code (os.system)"
    assert re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", str(error.value)).group(1) == expected
    assert isinstance(error.value, pickle.UnpicklingError) and "\n" not in str(error.value)
    assert not marker.exists()


def test_torch_saved_reduce_payload_and_plain_pickle_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    saved = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "metadata": Payload()}, saved)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps({"x": Payload()}, protocol=2))
    for path in (saved, plain):
        with pytest.raises(UnsafeTorchFileError, match=r"unsupported GLOBAL (os|posix)\.system"):
            read_torch_file(path)
    assert not marker.exists()
    plain_data = tmp_path / "data.pkl"
    plain_data.write_bytes(pickle.dumps({"x": 1}, protocol=2))
    with pytest.raises(TorchFileError, match="plain pickle"):
        read_torch_file(plain_data)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(TorchFileError, match="legacy"):
        read_torch_file(legacy)


def test_build_cannot_alter_the_allowed_globals(tmp_path):
    # BUILD with a slot state would setattr(__defaults__) on a plain function; the stand-ins are immutable.
    state = _Pickle.tuple_(b"N", b"}" + _Pickle.text("__defaults__") + _Pickle.tuple_(_Pickle.int_(1)) + b"s")
    for module, name in [("torch._utils", "_rebuild_tensor_v2"), ("torch", "FloatStorage"), ("torch", "Tensor")]:
        path = write_archive(tmp_path / "build.pt", _Pickle.program(_Pickle.global_(module, name) + state + b"b"))
        with pytest.raises(TorchFileError, match="damaged data.pkl"):
            read_torch_file(path)
    test_hand_written_archive_is_understood(tmp_path)  # still works after the attempts


@pytest.mark.parametrize("tensor, records, message", [
    (_Pickle.tensor("0", 4, 0, (5,), (1,)), [("0", bytes(16))], "reaching element 4 of a storage of 4"),
    (_Pickle.tensor("0", 4, 4, (1,), (1,)), [("0", bytes(16))], "reaching element 4"),
    (_Pickle.tensor("0", 4, 0, (2, 2), (1, 3)), [("0", bytes(16))], "reaching element 4"),
    (_Pickle.tensor("0", 4, -1, (1,), (1,)), [("0", bytes(16))], "storage offset -1"),
    (_Pickle.tensor("0", 4, 0, (2,), (-1,)), [("0", bytes(16))], "stride"),
    (_Pickle.tensor("0", 4, 0, (2, 2), (1,)), [("0", bytes(16))], "stride"),
    (_Pickle.tensor("0", 8, 0, (2,), (1,)), [("0", bytes(16))], "holds 16 bytes, 32 expected"),
    (_Pickle.tensor("1", 4, 0, (2,), (1,)), [("0", bytes(16))], "record data/1 is missing"),
    (_Pickle.tensor("0", 2, 0, (2,), (1,), storage="BoolStorage"), [("0", b"\x01\x02")], "other than 0 and 1"),
    (_Pickle.tensor("0", 2, 0, (2,), (1,), storage="QInt8Storage"), [("0", b"\x01\x02")],
     "unsupported tensor type torch.QInt8Storage"),
    (_Pickle.tensor("0", 2, 0, (2,), (1,), rebuild="_rebuild_tensor_v3"), [("0", bytes(8))], "damaged data.pkl"),
])
def test_damaged_tensor_records_give_one_line_errors(tensor, records, message, tmp_path):
    path = write_archive(tmp_path / "bad.pt", _Pickle.program(tensor), records)
    with pytest.raises(TorchFileError, match=re.escape(message)) as error:
        read_torch_file(path)
    assert "\n" not in str(error.value)


def test_error_messages_never_expand_shared_structures(tmp_path):
    # 80 nested lists, each holding the previous one twice: a repr would have 2**80 parts
    nested = b"]q\x000" + b"".join(b"]q" + bytes([i + 1]) + b"(h" + bytes([i]) + b"h" + bytes([i]) + b"e0"
                                    for i in range(80)) + b"h" + bytes([80])
    storage = _Pickle.tuple_(_Pickle.text("storage"), _Pickle.global_("torch", "FloatStorage"), _Pickle.text("0"),
                             _Pickle.text("cpu"), _Pickle.int_(4)) + b"Q"
    hooks = _Pickle.global_("collections", "OrderedDict") + b")R"
    cases = {"persistent id a list of 2 items": nested + b"Q",
             "size a list of 2 items": _Pickle.global_("torch._utils", "_rebuild_tensor_v2") + b"(" + storage
             + _Pickle.int_(0) + nested + _Pickle.tuple_(_Pickle.int_(1)) + b"\x89" + hooks + b"tR"}
    code = textwrap.dedent("""
        import sys
        from genre_cnn_core.torchfile import TorchFileError, read_torch_file
        try:
            read_torch_file(sys.argv[1])
        except TorchFileError as error:
            print(error)
    """)
    for message, body in cases.items():
        path = write_archive(tmp_path / "nested.pt", _Pickle.program(body), [("0", bytes(16))])
        # in a child process, as a repr of the lists would hold the interpreter for ever; the timeout
        # guards against that, it is not a speed check
        try:
            result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                                    check=False, timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("the error message expanded the nested lists")
        assert result.stdout.strip() == f"damaged data.pkl: {message}", result.stderr


def test_garbage_empty_and_truncated_files(tmp_path):
    saved = tmp_path / "good.pt"
    torch.save({"w": torch.arange(1000.0)}, saved)
    data = saved.read_bytes()
    cases = {"garbage": os.urandom(3000), "empty": b"", "text": b"\0garbage",
             "head": data[: len(data) // 2], "tail": data[len(data) // 2:]}
    for name, content in cases.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(content)
        # the tail keeps the zip directory, not the records it points at
        expected = "damaged file" if name == "tail" else "not a torch.save file"
        with pytest.raises(TorchFileError, match=expected) as error:
            read_torch_file(path)
        assert "\n" not in str(error.value), name
    # a flipped byte inside the tensor's data: the record's CRC catches it
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("good/data/0")
    damaged = bytearray(data)
    damaged[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(damaged))
    with pytest.raises(TorchFileError, match="damaged file: record data/0.*CRC"):
        read_torch_file(tmp_path / "flipped.pt")
    # a zip archive that is no torch.save file
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(TorchFileError, match="no data.pkl"):
        read_torch_file(tmp_path / "other.zip")
    with pytest.raises(FileNotFoundError):
        read_torch_file(tmp_path / "missing.pt")


def test_fifo_directory_and_device_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_torch_file(fifo)
        except TorchFileError as error:
            outcome.append(str(error))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)  # a guard against hanging for ever on the FIFO, not a speed check
    if reader.is_alive():
        with open(fifo, "wb"):  # unblock the reader so the test run can end
            pass
        pytest.fail("reading a FIFO blocked waiting for a writer")
    assert outcome == ["not a regular file (a FIFO)"]
    with pytest.raises(TorchFileError, match=r"not a regular file \(a directory\)"):
        read_torch_file(tmp_path)
    with pytest.raises(TorchFileError, match=r"not a regular file \(a device or socket\)"):
        read_torch_file("/dev/zero")


def test_size_limits_are_checked_before_reading(tmp_path):
    saved = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(10_000)}, saved)
    size = saved.stat().st_size
    with pytest.raises(TorchFileError, match=f"file is {size} bytes, more than the 1000 allowed"):
        read_torch_file(saved, max_bytes=1000)
    with pytest.raises(TorchFileError, match="more than the 1000 allowed"):
        read_torch_file(io.BytesIO(saved.read_bytes()), max_bytes=1000)
    # a zip bomb: 50 MB of zeros deflated to a small file
    numel = 12_500_000
    bomb = write_archive(tmp_path / "bomb.pt", _Pickle.program(_Pickle.tensor("0", numel, 0, (numel,), (1,))),
                         [("0", bytes(4 * numel))], compress=zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 1_000_000
    with pytest.raises(TorchFileError, match="record data/0 unpacks to 50000000 bytes, more than the 1000000 allowed"):
        read_torch_file(bomb, max_bytes=1_000_000)
    assert read_torch_file(bomb, max_bytes=60_000_000).shape == (numel,)
    # records within the limit one by one, not together
    two = _Pickle.tuple_(*(_Pickle.tensor(key, 150_000, 0, (150_000,), (1,)) for key in "01"))
    pair = write_archive(tmp_path / "pair.pt", _Pickle.program(two), [("0", bytes(600_000)), ("1", bytes(600_000))],
                         compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(TorchFileError, match="record data/1 unpacks to 600000 bytes, more than the 1000000 allowed"):
        read_torch_file(pair, max_bytes=1_000_000)
    assert [a.shape for a in read_torch_file(pair, max_bytes=1_300_000)] == [(150_000,), (150_000,)]


def test_file_objects_are_read_from_their_position_and_left_open(tmp_path):
    saved = tmp_path / "good.pt"
    torch.save({"w": torch.arange(3)}, saved)
    buffer = io.BytesIO(b"junk" + saved.read_bytes())
    buffer.seek(4)
    np.testing.assert_array_equal(read_torch_file(buffer)["w"], [0, 1, 2])
    assert not buffer.closed
    with pytest.raises(TypeError, match="expected a path or a binary file object"):
        read_torch_file(12)


def test_importing_and_reading_never_imports_torch():
    code = textwrap.dedent("""
        import sys
        from genre_cnn_core.torchfile import read_torch_file
        from importlib import resources
        with resources.files("genre_cnn_core").joinpath("data", "musicnn_msd.pt").open("rb") as handle:
            blob = read_torch_file(handle)
        assert blob["state_dict"]["timbral74.conv.weight"].shape == (204, 1, 7, 38)
        print("torch" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
