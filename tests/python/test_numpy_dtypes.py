"""Issue 17: every numpy array numpy.load reads without allow_pickle loads.

Arrays whose dtype torch has no equivalent of (datetime64, timedelta64,
bytes, str, void, long double and its complex) are made with Debian's numpy,
saved with np.save / np.savez(_compressed), and loaded with `ckptguard inspect
--json`: each comes back as its raw bytes (dtype uint8, numpy's itemsize as a
last dimension) with "numpy_dtype" equal to numpy's dtype.str, and the SHA-256
of its elements equal to that of numpy's own tobytes() (C order, the file's
byte order). One such member no longer makes a whole .npz fail. Writers
refuse such arrays (their bytes as uint8 would lose what they are); object
arrays stay refused (their data is a pickle). Structured arrays load the same
way, with the header's descr literal as "numpy_dtype" and numpy's itemsize
(fields summed with their shapes and padding)."""
import ast
import hashlib
import json
import subprocess

import pytest

np = pytest.importorskip("numpy")

from ckg import CLI


def inspect(path, *extra):
    assert CLI, "CKPTGUARD_CLI is not set (run through ctest)"
    return subprocess.run([CLI, "inspect", *extra, str(path)], capture_output=True, text=True, timeout=300)


def inspect_refused(path, *needles):
    """inspect fails on `path`, its error naming every needle."""
    out = inspect(path)
    assert out.returncode != 0
    for needle in needles:
        assert needle in out.stderr, out.stderr


def inspect_json(path):
    """The object of `path` in `inspect --json`'s document (its only file)."""
    out = inspect(path, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc["files"]) == 1, out.stdout
    return doc["files"][0]


ARRAYS = {
    "datetime_ns": np.array(["2024-01-01T00:00:00.123456789", "1970-01-01", "NaT"], dtype="datetime64[ns]"),
    "datetime_day_be": np.array(["2001-02-03", "2024-12-05"], dtype=">M8[D]"),
    "timedelta_s": np.arange(6, dtype="timedelta64[s]").reshape(2, 3),
    "bytes": np.array([b"ab", b"", b"\x00\xffxyz"], dtype="S5"),
    "str": np.array(["h\u00e9llo", "\u4e16", ""], dtype="<U5"),
    "str_be_fortran": np.asfortranarray(np.array([["ab", "c"], ["d", "efg"]], dtype=">U3")),
    "void": np.frombuffer(bytes(range(12)), dtype="V4"),
    "longdouble": np.array([1.0, -2.5, np.pi], dtype=np.longdouble),
    "clongdouble": np.array([1 + 2j, -0.5j], dtype=np.clongdouble),
    "scalar_str": np.array("zero-d", dtype="U6"),
    "empty_bytes": np.zeros((0, 4), dtype="S3"),
}


def check_raw(entry, arr):
    arr_c = np.ascontiguousarray(arr)
    assert entry["numpy_dtype"] == arr.dtype.str
    assert entry["dtype"] == "uint8"
    assert entry["shape"] == list(arr.shape) + [arr.dtype.itemsize]
    assert entry["sha256"] == hashlib.sha256(arr_c.tobytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_npy_of_dtypes_torch_lacks(tmp_path, name):
    arr = ARRAYS[name]
    path = tmp_path / (name + ".npy")
    np.save(path, arr)
    back = np.load(path)  # the oracle reads it without allow_pickle
    assert back.dtype == arr.dtype and back.tobytes() == arr.tobytes()
    got = inspect_json(path)
    assert list(got["tensors"]) == [""], got["tensors"]
    check_raw(got["tensors"][""], arr)


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_with_such_members_loads_whole(tmp_path, save):
    path = tmp_path / "mixed.npz"
    plain = np.arange(12, dtype=np.float32).reshape(3, 4)
    save(path, plain=plain, when=ARRAYS["datetime_ns"], names=ARRAYS["str"])
    got = inspect_json(path)["tensors"]
    assert sorted(got) == ["names", "plain", "when"]
    assert "numpy_dtype" not in got["plain"]
    assert got["plain"]["dtype"] == "float32" and got["plain"]["shape"] == [3, 4]
    assert got["plain"]["sha256"] == hashlib.sha256(plain.tobytes()).hexdigest()
    check_raw(got["when"], ARRAYS["datetime_ns"])
    check_raw(got["names"], ARRAYS["str"])


PICKLED_SKIPPED = {"scalar_str"}  # a 0-d array pickles as itself too, but is covered by the .npy case


@pytest.mark.parametrize("writer", ["torch.save", "pickle", "torch.save protocol 5", "pickle protocol 5"])
def test_pickled_arrays_of_such_dtypes_load_as_tensors(tmp_path, writer):
    """The same arrays inside a checkpoint (numpy's own pickling:
    _reconstruct, then __setstate__ with a numpy.dtype whose state carries
    the byte order and a datetime's unit; with protocol 5,
    _frombuffer(buffer, dtype, shape, order)) load as the .npy files do."""
    import pickle
    arrays = {k: v for k, v in ARRAYS.items() if k not in PICKLED_SKIPPED}
    path = tmp_path / "arrays.bin"
    protocol = 5 if writer.endswith("protocol 5") else 2
    if writer.startswith("pickle"):
        with open(path, "wb") as f:
            pickle.dump(arrays, f, protocol=protocol)
    else:
        torch = pytest.importorskip("torch")
        torch.save(arrays, path, pickle_protocol=protocol)
    got = inspect_json(path)["tensors"]
    assert sorted(got) == sorted(arrays)
    for name, arr in arrays.items():
        check_raw(got[name], arr)


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickled_arrays_of_torch_dtypes_in_either_order(tmp_path, protocol):
    import pickle
    arrays = {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "i64_fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "i32_be": np.arange(5, dtype=">i4"),
        "bool": np.array([True, False, True]),
        "c64": np.array([1 + 2j, -3j], dtype=np.complex64),
        "empty": np.zeros((0, 2)),
    }
    path = tmp_path / "arrays.pkl"
    with open(path, "wb") as f:
        pickle.dump(arrays, f, protocol=protocol)
    got = inspect_json(path)["tensors"]
    assert sorted(got) == sorted(arrays)
    for name, arr in arrays.items():
        entry = got[name]
        assert entry["shape"] == list(arr.shape), name
        values = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"))
        if arr.dtype == np.bool_:
            values = values.astype(np.uint8)
        assert entry["sha256"] == hashlib.sha256(values.tobytes()).hexdigest(), name


def test_pickled_structured_and_object_arrays_stay_records(tmp_path):
    """What is not loaded as bytes (fields, objects) stays a declared record,
    as before: nothing is called, and the tensor list leaves it out."""
    import pickle
    path = tmp_path / "other.pkl"
    with open(path, "wb") as f:
        pickle.dump({"fields": STRUCTURED["fields"], "plain": np.arange(3, dtype=np.int16)}, f, protocol=2)
    got = inspect_json(path)
    assert list(got["tensors"]) == ["plain"]


def test_float16_scalars_are_exact_floats(tmp_path):
    import pickle
    values = {"h": np.float16(-1.5), "sub": np.float16(6e-8), "max": np.float16(65504), "inf": np.float16("-inf"),
              "f32": np.float32(0.1)}
    path = tmp_path / "scalars.pkl"
    with open(path, "wb") as f:
        pickle.dump(values, f, protocol=2)
    skeleton = dict(inspect_json(path)["skeleton"]["__dict__"])
    assert skeleton["h"] == -1.5
    assert skeleton["sub"] == float(np.float16(6e-8)) == 2.0 ** -24
    assert skeleton["max"] == 65504.0
    assert skeleton["inf"] == {"__float__": "-inf"}
    assert skeleton["f32"] == float(np.float32(0.1))


def test_text_output_names_the_numpy_dtype(tmp_path):
    path = tmp_path / "when.npy"
    np.save(path, ARRAYS["datetime_ns"])
    out = inspect(path)
    assert out.returncode == 0, out.stderr
    assert "numpy <M8[ns] as bytes: uint8 [3,8] stride [8,1]" in out.stdout, out.stdout
    assert "tensor uint8 [3, 8] (numpy <M8[ns])" in out.stdout, out.stdout


@pytest.mark.parametrize("to", ["safetensors", "pt"])
def test_convert_refuses_such_arrays(tmp_path, to):
    src = tmp_path / "names.npz"
    np.savez(src, names=ARRAYS["str"])
    dst = tmp_path / ("out." + to)
    out = subprocess.run([CLI, "convert", str(src), str(dst), "--to", to], capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "<U5" in out.stderr and "numpy dtype" in out.stderr, out.stderr
    assert not dst.exists()


STRUCTURED = {
    "fields": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
    "aligned_padding": np.zeros(2, dtype=np.dtype([("a", "i1"), ("b", "<i4"), ("c", "i1")], align=True)),
    "titles_nested_be": np.zeros((2, 2), dtype=[(("Title", "t"), ">u2"), ("n", [("x", "<f4"), ("s", "S3")], (2,))]),
    "record_array": np.rec.fromarrays([np.arange(4), np.linspace(0, 1, 4)], names="i,f"),
}
for name, arr in STRUCTURED.items():
    arr.view(np.uint8)[...] = np.arange(arr.nbytes, dtype=np.uint64).astype(np.uint8).reshape(arr.view(np.uint8).shape)


@pytest.mark.parametrize("name", sorted(STRUCTURED))
def test_structured_arrays_load_as_their_bytes(tmp_path, name):
    arr = STRUCTURED[name]
    path = tmp_path / (name + ".npy")
    np.save(path, arr)
    back = np.load(path)
    assert back.dtype == arr.dtype and back.tobytes() == arr.tobytes()
    entry = inspect_json(path)["tensors"][""]
    # The header's descr literal is numpy's dtype.descr.
    assert ast.literal_eval(entry["numpy_dtype"]) == np.lib.format.dtype_to_descr(arr.dtype)
    assert entry["dtype"] == "uint8"
    assert entry["shape"] == list(arr.shape) + [arr.dtype.itemsize]
    assert entry["sha256"] == hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def test_structured_descr_not_worked_out_is_refused_saying_so(tmp_path):
    # A header numpy itself cannot read ('nonsense' is no dtype).
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(3, dtype=[("a", "<i4")]))
    raw = path.read_bytes().replace(b"'<i4'", b"'zzz'", 1)
    path.write_bytes(raw)
    with pytest.raises(Exception):
        np.load(path)
    inspect_refused(path, "structured")


def test_truncated_structured_array_is_refused(tmp_path):
    path = tmp_path / "short.npy"
    np.save(path, STRUCTURED["fields"])
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError):
        np.load(path)
    inspect_refused(path, "past the end")


def test_object_arrays_stay_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        np.load(path)  # numpy itself refuses without allow_pickle
    inspect_refused(path, "object", "allow_pickle")


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_of_no_arrays(tmp_path, save):
    # np.savez() of nothing writes a zip end record alone; numpy.load reads
    # it as an empty NpzFile.
    path = tmp_path / "empty.npz"
    save(path)
    assert len(np.load(path).files) == 0
    doc = inspect_json(path)
    assert doc["kind"] == "numpy-zip" and doc["tensors"] == {}, doc
    report = json.loads(subprocess.run([CLI, "scan", "--format", "json", str(path)], capture_output=True,
                                       timeout=60).stdout)
    assert report["files"][0]["verdict"] == "safe", report


# --- joblib's inline arrays ---------------------------------------------------------
# joblib.dump writes each numpy array as a NumpyArrayWrapper whose BUILD is
# followed by the array's bytes in the stream (after a padding byte and
# padding); joblib.load reads them there and puts the array in the
# wrapper's place. pickle.load fails at those bytes: the loader reads such a
# file as joblib.load does.
JOBLIB_ARRAYS = {
    "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
    "i64_fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
    "i32_be": np.arange(5, dtype=">i4"),
    "bool": np.array([True, False, True]),
    "empty": np.zeros((0, 2)),
    "zero_d": np.array(7.5),
    "u8_3d": np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    "datetime_day": np.array(["2024-01-01", "1970-01-02"], dtype="M8[D]"),
}


@pytest.mark.parametrize("compress,protocol", [(0, None), (3, None), ("lzma", None), (0, 0), (0, 1), ("zlib", 1)])
def test_joblib_dumps_load_as_joblib_reads_them(tmp_path, compress, protocol):
    # Protocols 0 and 1 have no PROTO opcode, and pickle.load cannot read
    # past the first array: the file is still joblib's (copyreg makes each
    # wrapper).
    joblib = pytest.importorskip("joblib")
    value = {"arrays": JOBLIB_ARRAYS, "meta": {"epoch": 3, "name": "run"}, "list": [np.arange(3), "x"]}
    path = tmp_path / "model.joblib"
    joblib.dump(value, path, compress=(compress, 3) if isinstance(compress, str) else compress, protocol=protocol)
    if protocol is not None:
        from ckg import scan
        assert scan(path)["verdict"] == "suspicious"  # not weights-only, and nothing else
    loaded = joblib.load(path)  # the oracle
    doc = inspect_json(path)
    got = doc["tensors"]
    want = {"arrays." + k: v for k, v in loaded["arrays"].items()}
    want["list.0"] = loaded["list"][0]
    assert sorted(got) == sorted(want)
    for name, arr in want.items():
        entry = got[name]
        if arr.dtype.kind == "M":  # kept as its raw bytes, numpy's dtype named
            assert entry["numpy_dtype"] == arr.dtype.str, name
            assert entry["shape"] == list(arr.shape) + [arr.dtype.itemsize], name
            assert entry["sha256"] == hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest(), name
            continue
        assert entry["shape"] == list(arr.shape), name
        values = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"))
        if arr.dtype == np.bool_:
            values = values.astype(np.uint8)
        assert entry["sha256"] == hashlib.sha256(values.tobytes()).hexdigest(), name


@pytest.mark.parametrize("how", ["object_array", "matrix_subclass"])
def test_joblib_arrays_the_loader_refuses(tmp_path, how):
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "refused.joblib"
    if how == "object_array":  # its data is a pickle joblib.load runs
        joblib.dump({"a": np.array([1, "a"], dtype=object)}, path)
        inspect_refused(path, "object array")
    else:  # joblib builds the subclass and calls its __array_prepare__
        joblib.dump({"m": np.matrix([[1.0, 2.0]])}, path)
        inspect_refused(path, "subclass")


def test_joblib_wrapper_with_an_attribute_joblib_does_not_write_is_refused(tmp_path):
    # An instance attribute named as one of the wrapper's methods is what
    # joblib calls (read, safe_get_numpy_array_alignment_bytes...): any
    # attribute beyond the six joblib writes is refused, even a harmless one.
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "extra.joblib"
    joblib.dump({"w": np.arange(4.0)}, path)
    data = path.read_bytes()
    marker = b"\x8c\x0aallow_mmap"  # SHORT_BINUNICODE 'allow_mmap' (protocol 4+), renamed in place
    assert marker in data
    path.write_bytes(data.replace(marker, b"\x8c\x0aallow_mmaq", 1))
    inspect_refused(path, "allow_mmaq")


def test_joblib_dump_followed_by_more_bytes_is_refused(tmp_path):
    joblib = pytest.importorskip("joblib")
    path = tmp_path / "trailing.joblib"
    joblib.dump({"w": np.arange(4.0)}, path)
    with open(path, "ab") as f:
        f.write(b"\x80\x02N.")
    inspect_refused(path, "follow the pickle's STOP")


def test_joblib_reading_reports_offsets_in_the_file(tmp_path):
    # joblib's reading is rebuilt without FRAME headers and inline array
    # bytes; what the scanner and the loader say about it names the file's
    # bytes. Here a global after the first array (only joblib's reading gets
    # there: pickle.load stops at the array's bytes) and a refusal there.
    import datetime
    joblib = pytest.importorskip("joblib")
    from ckg import scan
    path = tmp_path / "after_array.joblib"
    joblib.dump({"w": np.arange(4.0), "when": datetime.date(2020, 1, 2)}, path)
    data = path.read_bytes()
    spelled = b"\x8c\x08datetime\x94\x8c\x04date\x94\x93"  # SHORT_BINUNICODE x2, MEMOIZE x2, STACK_GLOBAL
    assert data.count(spelled) == 1
    at = data.index(spelled) + len(spelled) - 1
    report = scan(path)
    found = [f for f in report["findings"] if f.get("global") == "datetime.date"]
    assert found, report
    assert all(f["entry"] == "[joblib]" and f["offset"] == at for f in found), (at, found)

    refused = tmp_path / "matrix_after_array.joblib"
    joblib.dump({"w": np.arange(4.0), "m": np.matrix([[5.5, 7.25]])}, refused)
    data = refused.read_bytes()
    # The matrix wrapper's BUILD: its padding-length byte, the padding and
    # the array's 16 bytes follow it.
    import struct
    array_at = data.index(struct.pack("<2d", 5.5, 7.25))
    build = [p for p in range(array_at - 1) if data[p] == ord("b") and p + 2 + data[p + 1] == array_at]
    assert len(build) == 1, build
    out = inspect(refused)
    assert out.returncode != 0 and "subclass" in out.stderr, out.stderr
    import re
    assert re.search(r"\bat byte %d\b" % build[0], out.stderr), (build[0], out.stderr)
