"""Issue 14: one proven payload per bypass class. Each test builds a hostile
pickle, loads it with a real loader in a subprocess (Debian's /usr/bin/python3:
pickle.loads, pickle._loads, torch.load, numpy.load(allow_pickle=True)), sees
the harmless marker file it writes under /tmp/ckptguard-pwned-<unique>,
deletes the marker, and then checks that `ckptguard scan` calls it dangerous.

Payloads prefer callables that are on no name list (typing._eval_type, uu.encode,
random._os): the scanner must catch them by what loading does (default deny on
calls), not by their names."""
import base64
import glob
import json
import lzma
import os
import pickle
import struct
import zlib

import pytest

from ckg import describe, load_runs_payload, marker_path, run_cli, scan


# --- a small pickle assembler (opcodes of Lib/pickletools.py) -------------------
def proto(n):
    return b"\x80" + bytes([n])


def g(module, name):  # GLOBAL: module and name as text lines (protocol 0-3)
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def sg(module, name):  # STACK_GLOBAL (protocol 4): any dotted name
    return s(module) + s(name) + b"\x93"


def s(text):  # BINUNICODE
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def b(data):  # BINBYTES (protocol 3+)
    return b"B" + struct.pack("<I", len(data)) + data


def tup(*items):  # MARK items TUPLE
    return b"(" + b"".join(items) + b"t"


def call(fn, *args):  # fn(*args) by REDUCE
    return fn + tup(*args) + b"R"


NONE = b"N"


def p2(body):
    return proto(2) + body + b"."


def p4(body):
    return proto(4) + body + b"."


def touch_code(marker):
    return "open(%r, 'w').close()" % marker


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def assert_proven_and_dangerous(path, marker, loaders=("pickle.loads", "pickle._loads"), cwd=None, want=()):
    for loader in loaders:
        assert load_runs_payload(path, marker, loader, cwd=cwd), "%s did not run the payload of %s" % (loader, path)
    r = scan(path)
    assert r["verdict"] == "dangerous", describe(r)
    rules = {f["rule"] for f in r["findings"] if f["severity"] == "dangerous"}
    for rule in want:
        assert rule in rules, describe(r)
    return r


# 1. An unknown function called with a code string (no name list has typing).
def test_unknown_function_with_code_string(tmp_path):
    m = marker_path()
    forward = call(g("typing", "ForwardRef"), s(touch_code(m)))
    path = write(tmp_path, "typing_eval.pkl", p2(call(g("typing", "_eval_type"), forward, NONE, NONE)))
    assert_proven_and_dangerous(path, m, loaders=("pickle.loads", "pickle._loads", "torch.load", "numpy.load"),
                                want=("CKG-F080",))


def test_stdlib_runner_with_code_string(tmp_path):
    # timeit.timeit(stmt, setup, timer, number): runs stmt.
    m = marker_path()
    path = write(tmp_path, "timeit.pkl",
                 p2(call(g("timeit", "timeit"), s(touch_code(m)), s("pass"), g("time", "perf_counter"),
                         b"K\x01")))
    assert_proven_and_dangerous(path, m)


# 2. A file-writing function: uu.encode(in, out) writes `out`; and a method
# reached by getattr: PosixPath.write_text(PosixPath(marker), 'x').
def test_file_writing_function(tmp_path):
    m = marker_path()
    path = write(tmp_path, "uu.pkl", p2(call(g("uu", "encode"), s("/etc/hostname"), s(m))))
    assert_proven_and_dangerous(path, m, want=("CKG-F080",))


def test_file_writing_method_via_getattr(tmp_path):
    m = marker_path()
    method = call(g("builtins", "getattr"), g("pathlib", "PosixPath"), s("write_text"))
    path = write(tmp_path, "write_text.pkl", p2(call(method, call(g("pathlib", "PosixPath"), s(m)), s("x"))))
    assert_proven_and_dangerous(path, m)


# 3. A private module alias: random imports os as _os.
def test_private_module_alias(tmp_path):
    m = marker_path()
    path = write(tmp_path, "random_os.pkl", p4(call(sg("random", "_os.system"), s("touch " + m))))
    r = assert_proven_and_dangerous(path, m)
    assert any(f["rule"] == "CKG-D001" for f in r["findings"]), describe(r)


# 4. Callees that call what they are handed.
def test_map_fed_a_callable(tmp_path):
    m = marker_path()
    mapped = call(g("builtins", "map"), g("uu", "encode"), tup(s("/etc/hostname")), tup(s(m)))
    path = write(tmp_path, "map.pkl", p2(call(g("builtins", "list"), mapped)))
    assert_proven_and_dangerous(path, m, want=("CKG-F084",))


def test_functools_reduce_fed_a_callable(tmp_path):
    m = marker_path()
    path = write(tmp_path, "reduce.pkl",
                 p2(call(g("functools", "reduce"), g("uu", "encode"), tup(s(m)), s("/etc/hostname"))))
    assert_proven_and_dangerous(path, m, want=("CKG-F084",))


def test_copy_reconstruct_fed_a_callable(tmp_path):
    m = marker_path()
    path = write(tmp_path, "reconstruct.pkl",
                 p2(call(g("copy", "_reconstruct"), NONE, NONE, g("uu", "encode"), tup(s("/etc/hostname"), s(m)))))
    assert_proven_and_dangerous(path, m, want=("CKG-F084",))


# 5. functools.partial, then the partial object called.
def test_partial_then_called(tmp_path):
    m = marker_path()
    bound = call(g("functools", "partial"), g("uu", "encode"), s("/etc/hostname"))
    path = write(tmp_path, "partial.pkl", p2(call(bound, s(m))))
    assert_proven_and_dangerous(path, m, want=("CKG-F002",))


# 6. getattr(os, 'system'), with os reached through another module.
def test_getattr_os_system(tmp_path):
    m = marker_path()
    system = call(g("builtins", "getattr"), sg("shutil", "os"), s("system"))
    path = write(tmp_path, "getattr_os.pkl", p4(call(system, s("touch " + m))))
    r = assert_proven_and_dangerous(path, m)
    assert any(f["rule"] == "CKG-D001" and f["global"] == "shutil.os.system" for f in r["findings"]), describe(r)


def test_getattr_through_private_alias(tmp_path):
    m = marker_path()
    system = call(g("builtins", "getattr"), sg("random", "_os"), s("system"))
    path = write(tmp_path, "getattr_random_os.pkl", p4(call(system, s("touch " + m))))
    r = assert_proven_and_dangerous(path, m)
    assert any(f["rule"] == "CKG-D001" for f in r["findings"]), describe(r)


# 7. Python-2 names CPython renames for protocol < 3 (_compat_pickle).
def test_python2_builtin_eval(tmp_path):
    m = marker_path()
    path = write(tmp_path, "builtin_eval.pkl", p2(call(g("__builtin__", "eval"), s(touch_code(m)))))
    assert_proven_and_dangerous(path, m)


def test_python2_module_rename(tmp_path):
    # dumbdbm is dbm.dumb under Python 3: open(path, 'c') creates path.dat/.dir.
    m = marker_path()
    path = write(tmp_path, "dumbdbm.pkl", p2(call(g("dumbdbm", "open"), s(m), s("c"))))
    try:
        assert_proven_and_dangerous(path, m + ".dir")
    finally:
        for leftover in glob.glob(m + "*"):
            os.remove(leftover)


def test_posix_system_protocol0(tmp_path):
    m = marker_path()
    path = write(tmp_path, "posix.pkl", ("cposix\nsystem\n(V%s\ntR." % ("touch " + m)).encode())
    assert_proven_and_dangerous(path, m)


# 8. Dunder names inside string arguments.
def test_dunder_string(tmp_path):
    m = marker_path()
    code = "__import__('os').system('touch %s')" % m
    forward = call(g("typing", "ForwardRef"), s(code))
    path = write(tmp_path, "dunder.pkl", p2(call(g("typing", "_eval_type"), forward, NONE, NONE)))
    assert_proven_and_dangerous(path, m, want=("CKG-F082",))


# 9. A nested pickle, base64- and zlib-encoded, handed to pickle.loads: the
# nested pickle is decoded and scanned (its own unknown call is found), and
# decides the verdict.
def test_encoded_nested_pickle(tmp_path):
    m = marker_path()
    inner = p2(call(g("uu", "encode"), s("/etc/hostname"), s(m)))
    text = base64.b64encode(zlib.compress(inner)).decode()
    decoded = call(g("zlib", "decompress"), call(g("base64", "b64decode"), s(text)))
    path = write(tmp_path, "nested_b64_zlib.pkl", p2(call(g("pickle", "loads"), decoded)))
    r = assert_proven_and_dangerous(path, m)
    # pickle.loads runs exactly the decoded literal (CKG-F062): the danger is
    # the nested pickle's own call, found in its entry.
    assert any(f["rule"] == "CKG-F062" for f in r["findings"]), describe(r)
    assert any(f["global"] == "uu.encode" and f["severity"] == "dangerous" and "pickle.loads@" in f["entry"]
               for f in r["findings"]), describe(r)


def test_codecs_encoded_nested_pickle(tmp_path):
    m = marker_path()
    inner = p2(call(g("uu", "encode"), s("/etc/hostname"), s(m)))
    text = base64.b64encode(inner).decode()
    decoded = call(g("codecs", "decode"), call(g("codecs", "encode"), s(text), s("ascii")), s("base64"))
    path = write(tmp_path, "nested_codecs.pkl", p2(call(g("pickle", "_loads"), decoded)))
    # codecs.encode is not a data callable: the chain is dangerous already;
    # the literal base64 path is covered above.
    assert_proven_and_dangerous(path, m)


# 10. A side file named for a loader: torch.load('side.pt'), numpy.load(...),
# pickle.load(open(...)).
@pytest.mark.parametrize("how", ["torch.load", "numpy.load", "pickle.load(open)"])
def test_side_file_loader(tmp_path, how):
    m = marker_path()
    write(tmp_path, "side.bin", p2(call(g("uu", "encode"), s("/etc/hostname"), s(m))))
    if how == "torch.load":
        body = call(g("torch", "load"), s("side.bin"))
    elif how == "numpy.load":
        body = call(g("numpy", "load"), s("side.bin"), NONE, b"\x88")
    else:
        body = call(g("pickle", "load"), call(g("builtins", "open"), s("side.bin"), s("rb")))
    path = write(tmp_path, "outer.pkl", p2(body))
    assert_proven_and_dangerous(path, m, cwd=str(tmp_path), want=("CKG-F061",))


# 11. Calls through instance attributes. The unpicklers look some methods up
# on the instance, not its class: BUILD calls inst.__setstate__, APPEND(S) on
# a non-list inst.append/extend, ADDITEMS on a non-set inst.add, and dict(x)
# or OrderedDict(x) call x.keys(). A record of a pure-data class
# (SimpleNamespace, argparse.Namespace, OrderedDict) takes any attributes
# from a dict BUILD, so a second use of it calls what the pickle put there.
EMPTY_DICT, SETITEM, BUILD, EMPTY_TUPLE, REDUCE = b"}", b"s", b"b", b")", b"R"


def with_attr(cls, name, value):  # cls(), then BUILD {name: value}
    return cls + EMPTY_TUPLE + REDUCE + EMPTY_DICT + s(name) + value + SETITEM + BUILD


def mbox_of(marker):  # functools.partial(mailbox.mbox, marker): calling it creates the file
    return call(g("functools", "partial"), g("mailbox", "mbox"), s(marker))


HIDDEN_CALLS = {
    # typing.get_type_hints(obj) eval()s the strings in obj.__annotations__.
    "setstate_eval": lambda m: with_attr(g("types", "SimpleNamespace"), "__setstate__", g("typing", "get_type_hints"))
    + with_attr(g("types", "SimpleNamespace"), "__annotations__", EMPTY_DICT + s("a") + s(touch_code(m)) + SETITEM)
    + BUILD,
    "setstate_ordered_dict": lambda m: with_attr(g("collections", "OrderedDict"), "__setstate__", g("mailbox", "mbox"))
    + s(m) + BUILD,
    "setstate_slots": lambda m: g("types", "SimpleNamespace") + EMPTY_TUPLE + REDUCE + NONE + EMPTY_DICT
    + s("__setstate__") + g("mailbox", "mbox") + SETITEM + b"\x86" + BUILD + s(m) + BUILD,
    "append": lambda m: with_attr(g("argparse", "Namespace"), "append", g("mailbox", "mbox")) + s(m) + b"a",
    "appends": lambda m: with_attr(g("types", "SimpleNamespace"), "append", g("mailbox", "mbox")) + b"(" + s(m) + b"e",
    "additems": lambda m: with_attr(g("types", "SimpleNamespace"), "add", g("mailbox", "mbox")) + b"(" + s(m) + b"\x90",
    "dict_keys": lambda m: g("builtins", "dict") + tup(with_attr(g("types", "SimpleNamespace"), "keys", mbox_of(m)))
    + REDUCE,
    "ordered_dict_keys": lambda m: g("collections", "OrderedDict")
    + tup(with_attr(g("types", "SimpleNamespace"), "keys", mbox_of(m))) + REDUCE,
}


@pytest.mark.parametrize("how", sorted(HIDDEN_CALLS))
def test_call_through_an_instance_attribute(tmp_path, how):
    m = marker_path()
    path = write(tmp_path, how + ".pkl", p4(HIDDEN_CALLS[how](m)))
    r = assert_proven_and_dangerous(path, m)
    assert {f["rule"] for f in r["findings"]} & {"CKG-F002", "CKG-F081"}, describe(r)


def test_storage_location_with_a_method(tmp_path):
    # torch's persistent_load calls location.startswith('cuda') (its CUDA
    # deserializer): a location that is a record whose startswith is a
    # partial(mailbox.mbox, marker) runs it in an ordinary torch.load.
    import zipfile
    m = marker_path()
    location = with_attr(g("types", "SimpleNamespace"), "startswith", mbox_of(m))
    pid = tup(s("storage"), g("torch", "FloatStorage"), s("0"), location, b"K\x01") + b"Q"
    tensor = call(g("torch._utils", "_rebuild_tensor_v2"), pid, b"K\x00", tup(b"K\x01"), tup(b"K\x01"), b"\x89",
                  call(g("collections", "OrderedDict")))
    path = tmp_path / "location.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", p2(EMPTY_DICT + s("w") + tensor + SETITEM))
        z.writestr("archive/data/0", struct.pack("<f", 1.0))
        z.writestr("archive/version", "3\n")
    r = assert_proven_and_dangerous(path, m, loaders=("torch.load",), want=("CKG-F002",))
    assert any("location" in f["message"] for f in r["findings"]), describe(r)


# torch's _rebuild_from_type_v2(func, new_type, args, state), for a new_type
# that is not Tensor, runs setattr(ret, k, v) for each of state.items(): the
# state's items() is looked up on the instance, and the rebuilt value's
# attributes (append, __setstate__...) are whatever the state holds.
def from_type(state):
    od = g("collections", "OrderedDict")
    return g("torch._tensor", "_rebuild_from_type_v2") + b"(" + od + od + b")" + state + b"tR"


REBUILT_ATTRIBUTES = {
    "state_items": lambda m: from_type(
        with_attr(g("collections", "OrderedDict"), "items", mbox_of(m)) + NONE + b"\x86"),
    "append": lambda m: from_type(EMPTY_DICT + s("append") + mbox_of(m) + SETITEM) + s("x") + b"a",
    "setstate_eval": lambda m: from_type(EMPTY_DICT + s("__setstate__") + g("typing", "get_type_hints") + SETITEM)
    + from_type(EMPTY_DICT + s("__annotations__") + EMPTY_DICT + s("a") + s(touch_code(m)) + SETITEM + SETITEM)
    + BUILD,
}


@pytest.mark.parametrize("how", sorted(REBUILT_ATTRIBUTES))
def test_attributes_set_by_rebuild_from_type(tmp_path, how):
    import zipfile
    m = marker_path()
    body = p2(REBUILT_ATTRIBUTES[how](m))
    path = tmp_path / (how + ".pt")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", body)
        z.writestr("archive/version", "3\n")
    r = assert_proven_and_dangerous(path, m, loaders=("torch.load",))
    assert {f["rule"] for f in r["findings"]} & {"CKG-F002", "CKG-F081"}, describe(r)
    plain = write(tmp_path, how + ".pkl", body)
    assert_proven_and_dangerous(plain, m, loaders=("pickle.loads", "pickle._loads"))


# Callable values: a bound method (getattr of a computed value) or a
# functools.partial object, handed to a callee that calls it, or set as an
# attribute that the loaders or a class's __setstate__ call.
def bound(path, method):  # getattr(PosixPath(path), method): a bound method
    return call(g("builtins", "getattr"), call(g("pathlib", "PosixPath"), s(path)), s(method))


def partial_with_dict(name, value):
    # partial(dict), then BUILD (dict, (), {}, {name: value}): the fourth
    # item of partial's state is its __dict__.
    return call(g("functools", "partial"), g("builtins", "dict")) + b"(" + g("builtins", "dict") + b")}}" + \
        s(name) + value + SETITEM + b"t" + BUILD


def simple_namespace_with(name, value):
    return with_attr(g("types", "SimpleNamespace"), name, value)


CALLABLE_VALUES = {
    # torch's _rebuild_from_type_v2(func, Tensor, args, state) returns func(*args).
    "rebuild_from_type_bound_method": lambda m: call(g("torch._tensor", "_rebuild_from_type_v2"), bound(m, "write_text"),
                                                     g("torch._tensor", "Tensor"), tup(s("x")), EMPTY_DICT),
    "rebuild_from_type_partial": lambda m: call(g("torch._tensor", "_rebuild_from_type_v2"), mbox_of(m),
                                                g("torch._tensor", "Tensor"), EMPTY_TUPLE, EMPTY_DICT),
    # numpy's RandomState pickling helper calls ctor(name).
    "randomstate_ctor": lambda m: call(g("numpy.random._pickle", "__randomstate_ctor"), s("x"), bound(m, "write_text")),
    # partial's __dict__: a later BUILD calls its __setstate__, dict(x) its keys.
    "partial_dict_setstate": lambda m: partial_with_dict("__setstate__", bound(m, "write_text")) + s("x") + BUILD,
    "partial_dict_keys": lambda m: call(g("builtins", "dict"), partial_with_dict("keys", mbox_of(m))),
    "rebuild_parameter_detach": lambda m: call(g("torch._utils", "_rebuild_parameter"),
                                               partial_with_dict("detach", mbox_of(m)), b"\x89",
                                               call(g("collections", "OrderedDict"))),
    # copyreg's helpers call methods of their arguments too.
    "reconstructor_keys": lambda m: call(g("copyreg", "_reconstructor"), g("collections", "OrderedDict"),
                                         g("builtins", "dict"), simple_namespace_with("keys", mbox_of(m))),
    "newobj_parameter_detach": lambda m: call(g("copyreg", "__newobj__"), g("torch.nn.parameter", "Parameter"),
                                              simple_namespace_with("detach", mbox_of(m))),
    # torch.optim.Optimizer.__setstate__ calls self._hook_for_profile() after
    # it set the state's attributes.
    "optimizer_setstate": lambda m: g("torch.optim", "SGD") + EMPTY_TUPLE + b"\x81" + EMPTY_DICT + b"(" +
    s("_hook_for_profile") + bound(m, "touch") + s("defaults") + EMPTY_DICT + s("param_groups") + b"]u" + BUILD,
    # The same class under the names torch writes (its defining module) and
    # as torch.optim.lr_scheduler imports it.
    **{"optimizer_setstate_" + module.replace(".", "_"): (lambda module, name: lambda m: g(module, name) + EMPTY_TUPLE +
       b"\x81" + EMPTY_DICT + b"(" + s("_hook_for_profile") + bound(m, "touch") + s("defaults") + EMPTY_DICT +
       s("state") + EMPTY_DICT + s("param_groups") + b"]u" + BUILD)(module, name)
       for module, name in (("torch.optim.optimizer", "Optimizer"), ("torch.optim.lr_scheduler", "Optimizer"),
                            ("torch.optim.lbfgs", "LBFGS"), ("torch.optim.rprop", "Rprop"))},
    # A defaultdict's factory runs for any missing key: UUID's and Random's
    # __setstate__ and numpy.dtype() look keys up in what they are handed.
    "defaultdict_uuid_state": lambda m: g("uuid", "UUID") + EMPTY_TUPLE + b"\x81" +
    call(g("collections", "defaultdict"), bound(m, "touch")) + BUILD,
    "defaultdict_random_state": lambda m: g("random", "Random") + EMPTY_TUPLE + b"\x81" +
    call(g("collections", "defaultdict"), bound(m, "touch")) + BUILD,
    "defaultdict_numpy_dtype": lambda m: call(g("numpy", "dtype"), call(g("collections", "defaultdict"),
                                                                        bound(m, "touch"))),
}


@pytest.mark.parametrize("how", sorted(CALLABLE_VALUES))
def test_callable_values_that_get_called(tmp_path, how):
    m = marker_path()
    path = write(tmp_path, how + ".pkl", p2(CALLABLE_VALUES[how](m)))
    r = assert_proven_and_dangerous(path, m, loaders=("pickle.loads", "pickle._loads", "torch.load"))
    assert {f["rule"] for f in r["findings"]} & {"CKG-F002", "CKG-F081"}, describe(r)
    assert not any(f["rule"] in ("CKG-P001", "CKG-F080") for f in r["findings"] if f["severity"] == "dangerous")


def test_benign_nested_defaultdicts_stay_safe(tmp_path):
    # defaultdict(partial(defaultdict, list)): the factory only builds data.
    import subprocess
    from ckg import PYTHON
    path = tmp_path / "nested.pkl"
    made = subprocess.run([PYTHON, "-c", "import collections, functools, pickle, sys\n"
                           "d = collections.defaultdict(functools.partial(collections.defaultdict, list))\n"
                           "d['a']['b'].append(1)\n"
                           "pickle.dump(d, open(sys.argv[1], 'wb'), protocol=2)\n", str(path)], capture_output=True)
    assert made.returncode == 0, made.stderr
    r = scan(path)
    assert r["verdict"] != "dangerous", describe(r)


def test_joblib_wrapper_whose_state_sets_read(tmp_path):
    # joblib's NumpyUnpickler calls array_wrapper.read(unpickler) right after
    # the BUILD, looked up on the instance: a state that sets `read` runs it.
    m = marker_path()
    read = call(g("functools", "partial"), bound(m, "touch"), b"J" + struct.pack("<i", 0o644))
    body = g("joblib.numpy_pickle", "NumpyArrayWrapper") + EMPTY_TUPLE + b"\x81" + EMPTY_DICT + b"(" + s("read") + \
        read + b"u" + BUILD
    path = write(tmp_path, "wrapper_read.pkl", p2(body))
    r = assert_proven_and_dangerous(path, m, loaders=("joblib.load",))
    assert "CKG-F002" in {f["rule"] for f in r["findings"]}, describe(r)
    # The loader, which reads joblib dumps as joblib.load does, refuses it.
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


def test_pure_python_unpickler_calls_items_of_a_state_with_attributes(tmp_path):
    # pickle._Unpickler's default BUILD runs state.items(), looked up on the
    # state: a partial whose __dict__ sets items (the C unpickler refuses it).
    m = marker_path()
    body = call(g("types", "SimpleNamespace")) + partial_with_dict("items", mbox_of(m)) + BUILD
    path = write(tmp_path, "state_items.pkl", p2(body))
    assert_proven_and_dangerous(path, m, loaders=("pickle._loads",), want=("CKG-F002",))


# 12. joblib's own ways to load another file or an old format.
def test_joblib_record_that_loads_a_side_file(tmp_path):
    # joblib's pre-0.10 NDArrayWrapper: at its BUILD, joblib.load reads the
    # file its `filename` names with numpy.load(allow_pickle=True).
    m = marker_path()
    write(tmp_path, "notes.txt", p2(call(g("uu", "encode"), s("/etc/hostname"), s(m))))
    state = EMPTY_DICT + b"(" + s("filename") + s("notes.txt") + s("subclass") + g("numpy", "ndarray") + \
        s("allow_mmap") + b"\x89u"
    path = write(tmp_path, "model.joblib",
                 p2(g("joblib.numpy_pickle_compat", "NDArrayWrapper") + EMPTY_TUPLE + b"\x81" + state + BUILD))
    assert_proven_and_dangerous(path, m, loaders=("joblib.load",), want=("CKG-D069",))


def test_joblib_zf_format(tmp_path):
    # joblib.load still reads its pre-0.10 format: "ZF", the length in hex
    # padded to 19 bytes, zlib data.
    m = marker_path()
    inner = p2(call(g("uu", "encode"), s("/etc/hostname"), s(m)))
    path = write(tmp_path, "old.pkl", b"ZF" + hex(len(inner)).encode().ljust(19) + zlib.compress(inner))
    assert_proven_and_dangerous(path, m, loaders=("joblib.load",), want=("CKG-F080",))


# 13. Two names torch's reader takes for one: miniz finds 'data.pkl' without
# regard to case, so 'archive/DATA.PKL' written first is the one it runs.
def test_data_pickle_named_in_another_case(tmp_path):
    import zipfile
    m = marker_path()
    path = tmp_path / "case.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/DATA.PKL", p2(call(g("uu", "encode"), s("/etc/hostname"), s(m))))
        z.writestr("archive/data.pkl", p2(EMPTY_DICT))
        z.writestr("archive/version", "3\n")
    assert_proven_and_dangerous(path, m, loaders=("torch.load",))
    out = run_cli("inspect", str(path))
    assert out.returncode == 2, out.stdout
    assert b"zip.case_duplicate_name" in out.stderr or b"uu.encode" in out.stderr, out.stderr


def test_npz_members_that_differ_only_in_case_load(tmp_path):
    # numpy.load reads an .npz with Python's zipfile, which tells 'a.npy'
    # from 'A.npy': only torch's reader takes them for one name.
    import numpy as np
    path = tmp_path / "cased.npz"
    np.savez(path, a=np.arange(3), A=np.ones(2))
    assert sorted(np.load(path).files) == ["A", "a"]
    out = run_cli("inspect", "--json", str(path))
    assert out.returncode == 0, out.stderr
    assert sorted(json.loads(out.stdout)["files"][0]["tensors"]) == ["A", "a"]
    assert scan(path)["verdict"] == "safe"


def test_exact_repeat_inside_names_that_differ_in_case_is_still_a_duplicate(tmp_path):
    # 'a.npy' twice beside 'A.npy': the case-only pair is torch's concern,
    # the exact repeat every reader's (zipfile's namelist has it twice).
    import io
    import warnings
    import zipfile
    import numpy as np
    buf = io.BytesIO()
    np.save(buf, np.arange(3))
    path = tmp_path / "repeat.npz"
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as z:
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it writes
        for name in ("a.npy", "A.npy", "a.npy"):
            z.writestr(name, buf.getvalue())
    out = run_cli("inspect", str(path))
    assert out.returncode == 2, out.stdout
    assert b"zip.duplicate_name" in out.stderr, out.stderr


# 14. TorchScript that touches files as it loads: torch.load of a TorchScript
# archive (torch < 2.6, any arguments) hands it to torch.jit.load, which runs
# the module's __setstate__; torch.from_file creates the file it names.
# A scripted module whose __setstate__ runs STATEMENT (TorchScript), saved
# with torch.jit.save to argv[1] with argv[2] as its path attribute.
TORCHSCRIPT_SETSTATE = r"""
import sys, torch
from typing import Tuple
class M(torch.nn.Module):
    def __init__(self, p: str):
        super().__init__()
        self.p = p
    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.p, self.training)
    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]):
        self.p = state[0]
        self.training = state[1]
        STATEMENT
    def forward(self, x):
        return x
torch.jit.save(torch.jit.script(M(sys.argv[2])), sys.argv[1])
"""
# used, so that TorchScript keeps the call
TORCHSCRIPT_FROM_FILE = TORCHSCRIPT_SETSTATE.replace(
    "STATEMENT", "self.training = bool(torch.from_file(self.p, True, 4).numel() > 0) and state[1]")


def test_torchscript_that_creates_a_file_as_it_loads(tmp_path):
    m = marker_path()
    path = scripted(tmp_path, TORCHSCRIPT_FROM_FILE, "scripted.pt", m)
    r = assert_proven_and_dangerous(path, m, loaders=("torch.load",), want=("CKG-F031",))
    assert any(f["rule"] == "CKG-F030" for f in r["findings"]), describe(r)
    assert_loader_refuses(path, b"torchscript.file_builtin")


# 14b. TorchScript spellings of torch.save that no byte string shows: torch's
# lexer makes '.' a token of its own and skips blanks, comments and
# backslash-newlines; a name assigned `torch` or getattr reach it too. The
# archive is what torch.jit.save writes, with the call in __setstate__.
TS_CALLS = {
    "space": 'torch . save(torch.zeros([1]), "{m}")',
    "space2": 'torch. save(torch.zeros([1]), "{m}")',
    "continuation": 'torch.\\\n      save(torch.zeros([1]), "{m}")',
    "ops": 'ops.aten . save(torch.zeros([1]), "{m}")',
    "alias": 't = torch\n    (t).save(torch.zeros([1]), "{m}")',
    "getattr": 'getattr(torch, "sa" "ve")(torch.zeros([1]), "{m}")',
}


def torchscript_archive(tmp_path, name, call):
    import zipfile
    code = """class M(Module):
  __parameters__ = []
  __buffers__ = []
  training : bool
  _is_full_backward_hook : Optional[bool]
  x : int
  def __getstate__(self: __torch__.M) -> Tuple[int, bool]:
    x = self.x
    training = self.training
    return (x, training)
  def __setstate__(self: __torch__.M,
    s: Tuple[int, bool]) -> NoneType:
    self.x = (s)[0]
    self.training = (s)[1]
    CALL
    return None
""".replace("CALL", call)
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("m/data.pkl", b"\x80\x02c__torch__\nM\nq\x00)\x81K\x01\x88\x86q\x01bq\x02.")
        z.writestr("m/code/__torch__.py", code)
        z.writestr("m/constants.pkl", b"\x80\x02).")
        z.writestr("m/version", b"3\n")
    return path


@pytest.mark.parametrize("how", sorted(TS_CALLS))
def test_torchscript_save_spelled_as_torch_lexes_it(tmp_path, how):
    m = marker_path()
    path = torchscript_archive(tmp_path, how + ".pt", TS_CALLS[how].format(m=m))
    assert_proven_and_dangerous(path, m, loaders=("torch.load", "torch.jit.load"), want=("CKG-F031",))
    assert_loader_refuses(path, b"torchscript.file_builtin")


# 14c. A mobile (lite-interpreter) module with code/ removed: the lite
# interpreter runs __setstate__ from bytecode.pkl, whose operator table names
# aten::save. argv[1]: the file; argv[2]: the module's path attribute. (Its
# own copy of the module's source, not TORCHSCRIPT_SETSTATE's: the flatbuffer
# polyglot below places the module where its root offset points, which
# depends on this exact text.)
MOBILE_SETSTATE = r"""
import io, sys, zipfile, torch
from typing import Tuple
class M(torch.nn.Module):
    def __init__(self, p: str):
        super().__init__()
        self.p = p
    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.p, self.training)
    @torch.jit.export
    def __setstate__(self, s: Tuple[str, bool]):
        self.p = s[0]
        self.training = s[1]
        torch.save(torch.zeros(1), self.p)
    def forward(self, x):
        return x
m = torch.jit.script(M(sys.argv[2]))
if len(sys.argv) > 3 and sys.argv[3] == "flatbuffer":
    torch.jit.save_jit_module_to_flatbuffer(m, sys.argv[1])
    sys.exit(0)
zin = zipfile.ZipFile(io.BytesIO(m._save_to_buffer_for_lite_interpreter()))
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_STORED) as z:
    for n in zin.namelist():
        if "/code/" not in n and not n.endswith("/constants.pkl"):
            z.writestr(n, zin.read(n))
"""


def test_mobile_module_without_code(tmp_path):
    m = marker_path()
    path = scripted(tmp_path, MOBILE_SETSTATE, "nocode.ptl", m)
    r = assert_proven_and_dangerous(path, m, loaders=("_load_for_lite_interpreter",), want=("CKG-F031",))
    assert any(f["rule"] == "CKG-F031" and "bytecode.pkl" in f.get("entry", "") for f in r["findings"]), describe(r)
    assert_loader_refuses(path, b"torchscript.file_builtin")


# 14d. torch.jit.load and _load_for_lite_interpreter read any file with "PTMF"
# at bytes 4..7 as a TorchScript flatbuffer module, whatever else it is.
def flatbuffer_module(tmp_path, m):
    # The polyglots below place the module where bytes 0..3, read as its
    # root offset, point; that needs the root table 64-aligned there, and the
    # builder's padding (so the root offset) moves with the length of the
    # module's strings. The marker path is spelled with extra slashes (the
    # same file) until the module fits.
    path = tmp_path / "module.ff"
    script = write(tmp_path, "make_flatbuffer.py", MOBILE_SETSTATE.encode())
    import subprocess
    from ckg import PYTHON
    for extra in range(16):
        spelled = m.replace("/tmp/", "/tmp/" + "/" * extra, 1)
        made = subprocess.run([PYTHON, str(script), str(path), spelled, "flatbuffer"], capture_output=True, timeout=300)
        assert made.returncode == 0, made.stderr
        data = path.read_bytes()
        assert data[4:8] == b"PTMF"
        at = struct.unpack("<I", b"(C\x05\x00")[0] - struct.unpack("<I", data[:4])[0]
        if at % 64 == 0 and at > 13:
            return data
    raise AssertionError("no spelling of the marker path gives a 64-aligned root")


def pickle_flatbuffer(fb):
    # Bytes 0..3 are both the flatbuffer's root offset and the pickle's
    # MARK, SHORT_BINBYTES of 5 bytes (b"\0PTMF"); BINBYTES then covers zero
    # padding and the flatbuffer, placed where the root offset points
    # (64-aligned, so that its own offsets hold); LIST, STOP.
    root = struct.unpack("<I", fb[:4])[0]
    at = struct.unpack("<I", b"(C\x05\x00")[0] - root
    assert at % 64 == 0 and at > 13
    body = bytes(at - 13) + fb
    return b"(C\x05\x00PTMF" + b"B" + struct.pack("<I", len(body)) + body + b"l."


def legacy_flatbuffer(fb):
    # A legacy torch.save of a uint8 tensor whose storage bytes hold the
    # flatbuffer, its first pickle starting MARK SHORT_BINBYTES(b"\0PTMF")
    # POP_MARK before the magic number: torch.load returns the tensor.
    import io
    import torch
    root = struct.unpack("<I", fb[:4])[0]
    at = struct.unpack("<I", b"(C\x05\x00")[0] - root
    magic = 0x1950A86A20F9469CFC6C
    first = b"(C\x05\x00PTMF1\x8a\x0a" + magic.to_bytes(10, "little") + b"."

    def build(n):
        s = io.BytesIO()
        torch.save(torch.zeros(n, dtype=torch.uint8), s, _use_new_zipfile_serialization=False)
        raw = s.getvalue()
        assert raw[:4] == b"\x80\x02\x8a\x0a" and raw[14:15] == b"."
        return first + raw[15:]
    probe = build(len(fb) + at)
    data_start = len(probe) - (len(fb) + at)
    n = at - data_start + len(fb)
    blob = bytearray(build(n))
    blob[at:at + len(fb)] = fb
    return bytes(blob)


def test_torchscript_flatbuffer_module(tmp_path):
    m = marker_path()
    path = write(tmp_path, "plain.ptl", flatbuffer_module(tmp_path, m))
    r = assert_proven_and_dangerous(path, m, loaders=("torch.jit.load", "_load_for_lite_interpreter"),
                                    want=("CKG-F031",))
    assert r["format"] == "torchscript-flatbuffer", describe(r)
    assert any(f["rule"] == "CKG-F030" for f in r["findings"]), describe(r)
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout
    assert b"flatbuffer" in out.stderr, out.stderr


@pytest.mark.parametrize("how", ["pickle", "legacy"])
def test_flatbuffer_polyglot(tmp_path, how):
    m = marker_path()
    fb = flatbuffer_module(tmp_path, m)
    path = write(tmp_path, "poly." + how, pickle_flatbuffer(fb) if how == "pickle" else legacy_flatbuffer(fb))
    r = assert_proven_and_dangerous(path, m, loaders=("torch.jit.load",), want=("CKG-F011", "CKG-F031"))
    assert any("polyglot.torchscript_flatbuffer" in f["message"] for f in r["findings"]), describe(r)
    out = run_cli("inspect", "--no-digest", str(path))  # (the legacy file's first anomaly is legacy.bad_magic)
    assert out.returncode == 2, out.stdout
    assert b"polyglot.torchscript_flatbuffer" in out.stderr or b"more; see" in out.stderr, out.stderr


# 14e. torch.load(weights_only=True) of torch < 2.0 hands a TorchScript
# archive to torch.jit.load, which runs its code: a weights-only load refuses
# every TorchScript archive, hostile or not.
def test_weights_only_refuses_torchscript(tmp_path):
    m = marker_path()
    path = torchscript_archive(tmp_path, "wo.pt", TS_CALLS["space"].format(m=m))
    assert load_runs_payload(path, m, "torch.load(weights_only)"), "torch.load(weights_only=True) did not run it"
    out = run_cli("inspect", "--no-digest", "--weights-only", "--allow-anomalies", str(path))
    assert out.returncode == 2, out.stdout
    assert b"weights-only" in out.stderr and b"torch.jit.load" in out.stderr, out.stderr
    benign = scripted(tmp_path, BENIGN_SCRIPTED, "benign.pt", m)
    out = run_cli("inspect", "--no-digest", "--weights-only", str(benign))
    assert out.returncode == 2, out.stdout
    assert b"weights-only" in out.stderr, out.stderr
    assert run_cli("inspect", "--no-digest", str(benign)).returncode == 0


# Benign scripted modules: methods named save (called on self, a submodule,
# a module list's item and a scripted class's object, as torch.jit.save
# prints the calls), saved by torch.jit.save, _save_for_lite_interpreter and
# as a flatbuffer. TorchScript runs on load (CKG-F030), but nothing here
# touches files.
BENIGN_SCRIPTED = r"""
import io, sys, torch
class Sub(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))
    @torch.jit.export
    def save(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w
    def forward(self, x):
        return self.save(x)
class Holder:
    def __init__(self, v: int):
        self.v = v
    def save(self, k: int) -> int:
        return self.v + k
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.sub = Sub()
        self.seq = torch.nn.Sequential(Sub(), Sub())
        self.lst = torch.nn.ModuleList([Sub(), Sub()])
    @torch.jit.export
    def save(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2
    def forward(self, x):
        y = self.save(x) + self.sub.save(x)
        for m in self.lst:
            y = y + m.save(x)
        return self.seq(y + self.seq[0].save(x))
class WithObject(M):  # a scripted class's object (the mobile formats have none)
    def forward(self, x):
        h = Holder(3)
        return self.save(x) + h.save(1)
kind = sys.argv[3] if len(sys.argv) > 3 else "jit"
m = torch.jit.script(WithObject() if kind == "jit" else M())
if kind == "jit":
    # (torch.jit.save(m, path) would call the module's own save method)
    buf = io.BytesIO()
    torch.jit.save(m, buf)
    open(sys.argv[1], "wb").write(buf.getvalue())
elif kind == "lite":
    m._save_for_lite_interpreter(sys.argv[1])
else:
    torch.jit.save_jit_module_to_flatbuffer(m, sys.argv[1])
"""


@pytest.mark.parametrize("kind", ["jit", "lite", "flatbuffer"])
def test_benign_scripted_modules_are_not_dangerous(tmp_path, kind):
    import subprocess
    from ckg import PYTHON
    path = tmp_path / ("benign." + kind)
    script = write(tmp_path, "make_benign.py", BENIGN_SCRIPTED.encode())
    made = subprocess.run([PYTHON, str(script), str(path), "unused", kind], capture_output=True, timeout=300)
    assert made.returncode == 0, made.stderr
    r = scan(path)
    assert r["verdict"] == "suspicious", describe(r)
    assert {f["rule"] for f in r["findings"]} == {"CKG-F030"}, describe(r)


# 15. What torch._tensor._rebuild_from_type_v2(func, Tensor, args, state)
# calls: func(*args), judged as the pickle's own call. getattr reaches the
# builtins module through a builtin function's __self__, then exec; or a
# bound method of a path, called by a second rebuild. Only globals known as
# data are named.
def rebuild_from_type(func, args):
    return call(g("torch._tensor", "_rebuild_from_type_v2"), func, g("torch._tensor", "Tensor"), args, NONE)


def test_rebuild_from_type_calls_getattr_through_to_exec(tmp_path):
    m = marker_path()
    getattr_ = g("builtins", "getattr")
    builtins_module = rebuild_from_type(getattr_, tup(getattr_, s("__self__")))
    exec_ = rebuild_from_type(getattr_, tup(builtins_module, s("exec")))
    path = write(tmp_path, "rft_exec.pkl", p2(rebuild_from_type(exec_, tup(s(touch_code(m))))))
    assert_proven_and_dangerous(path, m, loaders=("pickle.loads", "pickle._loads", "torch.load"))


def test_rebuild_from_type_calls_a_bound_method(tmp_path):
    m = marker_path()
    touch = rebuild_from_type(g("builtins", "getattr"), tup(call(g("pathlib", "PosixPath"), s(m)), s("touch")))
    path = write(tmp_path, "rft_bound.pkl", p2(rebuild_from_type(touch, EMPTY_TUPLE)))
    assert_proven_and_dangerous(path, m, loaders=("pickle.loads", "pickle._loads", "torch.load"),
                                want=("CKG-F002",))


# 16. A BUILD state made by a call (dict(...), tuple(...)) gives attributes as
# the literal would: torch calls storage.untyped() of a SimpleNamespace
# storage, Optimizer.__setstate__ calls self._hook_for_profile(), numpy's bit
# generator calls state.get(); and an instance of an unlisted class inside a
# list handed to OrderedDict() is unpacked (its __getitem__ calls its fn).
def dict_of(*kv):
    return EMPTY_DICT + b"(" + b"".join(kv) + b"u"


def list_of(*items):
    return b"](" + b"".join(items) + b"e"


def namespace_storage(state):
    ns = call(g("types", "SimpleNamespace")) + state + BUILD
    return call(g("torch._utils", "_rebuild_tensor_v2"), ns, b"K\x00", tup(b"K\x00"), tup(b"K\x01"), b"\x89",
                call(g("collections", "OrderedDict")))


COMPUTED_STATES = {
    "dict_state_storage": lambda m: namespace_storage(
        call(g("builtins", "dict"), dict_of(s("untyped"), bound(m, "touch"), s("dtype"), g("torch", "float32")))),
    "tuple_slot_state_storage": lambda m: namespace_storage(
        call(g("builtins", "tuple"),
             list_of(NONE, dict_of(s("untyped"), bound(m, "touch"), s("dtype"), g("torch", "float32"))))),
    "optimizer_dict_state": lambda m: call(g("copyreg", "__newobj__"), g("torch.optim", "SGD")) + call(
        g("builtins", "dict"),
        dict_of(s("_hook_for_profile"), bound(m, "touch"), s("defaults"), EMPTY_DICT, s("param_groups"), b"]")) + BUILD,
    "bit_generator_state_get": lambda m: g("numpy.random._mt19937", "MT19937") + EMPTY_TUPLE + b"\x81" + call(
        g("collections", "OrderedDict")) + call(g("builtins", "dict"), dict_of(s("get"), bound(m, "write_text"))) +
    BUILD + BUILD,
    "object_in_a_list_unpacked": lambda m: call(g("collections", "OrderedDict"), list_of(
        g("torch.utils.data.datapipes.map.callable", "MapperMapDataPipe") + EMPTY_TUPLE + b"\x81" +
        dict_of(s("datapipe"), list_of(b"K\x07"), s("fn"), bound(m, "touch")) + BUILD)),
}


@pytest.mark.parametrize("how", sorted(COMPUTED_STATES))
def test_computed_states_and_objects_in_containers(tmp_path, how):
    m = marker_path()
    path = write(tmp_path, how + ".pkl", p2(COMPUTED_STATES[how](m)))
    r = assert_proven_and_dangerous(path, m, loaders=("pickle.loads", "pickle._loads"))
    assert {f["rule"] for f in r["findings"]} & {"CKG-F002", "CKG-F081"}, describe(r)


# 17. What stops one unpickler must not stop the scan when another reads on:
# limits of the scanner's own (a LONG4 past max_long_len, a text line past
# max_line_len, MARKs nested past the nesting budget), lines only the
# pure-Python unpickler (joblib's, dill's) reads (float() and int() take
# underscores and spaces; a PUT key past ssize_t), and a thousand harmless
# findings before the dangerous one.
def os_touch(m):
    return call(g("os", "system"), s("touch " + m))


def harmless_globals(n):
    # Real, importable names that the scan lists as unknown (suspicious),
    # each referenced once (GLOBAL, POP): the unpicklers import them all.
    import importlib
    import types
    named_dangerous = {"torch.from_file", "torch.save", "torch.trace", "torch.load"}
    out = []
    for module in ("torch", "torch.nn.functional", "math", "numpy", "torch.nn"):
        mod = importlib.import_module(module)
        for name in sorted(dir(mod)):
            if name.startswith("_") or isinstance(getattr(mod, name), types.ModuleType):
                continue
            if "%s.%s" % (module, name) not in named_dangerous:
                out.append(g(module, name) + b"0")
    assert len(out) >= n
    return b"".join(out[:n])


PAST_A_STOP = {
    "long4_past_max_long_len": (lambda m: b"\x8b" + struct.pack("<i", 70000) + b"\x01" * 70000 + b"0" + os_touch(m),
                                ("pickle.loads", "pickle._loads")),
    "unicode_line_past_max_line_len": (lambda m: b"V" + b"a" * ((1 << 20) + 10) + b"\n0" + os_touch(m),
                                       ("pickle.loads", "pickle._loads")),
    "marks_past_the_nesting_budget": (lambda m: b"(" * 10001 + os_touch(m), ("pickle.loads", "pickle._loads")),
    "float_with_underscores": (lambda m: b"F1_0.5\n0" + os_touch(m), ("pickle._loads",)),
    "put_key_past_ssize_t": (lambda m: b"Np9999999999999999999\n0" + os_touch(m), ("pickle._loads",)),
    "findings_past_the_cap": (lambda m: harmless_globals(1300) + os_touch(m), ("pickle.loads",)),
}


@pytest.mark.parametrize("how", sorted(PAST_A_STOP))
def test_payload_after_what_stops_one_reader(tmp_path, how):
    m = marker_path()
    make, loaders = PAST_A_STOP[how]
    path = write(tmp_path, how + ".pkl", p2(make(m)))
    assert_proven_and_dangerous(path, m, loaders=loaders)


def test_pure_python_float_line_first(tmp_path):
    # The stream's first opcode is one only pickle._Unpickler reads: still a pickle.
    m = marker_path()
    path = write(tmp_path, "float_first.pkl", b"F1_0.5\n0" + os_touch(m) + b".")
    assert_proven_and_dangerous(path, m, loaders=("pickle._loads",))


# 18. A functools.partial made by copyreg.__newobj__(partial, f) is a
# callable value as partial(f) is; its BUILD sets its function and __dict__.
def hidden_partial(func, dct=NONE):
    return call(g("copyreg", "__newobj__"), g("functools", "partial"), g("builtins", "dict")) + \
        tup(func, EMPTY_TUPLE, NONE, dct) + BUILD


NEWOBJ_PARTIALS = {
    "randomstate_ctor": lambda m: call(g("numpy.random._pickle", "__randomstate_ctor"), s("MT19937"),
                                       hidden_partial(bound(m, "write_text"))),
    "storage_untyped": lambda m: call(
        g("torch._utils", "_rebuild_tensor_v2"),
        hidden_partial(g("builtins", "dict"), dict_of(s("untyped"), bound(m, "touch"), s("dtype"), g("torch", "float32"))),
        b"K\x00", tup(b"K\x01"), tup(b"K\x01"), b"\x89", call(g("collections", "OrderedDict"))),
}


@pytest.mark.parametrize("how", sorted(NEWOBJ_PARTIALS))
def test_partial_made_by_newobj(tmp_path, how):
    m = marker_path()
    path = write(tmp_path, how + ".pkl", p2(NEWOBJ_PARTIALS[how](m)))
    assert_proven_and_dangerous(path, m, loaders=("pickle.loads", "pickle._loads"))


# 19. joblib's reading of its inline arrays: the wrapper named through an
# escaped UNICODE string, no padding when numpy_array_alignment_bytes is
# None; the C unpickler's reading of the same bytes is one harmless bytes
# literal, so inspect must refuse what joblib's reading holds.
def joblib_stream(m, escaped=False, alignment_none=False, state_form="dict"):
    f8 = call(g("numpy", "dtype"), s("f8"), b"\x89", b"\x88") + \
        tup(b"K\x03", s("<"), NONE, NONE, NONE, b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", b"K\x00") + BUILD
    wrapper = b"Vjoblib.numpy_pickle\nVNumpy\\u0041rrayWrapper\n\x93" if escaped else \
        g("joblib.numpy_pickle", "NumpyArrayWrapper")
    items = [s("subclass"), g("numpy", "ndarray"), s("shape"), tup(b"K\x01"), s("order"), s("C"), s("dtype"), f8,
             s("allow_mmap"), b"\x89"]
    if alignment_none:
        items += [s("numpy_array_alignment_bytes"), NONE]
    payload = call(g("posix", "system"), b"\x8c" + bytes([len("touch " + m)]) + ("touch " + m).encode())
    if alignment_none:
        # A view that read a padding byte here (the array's first, 'B' = 66)
        # would skip 1 + 66 + 8 bytes and land on the final STOP: the payload
        # is padded to exactly 67 bytes (a short marker keeps it that short).
        pad = 67 - len(payload) - 3
        assert 0 <= pad < 256
        payload = b"\x8c" + bytes([pad]) + b"a" * pad + b"0" + payload
    array = b"B" + struct.pack("<I", 3 + len(payload)) + b"\0\0\0"  # 8 bytes: joblib's array, the C view's bytes
    state = dict_of(*items)
    if state_form == "slots":  # (None, slots state): pickle's BUILD setattr()s the slots
        state = tup(NONE, state)
    elif state_form == "dict_call":
        state = call(g("builtins", "dict"), state)
    return proto(4) + wrapper + EMPTY_TUPLE + b"\x81" + state + BUILD + array + payload + b"."


@pytest.mark.parametrize("how", ["escaped_wrapper_name", "alignment_none", "slots_state", "dict_call_state"])
def test_joblib_inline_array_readings(tmp_path, how):
    import uuid
    m = "/tmp/ckptguard-pwned-%s" % uuid.uuid4().hex[:8]
    form = {"slots_state": "slots", "dict_call_state": "dict_call"}.get(how, "dict")
    path = write(tmp_path, how + ".joblib",
                 joblib_stream(m, escaped=how == "escaped_wrapper_name", alignment_none=how == "alignment_none",
                               state_form=form))
    assert_proven_and_dangerous(path, m, loaders=("joblib.load",))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


def test_lzma_alone_with_dictionary_size_zero(tmp_path):
    # liblzma's check of the dictionary size (2^n or 2^n + 2^(n-1)) wraps
    # round for 0 and takes it: lzma.open and joblib.load read the stream.
    import lzma
    m = marker_path()
    data = bytearray(lzma.compress(p2(os_touch(m)), format=lzma.FORMAT_ALONE,
                                   filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 4096}]))
    data[1:5] = b"\0\0\0\0"
    path = write(tmp_path, "dict0.lzma", bytes(data))
    assert_proven_and_dangerous(path, m, loaders=("joblib.load",))


def test_lzma_alone_stream_right_after_an_xz_stream(tmp_path):
    # LZMAFile starts its next decoder where the xz stream ended: zeros there
    # (properties 0) begin an LZMA-alone stream, not padding.
    import lzma
    m = marker_path()
    head = proto(2) + b"]q\x00(X\x07\x00\x00\x00weightsK\x01e0"
    tail = os_touch(m) + b"."
    data = lzma.compress(head, format=lzma.FORMAT_XZ) + lzma.compress(
        tail, format=lzma.FORMAT_ALONE, filters=[{"id": lzma.FILTER_LZMA1, "lc": 0, "lp": 0, "pb": 0, "dict_size": 4096}])
    path = write(tmp_path, "xz_then_alone.xz", data)
    assert_proven_and_dangerous(path, m, loaders=("joblib.load",))


# 20. TorchScript code that writes a file with torch.save, and code files
# whose folder or suffix is in another case (torch's zip reader finds names
# without regard to case).
TORCHSCRIPT_SAVE = TORCHSCRIPT_SETSTATE.replace("STATEMENT", "torch.save(torch.zeros(1), self.p)")


def scripted(tmp_path, source, name, m):
    # Runs `source` (torch.jit.script reads it from a file) to save the
    # module as `name`; the marker it would write is the load's, not this.
    import subprocess
    from ckg import PYTHON
    path = tmp_path / name
    script = write(tmp_path, "make_" + name + ".py", source.encode())
    made = subprocess.run([PYTHON, str(script), str(path), m], capture_output=True, timeout=300)
    assert made.returncode == 0, made.stderr
    if os.path.exists(m):
        os.remove(m)
    return path


def rename_members(path, rename):
    import zipfile
    with zipfile.ZipFile(path) as z:
        members = [(i, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w") as z:
        for info, data in members:
            info.filename = rename(info.filename)
            z.writestr(info, data)


@pytest.mark.parametrize("how", ["as_saved", "code_folder_upper", "suffix_upper"])
def test_torchscript_that_writes_a_file_with_torch_save(tmp_path, how):
    m = marker_path()
    path = scripted(tmp_path, TORCHSCRIPT_SAVE, how + ".pt", m)
    if how == "code_folder_upper":
        rename_members(path, lambda n: n.replace("/code/", "/CODE/"))
    elif how == "suffix_upper":
        rename_members(path, lambda n: n[:-3] + ".PY" if n.endswith(".py") else n)
    assert_proven_and_dangerous(path, m, loaders=("torch.load",), want=("CKG-F031",))
    assert_loader_refuses(path, b"torchscript.file_builtin")


def assert_loader_refuses(path, why):
    # The loader reads weights without running code, but refuses an archive
    # whose loading by torch would touch files (the container's anomaly).
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout
    assert why in out.stderr, out.stderr


# --- frames the C unpickler reads whole ------------------------------------------
# The C unpickler reads a frame with file.read() when it is 128 KiB or more,
# longer than what the file's peek() hands out, or the file has no peek(); a
# STOP inside it then leaves the file at the frame's end, and the next load
# starts there, not right after the STOP (a frame it peeked leaves it so).
def legacy_frame_read_whole(marker):
    # torch's legacy format: magic number, protocol, sys_info pickles, then the
    # object. Pickle 1's frame is small (peeked: the next pickle starts right
    # after its STOP); pickle 2's is 9,000 bytes (read whole: the next starts at
    # its end). The readings that continue elsewhere swallow the payload in a
    # BINBYTES operand.
    magic = b"\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little")
    big, small_end = 9000, 60
    payload = b"cposix\nsystem\n(V touch " + marker.encode() + b"\ntR." + b"}." + b"]."
    payload_at = 35 + big
    swallow_end = payload_at + len(payload) + 16
    buf = bytearray(swallow_end + 1)
    buf[0:11] = b"\x80\x04\x95" + struct.pack("<Q", small_end - 11)
    buf[11:24] = magic + b"."
    buf[24:35] = b"\x80\x04\x95" + struct.pack("<Q", big)
    buf[35:39] = b"M\xe9\x03."
    buf[39:46] = b"\x80\x03B" + struct.pack("<I", swallow_end - 46)
    buf[small_end:small_end + 7] = b"\x80\x03B" + struct.pack("<I", swallow_end - (small_end + 7))
    buf[payload_at:payload_at + len(payload)] = payload
    buf[swallow_end] = ord(".")
    return bytes(buf) + b"}." + b"]."


def npy_arrays_frame_read_whole(marker):
    # Two object arrays: the first's pickle has a small frame whose last op
    # is a 9,000-byte FRAME with [None] and STOP early in it; numpy.load
    # leaves the file at the big frame's end, where the second array (the
    # payload) starts. Read right after the STOP, the rest is a BINBYTES.
    def header():
        text = b"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
        text += b" " * (64 - 10 - len(text) - 1) + b"\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    big = 9000
    second = header() + b"\x80\x02cposix\nsystem\n(V touch " + marker.encode() + b"\ntR."
    big_header = b"\x95" + struct.pack("<Q", big)
    small = b"\x80\x04\x95" + struct.pack("<Q", len(big_header) + 1) + big_header
    body = b"]Na."
    left = big - len(body)
    swallow = b"\x80\x03B" + struct.pack("<I", left - 7 + len(second))
    first = small + body + swallow + b"\0" * (left - len(swallow))
    return header() + first + second + b"."


@pytest.mark.parametrize("how", ["torch_legacy", "npy_appended_arrays"])
def test_pickle_after_a_frame_read_whole(tmp_path, how):
    m = marker_path()
    if how == "torch_legacy":
        path = write(tmp_path, "legacy.pt", legacy_frame_read_whole(m))
        r = assert_proven_and_dangerous(path, m, loaders=("torch.load",), want=("CKG-D001",))
    else:
        path = write(tmp_path, "arrays.npy", npy_arrays_frame_read_whole(m))
        r = assert_proven_and_dangerous(path, m, loaders=("numpy.load*",), want=("CKG-D001",))
    assert any("read the frame whole" in f["message"] for f in r["findings"]), describe(r)
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# --- opcodes that split a frame the C unpickler read whole -------------------------
# Reading a frame whole, the C unpickler holds only that frame: an operand that
# runs past its end makes it drop the frame's rest and read the operand from
# after the frame; a FRAME begun inside it leaves the file at the outer frame's
# end. pickle.loads reads such bytes straight on: the readings part there.
def frame_straddle_pickle(marker, frame_len):
    n, r = 10, 2  # a BINUNICODE of n bytes with r of them in the frame
    code = touch_code(marker).encode()
    payload = b"0" + g("builtins", "exec") + b"(X" + struct.pack("<I", len(code)) + code + b"tR."
    k = len(payload) + 4
    tail = b"X" + struct.pack("<I", n) + b"zz"
    fill = frame_len - len(tail) - 6
    frame = b(b"\0" * fill) + b"0" + tail
    # After the frame: n - r bytes both readings share, then what the straight
    # reading takes for a SHORT_BINBYTES over the payload the other one runs.
    after = b"A" * (n - r) + b"C" + bytes([k]) + payload + b"\0" * (k - len(payload)) + b"0."
    return proto(4) + b"\x95" + struct.pack("<Q", frame_len) + frame + after


def torch_zip_of(pickle_bytes):
    import io
    import zipfile
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def legacy_nested_frames(marker):
    # torch's legacy chain, its first pickle PROTO 2, FRAME(outer, 140,000
    # bytes), FRAME(inner: the magic number, STOP). Read straight on, the next
    # pickles follow the inner STOP (1001, {}, a BINBYTES over the rest, []);
    # torch's C unpickler read the outer frame whole and goes on at its end:
    # 1001, {}, the payload, [].
    magic = b"\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little") + b"."
    outer_len = 140000
    end = 11 + outer_len
    chain = p2(b"M\xe9\x03") + p2(b"}") + p2(call(g("posix", "system"), b"V touch " + marker.encode() + b"\n")) + p2(b"]")
    head = proto(2) + b"\x95" + struct.pack("<Q", outer_len) + b"\x95" + struct.pack("<Q", len(magic)) + magic
    head += p2(b"M\xe9\x03") + p2(b"}")
    swallow_end = end + len(chain) + 16
    head += proto(2) + b"B" + struct.pack("<I", swallow_end - (len(head) + 7))
    data = bytearray(head + b"\0" * (swallow_end - len(head)))
    data[end:end + len(chain)] = chain
    return bytes(data) + b"." + p2(b"]")


@pytest.mark.parametrize("how", ["pickle_file", "torch_zip", "torch_zip_protocol_2", "legacy_nested_frames"])
def test_opcode_that_splits_a_frame(tmp_path, how):
    m = marker_path()
    if how == "pickle_file":  # a frame of 128 KiB or more, read whole by pickle.load(open(f))
        path = write(tmp_path, "split.pkl", frame_straddle_pickle(m, 140000))
        loaders = ("pickle.load",)
    elif how.startswith("torch_zip"):  # torch reads data.pkl through io.BytesIO: any frame
        data = frame_straddle_pickle(m, 200)
        if how.endswith("2"):
            data = proto(2) + data[2:]
        path = write(tmp_path, "split.pt", torch_zip_of(data))
        loaders = ("torch.load",)
    else:
        path = write(tmp_path, "nested.pt", legacy_nested_frames(m))
        loaders = ("torch.load",)
    r = assert_proven_and_dangerous(path, m, loaders=loaders, want=("CKG-F011",))
    assert any("polyglot.frame_split" in f["message"] for f in r["findings"]), describe(r)
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout
    # pickle.loads reads straight on and runs nothing.
    if how == "pickle_file":
        assert not load_runs_payload(path, m, "pickle.loads")


# --- a deflated data.pkl only torch's reader inflates -----------------------------
def deflate_with_incomplete_distance_code(data):
    # One dynamic block: literals 0..254 of 8 bits, 255, 256 of 9, and ONE
    # distance code of length 2 (a code short of its code space). zlib
    # refuses it ("invalid distances set"); miniz's tinfl, torch's reader,
    # does not check and inflates it.
    bits = []
    def put(value, n):  # LSB-first field
        bits.extend((value >> i) & 1 for i in range(n))
    def huff(code, n):  # Huffman code, MSB first
        bits.extend((code >> i) & 1 for i in reversed(range(n)))
    put(1, 1)
    put(2, 2)
    put(0, 5)  # HLIT 257
    put(0, 5)  # HDIST 1
    put(12, 4)  # HCLEN 16
    order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]
    code_len = {0: 2, 2: 2, 8: 2, 9: 2}
    for sym in order[:16]:
        put(code_len.get(sym, 0), 3)
    code = {0: 0, 2: 1, 8: 2, 9: 3}
    for length in [8] * 255 + [9, 9] + [2]:
        huff(code[length], 2)
    for sym in list(data) + [256]:
        if sym < 255:
            huff(sym, 8)
        else:
            huff(510 + sym - 255, 9)
    out = bytearray()
    for i in range(0, len(bits), 8):
        out.append(sum(bit << j for j, bit in enumerate(bits[i:i + 8])))
    return bytes(out)


def test_deflated_data_pickle_only_torch_inflates(tmp_path):
    m = marker_path()
    pkl = b"\x80\x02cposix\nsystem\n(V touch " + m.encode() + b"\ntR."
    entries = [("archive/data.pkl", pkl, 8, deflate_with_incomplete_distance_code(pkl)),
               ("archive/version", b"3\n", 0, b"3\n")]
    blob, central = bytearray(), bytearray()
    for name, raw, method, comp in entries:
        off, crc, n = len(blob), zlib.crc32(raw), name.encode()
        blob += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(comp), len(raw), len(n), 0) + n
        blob += comp
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc, len(comp), len(raw),
                               len(n), 0, 0, 0, 0, 0, off) + n
    cd_off = len(blob)
    blob += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 2, 2, len(central), cd_off, 0)
    with pytest.raises(zlib.error):
        zlib.decompressobj(-15).decompress(entries[0][3])
    path = write(tmp_path, "incomplete_code.pt", bytes(blob))
    r = assert_proven_and_dangerous(path, m, loaders=("torch.load",), want=("CKG-F011",))
    assert any("polyglot.undecodable_pickle" in f["message"] for f in r["findings"]), describe(r)


# --- decoders read as Python reads them -------------------------------------------
# pickle.loads(DECODER(literal)) is judged by decoding the literal: where the
# decoding differs from CPython's, the scan would judge a pickle that never
# runs. Hunt 12 found seven such differences.
def short_unicode(text):
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data


def loads_of(module, function, literal, extra=b""):
    args = literal + extra + (b"\x86" if extra else b"\x85")
    return (b"\x80\x04" + short_unicode("pickle") + short_unicode("loads") + b"\x93" + short_unicode(module) +
            short_unicode(function) + b"\x93" + args + b"R\x85R.")


def shifted_base64(marker, filler, encode):
    # Python decodes the filler groups to 3 bytes each, which the hidden
    # literal's length swallows, then runs the payload; a decoder that skips
    # them reads a harmless literal that swallows the payload instead.
    import base64
    hostile = b"cos\nsystem\n(S'touch " + marker.encode() + b"'\ntR0"
    while len(hostile) % 3:
        hostile += b"N"
    hidden = b"x" * 60
    tail = hidden + hostile
    tail += b"N" * ((-(len(tail) + 1)) % 3) + b"."
    head = b"NC" + bytes([len(hidden) + len(hostile)])
    return encode(head) + filler * (len(hostile) // 3) + encode(tail)


def decoder_payload(marker, how):
    import base64
    import gzip
    if how == "urlsafe_plus_slash":
        text = shifted_base64(marker, b"////", base64.urlsafe_b64encode)
        return loads_of("base64", "urlsafe_b64decode", b"X" + struct.pack("<I", len(text)) + text)
    if how == "altchars":
        text = shifted_base64(marker, b"....", base64.b64encode)
        return loads_of("base64", "b64decode", b"B" + struct.pack("<I", len(text)) + text, b"C\x02.,")
    whole = b"N0N" + b"cos\nsystem\n(S'touch " + marker.encode() + b"'\ntR0."
    head, tail = whole[:3], whole[3:]
    if how == "gzip_nul_between_members":
        data = gzip.compress(head) + b"\0" + gzip.compress(tail)
        return loads_of("gzip", "decompress", b"B" + struct.pack("<I", len(data)) + data)
    # A '=' that starts a group is skipped by binascii.a2b_base64.
    data = base64.b64encode(head) + b"=" + base64.b64encode(tail)
    literal = b"B" + struct.pack("<I", len(data)) + data
    return {"b64decode_stray_pad": lambda: loads_of("base64", "b64decode", literal),
            "codecs_stray_pad": lambda: loads_of("codecs", "decode", literal, short_unicode("base64")),
            "a2b_base64_stray_pad": lambda: loads_of("binascii", "a2b_base64", literal)}[how]()


@pytest.mark.parametrize("how", ["urlsafe_plus_slash", "altchars", "gzip_nul_between_members", "b64decode_stray_pad",
                                 "codecs_stray_pad", "a2b_base64_stray_pad"])
def test_nested_pickle_decoded_as_python_decodes_it(tmp_path, how):
    m = marker_path()
    path = write(tmp_path, how + ".pkl", decoder_payload(m, how))
    assert_proven_and_dangerous(path, m, loaders=("pickle.loads",))


# 20. A functools.partial of a data constructor is a pure call (it builds
# data) only while nothing it holds can change: the partial keeps references
# to its arguments, and a later BUILD or APPEND may give an argument that was
# empty when the partial was made what the constructor calls (dict(ns) calls
# ns.keys(); numpy.dtype(d) looks keys up, running d's default_factory). Run
# as a defaultdict's factory: UUID's and Random's __setstate__ and
# numpy.dtype() look a key up in what they are handed.
def put(i):  # BINPUT
    return b"q" + bytes([i])


def get(i):  # BINGET
    return b"h" + bytes([i])


POP = b"0"


def later_keys(i, m):  # memo i gets attribute keys = partial(mailbox.mbox, m) by a BUILD
    return get(i) + EMPTY_DICT + s("keys") + mbox_of(m) + SETITEM + BUILD + POP


def later_factory(i, m):  # defaultdict memo i gets default_factory by a slots-state BUILD
    return get(i) + tup(NONE, EMPTY_DICT + s("default_factory") + mbox_of(m) + SETITEM) + BUILD + POP


def made(value, i):  # value, memoised as i and popped
    return value + put(i) + POP


def empty_namespace(i):
    return made(call(g("types", "SimpleNamespace")), i)


def factory_dict(i, factory):  # defaultdict(factory), memoised as i
    return made(call(g("collections", "defaultdict"), factory), i)


def uuid_state(i):  # UUID.__setstate__(memo i): looks up 'int'
    return g("uuid", "UUID") + EMPTY_TUPLE + b"\x81" + get(i) + BUILD


def random_state(i):  # Random.__setstate__(memo i): unpacks it, looking its items up
    return g("random", "Random") + EMPTY_TUPLE + b"\x81" + get(i) + BUILD


def dict_of_namespace(i):  # functools.partial(builtins.dict, memo i)
    return call(g("functools", "partial"), g("builtins", "dict"), get(i))


def dict_of_namespace_as_pickle_writes_it(i):  # partial(dict), BUILD (dict, (memo i,), None, None)
    return call(g("functools", "partial"), g("builtins", "dict")) + \
        tup(g("builtins", "dict"), tup(get(i)), NONE, NONE) + BUILD


PURE_PARTIALS_CHANGED = {
    "namespace_uuid": lambda m: empty_namespace(0) + factory_dict(1, dict_of_namespace(0)) + later_keys(0, m) +
    uuid_state(1),
    "namespace_random": lambda m: empty_namespace(0) + factory_dict(1, dict_of_namespace(0)) + later_keys(0, m) +
    random_state(1),
    "namespace_numpy_dtype": lambda m: empty_namespace(0) + factory_dict(1, dict_of_namespace(0)) +
    later_keys(0, m) + call(g("numpy", "dtype"), get(1)),
    "namespace_partial_state_uuid": lambda m: empty_namespace(0) +
    factory_dict(1, dict_of_namespace_as_pickle_writes_it(0)) + later_keys(0, m) + uuid_state(1),
    # partial(numpy.dtype, D): D = defaultdict(None), or defaultdict(), gets
    # its default_factory from a later slots-state BUILD.
    "defaultdict_factory_slot": lambda m: made(call(g("collections", "defaultdict"), NONE), 0) +
    factory_dict(1, call(g("functools", "partial"), g("numpy", "dtype"), get(0))) + later_factory(0, m) +
    uuid_state(1),
    "empty_defaultdict_factory_slot": lambda m: made(call(g("collections", "defaultdict")), 0) +
    factory_dict(1, call(g("functools", "partial"), g("numpy", "dtype"), get(0))) + later_factory(0, m) +
    uuid_state(1),
    # partial(numpy.dtype, L): L = [] gets a field ('f', D) by APPEND, and
    # D = defaultdict() its default_factory afterwards.
    "list_field_factory_slot": lambda m: made(b"]", 0) + made(call(g("collections", "defaultdict")), 2) +
    factory_dict(1, call(g("functools", "partial"), g("numpy", "dtype"), get(0))) +
    get(0) + tup(s("f"), get(2)) + b"a" + POP + later_factory(2, m) + uuid_state(1),
}


@pytest.mark.parametrize("how", sorted(PURE_PARTIALS_CHANGED))
def test_pure_partial_whose_argument_changes_later(tmp_path, how):
    m = marker_path()
    path = write(tmp_path, how + ".pkl", p2(PURE_PARTIALS_CHANGED[how](m)))
    r = assert_proven_and_dangerous(path, m, loaders=("pickle.loads", "pickle._loads"))
    assert "CKG-F081" in {f["rule"] for f in r["findings"] if f["severity"] == "dangerous"}, describe(r)
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


def test_pure_partials_as_pickle_writes_them_stay_safe(tmp_path):
    # What the C pickler writes for partial(defaultdict, list) (its keywords
    # are an empty dict the partial keeps), and partial(dict, {}) or
    # partial(list, []) of an empty dict or list never changed
    # afterwards: pure calls, not reported as callable values.
    import subprocess
    from ckg import PYTHON
    path = tmp_path / "pure.pkl"
    done = subprocess.run([PYTHON, "-c", "import collections, functools, pickle, sys\n"
                           "d = collections.defaultdict(functools.partial(collections.defaultdict, list))\n"
                           "d['a']['b'].append(1)\n"
                           "e = collections.defaultdict(functools.partial(dict, {}))\n"
                           "f = collections.defaultdict(functools.partial(list, []))\n"
                           "pickle.dump([d, e, f], open(sys.argv[1], 'wb'), protocol=2)\n", str(path)],
                          capture_output=True)
    assert done.returncode == 0, done.stderr
    r = scan(path)
    assert r["verdict"] != "dangerous", describe(r)


def test_no_markers_left():
    assert not glob.glob("/tmp/ckptguard-pwned-%d-*" % os.getpid())


# 21. joblib readings joblib.dump never writes (hunt 14). joblib.load's
# NumpyUnpickler reads each NumpyArrayWrapper's array from the file right
# after its BUILD: how many bytes (padding first?) depends on every attribute
# the wrapper holds, not only its BUILD state; an object array's pickle is
# read by the C unpickler, which leaves the file at the end of a frame it
# read whole. The scan's reading of such files cannot know where joblib reads
# on: dangerous (CKG-F011 polyglot.joblib_reading), and inspect refuses them.
def _jl_str(x):
    b = x.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _jl_dtype(code, flags=0):
    return (b"cnumpy\ndtype\n(" + _jl_str(code) + b"\x89\x88tR(K\x03" + _jl_str("<" if code == "i8" else "|") +
            b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK" + bytes([flags]) + b"tb")


def _jl_state(dtype, align):
    st = (b"}(" + _jl_str("subclass") + b"cnumpy\nndarray\n" + _jl_str("shape") + b"(K\x03t" + _jl_str("order") +
          _jl_str("C") + _jl_str("dtype") + dtype + _jl_str("allow_mmap") + b"\x89")
    if align:
        st += _jl_str("numpy_array_alignment_bytes") + b"K\x10"
    return st + b"u"


def _jl_os_system(m):
    return b"0cos\nsystem\n(V" + ("touch " + m).encode() + b"\ntR."


def _jl_misaligned_tail(m, pad=10):
    # joblib reads a padding byte (10), 10 bytes of padding and 24 bytes of
    # data, then the payload; read without padding, the 24 bytes end early
    # and a BINBYTES covers the payload.
    data = bytes([pad]) + b"\x00" * 23
    inner = b"\x00" * ((1 + pad + 24) - (24 + 5)) + _jl_os_system(m)
    return data + b"B" + struct.pack("<I", len(inner)) + inner + b"0."


def joblib_foreign_reading(m, how):
    wrapper = b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n"
    if how.startswith("constructed"):
        # NumpyArrayWrapper(ndarray, (3,), 'C', dtype): __init__ sets
        # numpy_array_alignment_bytes=16, which the BUILD state leaves out.
        head = (b"\x80\x02" + wrapper + b"(cnumpy\nndarray\n(K\x03t" + _jl_str("C") + _jl_dtype("i8") + b"tR" +
                _jl_state(_jl_dtype("i8"), False) + b"b")
        data = head + _jl_misaligned_tail(m)
        if how.endswith("_zlib"):
            data = zlib.compress(data, 3)
        elif how.endswith("_xz"):
            data = lzma.compress(data)
        return data
    if how == "built_twice":
        # The first BUILD sets the alignment, which stays for the second.
        first = b"\x80\x02" + wrapper + b")\x81q\x00" + _jl_state(_jl_dtype("i8"), True) + b"b\x00" + b"\x01" * 24
        return first + b"0h\x00" + _jl_state(_jl_dtype("i8"), False) + b"b" + _jl_misaligned_tail(m)
    if how == "numpy_int_shape":
        # (numpy.int64(3),): joblib takes it, the view cannot size it.
        scalar = (b"cnumpy.core.multiarray\nscalar\n(" + _jl_dtype("i8") + b"C\x08" + struct.pack("<q", 3) + b"tR")
        state = (b"}(" + _jl_str("subclass") + b"cnumpy\nndarray\n" + _jl_str("shape") + b"(" + scalar + b"t" +
                 _jl_str("order") + _jl_str("C") + _jl_str("dtype") + _jl_dtype("i8") + _jl_str("allow_mmap") +
                 b"\x89u")
        return b"\x80\x02" + wrapper + b")\x81" + state + b"b" + b"\xff" * 24 + _jl_os_system(m)
    # object_frame[_zlib]: an object array whose pickle's FRAME runs on past
    # its STOP; the C unpickler that read the frame whole goes on at the
    # frame's end, where the payload is (after an int64 array whose bytes
    # stop pickle.load's own reading).
    import numpy as np
    inner = pickle.dumps(np.array([1, 2, 3], dtype=object), protocol=4)
    assert inner[2] == 0x95 and inner.endswith(b".")
    # The C unpickler peeks at small frames instead: in an open() file's
    # 8 KiB buffer, in joblib's decompressors' 1 MiB one.
    rest = 1200000 if how.endswith("_zlib") else 30000
    payload = _jl_os_system(m)
    frame = inner[11:] + b"B" + struct.pack("<I", rest - 5 + len(payload)) + b"\x00" * (rest - 5)
    obj = inner[:2] + b"\x95" + struct.pack("<Q", len(frame)) + frame
    head = (b"\x80\x02(" + wrapper + b")\x81" + _jl_state(_jl_dtype("i8"), False) + b"b" + b"\xff" * 24 + wrapper +
            b")\x81" + _jl_state(_jl_dtype("O", 63), False) + b"b")
    data = head + obj + payload + b"0l."
    if how.endswith("_zlib"):
        data = zlib.compress(data, 3)
    return data


@pytest.mark.parametrize("how", ["constructed", "constructed_zlib", "constructed_xz", "built_twice",
                                 "numpy_int_shape", "object_frame", "object_frame_zlib"])
def test_joblib_reading_joblib_dump_never_writes(tmp_path, how):
    m = marker_path()
    path = write(tmp_path, how + ".joblib", joblib_foreign_reading(m, how))
    r = assert_proven_and_dangerous(path, m, loaders=("joblib.load",), want=("CKG-F011",))
    assert "polyglot.joblib_reading" in describe(r), describe(r)
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# 22. Files Python's tarfile reads as a tar (hunt 15). torch.load tries
# tarfile first for any file that does not start with a zip local header,
# and tarfile reads numbers with int(s, 8) ('0o', a sign, underscores):
# a checksum so spelled made a valid tar to Python and "not a tar" to the
# scan; a size so spelled is 0 bytes to libarchive. Pax, GNU sparse and
# unknown-type headers are read differently by the two as well (hunt 16).
# The generators are in tar_payloads/.
@pytest.mark.parametrize("gen,style", [("tar_legacy_polyglot", None), ("tar_in_gzip_extra", None),
                                       ("tar_in_npy", None), ("tar_in_zlib", None), ("tar_in_safetensors", None),
                                       ("tar_chksum_spelling", None), ("tar_octal_hidden2", "0o"),
                                       ("tar_octal_hidden2", "plus"), ("tar_octal_hidden2", "underscore"),
                                       # hunt 16: members tarfile and libarchive read differently
                                       ("tar_pax_size", "plus"), ("tar_pax_size", "underscore"),
                                       ("tar_pax_size", "unicode"), ("tar_pax_size", "beyond"),
                                       ("tar_two_pax", None), ("tar_two_pax", "global"), ("tar_pax_sparse_size", None),
                                       ("tar_oldgnu_sparse", "plus"), ("tar_pax_path_slash", None),
                                       ("tar_type", "V"), ("tar_type", "M"), ("tar_later_chksum", "0o"),
                                       ("tar_later_chksum", "underscore")])
def test_file_python_reads_as_a_tar(tmp_path, gen, style):
    import subprocess
    from ckg import PYTHON
    m = marker_path()
    path = tmp_path / (gen + ".pt")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tar_payloads", gen + ".py")
    args = [PYTHON, script, str(path), m] + ([style] if style else [])
    subprocess.run(args, check=True, capture_output=True, timeout=60)
    assert not os.path.exists(m)
    r = assert_proven_and_dangerous(path, m, loaders=("torch.load",), want=("CKG-F011",))
    assert "polyglot.tar" in describe(r), describe(r)
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# 23. A callable planted by BUILD under a private attribute name (hunt 17).
# argparse.Namespace's repr calls self._get_args(), looked up on the
# instance; numpy converts an object by calling its __array__, also looked up
# on the instance. A Namespace record given such an attribute (a
# functools.partial of anything) runs it wherever the loader formats or
# converts the record: torch's persistent_load formats a storage id's type
# name, the legacy format its protocol version, numpy's SETITEM converts a
# key or a value; and so does any print() of the loaded object. The BUILD is
# dangerous by itself (CKG-F002).
def _partial_open_memmap(marker):
    # functools.partial(numpy.lib.format.open_memmap, MARKER, 'w+', 'u1', (1,)):
    # calling it creates the marker file.
    return call(g("functools", "partial"), g("numpy.lib.format", "open_memmap"), s(marker), s("w+"), s("u1"),
                tup(b"K\x01"))


def _namespace_with(name, value):  # argparse.Namespace(), then BUILD {name: value}
    return call(g("argparse", "Namespace")) + b"(" + s(name) + value + b"db"


def _rebuild_v2(pid):
    return call(g("torch._utils", "_rebuild_tensor_v2"), pid, b"K\x00", tup(b"K\x02"), tup(b"K\x01"), b"\x89",
                call(g("collections", "OrderedDict")))


def _torch_zip_with_record(pickle_bytes, record=b"\0" * 8):
    import io
    import zipfile
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/data/0", record)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def private_attribute_payload(m, how):
    import numpy as np
    magic = b"\x8a\x0a" + (0x1950a86a20f9469cfc6c).to_bytes(10, "little")
    if how == "zip_storage_type_name":
        pid = tup(_namespace_with("_get_args", _partial_open_memmap(m)), g("torch", "FloatStorage"), s("0"), s("cpu"),
                  b"K\x02") + b"Q"
        return _torch_zip_with_record(p2(b"(" + s("w") + _rebuild_v2(pid) + b"d"))
    if how == "legacy_protocol_version":
        return p2(magic) + p2(_namespace_with("_get_args", _partial_open_memmap(m)))
    if how == "legacy_storage_type_name":
        sys_info = (b"(" + s("protocol_version") + b"M\xe9\x03" + s("little_endian") + b"\x88" + s("type_sizes") +
                    b"(" + s("short") + b"K\x02" + s("int") + b"K\x04" + s("long") + b"K\x04" + b"d" + b"d")
        main = b"(" + s("w") + tup(_namespace_with("_get_args", _partial_open_memmap(m)), s("x")) + b"Q" + b"d"
        return p2(magic) + p2(b"M\xe9\x03") + p2(sys_info) + p2(main) + p2(b"(l")
    ints = pickle.dumps(np.zeros(3, "i8"), protocol=2)[2:-1]
    if how == "ndarray_key_array":
        return p2(ints + _namespace_with("__array__", _partial_open_memmap(m)) + b"K\x01s")
    if how == "ndarray_key_array_in_zip":
        pid = tup(s("storage"), g("torch", "FloatStorage"), s("0"), s("cpu"), b"K\x02") + b"Q"
        mask = ints + _namespace_with("__array__", _partial_open_memmap(m)) + b"K\x01s"
        return _torch_zip_with_record(p2(b"(" + s("w") + _rebuild_v2(pid) + s("mask") + mask + b"d"))
    if how == "zip_storage_type_name_counter":
        # Counter.__repr__ calls self.most_common(): a public name.
        counter = (call(g("collections", "Counter"), b"(" + s("a") + b"K\x01d") + b"(" + s("most_common") +
                   _partial_open_memmap(m) + b"db")
        pid = tup(counter, g("torch", "FloatStorage"), s("0"), s("cpu"), b"K\x02") + b"Q"
        return _torch_zip_with_record(p2(b"(" + s("w") + _rebuild_v2(pid) + b"d"))
    assert how == "ndarray_str_value"
    strs = pickle.dumps(np.array(["a" * 64, "b"]), protocol=2)[2:-1]
    return p2(strs + b"K\x00" + _namespace_with("_get_args", _partial_open_memmap(m)) + b"s")


@pytest.mark.parametrize("how,ext,loaders", [
    ("zip_storage_type_name", ".pt", ("torch.load",)),
    ("zip_storage_type_name_counter", ".pt", ("torch.load",)),
    ("legacy_protocol_version", ".pt", ("torch.load",)),
    ("legacy_storage_type_name", ".pt", ("torch.load",)),
    ("ndarray_key_array", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
    ("ndarray_key_array_in_zip", ".pt", ("torch.load",)),
    ("ndarray_str_value", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
])
def test_callable_planted_under_a_private_attribute_name(tmp_path, how, ext, loaders):
    m = marker_path()
    path = write(tmp_path, how + ext, private_attribute_payload(m, how))
    r = assert_proven_and_dangerous(path, m, loaders=loaders, want=("CKG-F002",))
    assert "shadow a method" in describe(r), describe(r)
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


def test_partials_among_hyper_parameters(tmp_path):
    # Lightning keeps hyper-parameters in a dict: a partial of an optimizer
    # class as an item is data until called (suspicious, not weights-only).
    # As an attribute of a pure-data record it is a callable the record's
    # own methods may call (Counter's repr calls self.most_common()), and a
    # Namespace is judged as any record: dangerous.
    import argparse
    import functools
    import torch
    items = tmp_path / "hparams.pt"
    torch.save({"hyper_parameters": {"lr": 0.1, "optimizer": functools.partial(torch.optim.Adam, lr=0.1)}}, items)
    r = scan(items)
    assert r["verdict"] == "suspicious", describe(r)
    assert not any(f["rule"] == "CKG-F002" for f in r["findings"]), describe(r)
    attrs = tmp_path / "args.pt"
    torch.save({"args": argparse.Namespace(lr=0.1, opt=functools.partial(torch.optim.Adam, lr=0.1))}, attrs)
    r = scan(attrs)
    assert r["verdict"] == "dangerous", describe(r)
    assert any(f["rule"] == "CKG-F002" for f in r["findings"]), describe(r)
    # Without a callable it is the record it always was.
    plain = tmp_path / "plain.pt"
    torch.save({"args": argparse.Namespace(lr=0.1, name="run", layers=[1, 2])}, plain)
    r = scan(plain)
    assert r["verdict"] == "suspicious", describe(r)


# 24. The same callables reached around that rule (hunt 18): a partial of a
# data constructor stored first and rewritten by a later BUILD into a call
# of something else (Python changes it in place: every holder now holds the
# call; Optimizer.__setstate__ calls self._hook_for_profile()), and public
# names on instances of classes the rules list (Optimizer.__setstate__
# calls self.defaults.setdefault(...); torch.optim.lr_scheduler.Counter is
# collections.Counter, whose repr calls self.most_common()), with a partial
# or a bound method (getattr(PosixPath(p), 'touch')).
def attribute_callable_payload(m, how):
    import numpy as np
    memmap_args = tup(s(m), s("w+"), s("u1"), tup(b"K\x01"))
    refill = b"h\xc8" + tup(g("numpy.lib.format", "open_memmap"), memmap_args, NONE, NONE) + b"b0"
    pure = call(g("functools", "partial"), g("builtins", "dict")) + b"q\xc8"  # PUT 200: above the array pickle's keys
    strs = pickle.dumps(np.array(["a" * 64, "b"]), protocol=2)[2:-1]
    if how == "refilled_partial_storage_type_name":
        ns = call(g("argparse", "Namespace")) + b"(" + s("_get_args") + pure + b"db" + b"q\xc9" + b"0"
        pid = tup(b"h\xc9", g("torch", "FloatStorage"), s("0"), s("cpu"), b"K\x02") + b"Q"
        return _torch_zip_with_record(proto(2) + ns + refill + b"(" + s("w") + _rebuild_v2(pid) + b"d.")
    if how == "refilled_partial_ndarray":
        ns = call(g("argparse", "Namespace")) + b"(" + s("_get_args") + pure + b"db" + b"q\xc9" + b"0"
        return proto(2) + ns + refill + strs + b"K\x00" + b"h\xc9" + b"s."
    if how == "refilled_optimizer_hook":
        opt = (g("torch.optim", "SGD") + b")\x81" + b"(" + s("defaults") + b"}" + s("state") + b"}" +
               s("param_groups") + b"]" + s("_hook_for_profile") + pure + b"d" + refill + b"b")
        return p2(b"(" + s("optimizer") + opt + b"d")
    if how == "optimizer_defaults_setdefault":
        p3 = call(g("functools", "partial"), g("numpy.lib.format", "open_memmap"), s(m), s("w+"), s("u1"))
        sched = g("torch.optim.lr_scheduler", "StepLR") + b")\x81" + b"(" + s("setdefault") + p3 + b"db"
        opt = (g("torch.optim", "SGD") + b")\x81" + b"(" + s("defaults") + sched + s("state") + b"}" +
               s("param_groups") + b"]" + b"db")
        return p2(b"(" + s("optimizer") + opt + b"d")
    touch = call(g("builtins", "getattr"), call(g("pathlib", "PosixPath"), s(m)), s("touch"))
    value = touch if how.startswith("counter_bound_method") else _partial_open_memmap(m)
    ctr = (g("torch.optim.lr_scheduler", "Counter") + b")\x81" + s("k") + b"K\x01s" + b"(" + s("most_common") +
           value + b"db")
    if how.endswith("_in_zip"):
        pid = tup(ctr, g("torch", "FloatStorage"), s("0"), s("cpu"), b"K\x02") + b"Q"
        return _torch_zip_with_record(p2(b"(" + s("w") + _rebuild_v2(pid) + b"d"))
    return p2(strs + b"K\x00" + ctr + b"s")


@pytest.mark.parametrize("how,ext,loaders", [
    ("refilled_partial_storage_type_name", ".pt", ("torch.load",)),
    ("refilled_partial_ndarray", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
    ("refilled_optimizer_hook", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
    ("optimizer_defaults_setdefault", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
    ("counter_most_common_in_zip", ".pt", ("torch.load",)),
    ("counter_most_common", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
    ("counter_bound_method_in_zip", ".pt", ("torch.load",)),
    ("counter_bound_method", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
])
def test_callable_attribute_around_the_private_name_rule(tmp_path, how, ext, loaders):
    m = marker_path()
    path = write(tmp_path, how + ext, attribute_callable_payload(m, how))
    r = assert_proven_and_dangerous(path, m, loaders=loaders, want=("CKG-F002",))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# 25. Callable objects and a shadowed joblib method (hunt 19). An instance
# of a class the rules do not list may itself be callable (joblib's
# BatchedCalls and loky's _CallItem run the calls they hold from
# __call__): given as an attribute to an instance whose class's own
# methods call it (Optimizer.__setstate__, Namespace.__repr__, joblib's
# read_array), it runs. And joblib's read_array decides its padding by
# calling self.safe_get_numpy_array_alignment_bytes(): a BUILD state key of
# that name (set to builtins.dict, pure data) made joblib read a padding
# byte the joblib view did not, and run what the view took for bytes.
def _batched_calls(m):
    item = tup(g("numpy.lib.format", "open_memmap"), tup(s(m), s("w+"), s("u1"), tup(b"K\x01")), b"}")
    return (g("joblib.parallel", "BatchedCalls") + b")\x81" + b"(" + s("items") + b"(" + item + b"l" +
            s("_backend") + s("sequential") + s("_n_jobs") + b"K\x01" + b"db")


def _u1_dtype():
    return (call(g("numpy", "dtype"), s("u1"), b"\x89", b"\x88") +
            tup(b"K\x03", s("|"), NONE, NONE, NONE, b"J\xff\xff\xff\xff", b"J\xff\xff\xff\xff", b"K\x00") + b"b")


def callable_object_payload(m, how):
    import numpy as np
    if how == "optimizer_hook_batched_calls" or how == "optimizer_hook_loky_call_item":
        if how.endswith("batched_calls"):
            hook = _batched_calls(m)
        else:
            hook = (g("joblib.externals.loky.process_executor", "_CallItem") + b")\x81" + b"(" + s("work_id") +
                    b"K\x00" + s("fn") + g("numpy.lib.format", "open_memmap") + s("args") +
                    tup(s(m), s("w+"), s("u1"), tup(b"K\x01")) + s("kwargs") + b"}" + s("loky_pickler") + NONE +
                    b"db")
        opt = (g("torch.optim", "SGD") + b")\x81" + b"(" + s("defaults") + b"}" + s("state") + b"}" +
               s("param_groups") + b"]" + s("_hook_for_profile") + hook + b"db")
        return p2(b"(" + s("optimizer") + opt + b"d")
    if how == "namespace_callable_object_ndarray":
        strs = pickle.dumps(np.array(["a" * 64, "b"]), protocol=2)[2:-1]
        ns = call(g("argparse", "Namespace")) + b"(" + s("_get_args") + _batched_calls(m) + b"db"
        return p2(strs + b"K\x00" + ns + b"s")
    wrapper = (g("joblib.numpy_pickle", "NumpyArrayWrapper") + b")\x81" + b"(" + s("subclass") + g("numpy", "ndarray") +
               s("shape") + tup(b"K\x01") + s("order") + s("C") + s("dtype") + _u1_dtype() + s("allow_mmap") + b"\x89" +
               s("safe_get_numpy_array_alignment_bytes"))
    if how == "joblib_alignment_callable_object":
        return proto(2) + wrapper + _batched_calls(m) + b"db" + b"\x00."
    assert how == "joblib_alignment_shadowed"
    hidden = b"\x00" + call(g("os", "system"), s("touch " + m)) + b"."  # a data byte, then what joblib runs
    return proto(2) + wrapper + g("builtins", "dict") + b"db" + bytes([5]) + b"B" + struct.pack("<I", len(hidden)) + \
        hidden + b"0."


@pytest.mark.parametrize("how,loaders,want", [
    ("optimizer_hook_batched_calls", ("pickle.loads", "numpy.load", "joblib.load", "torch.load"), "CKG-F002"),
    ("optimizer_hook_loky_call_item", ("pickle.loads", "joblib.load"), "CKG-F002"),
    ("namespace_callable_object_ndarray", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("joblib_alignment_callable_object", ("joblib.load",), "CKG-F002"),
    ("joblib_alignment_shadowed", ("joblib.load",), "CKG-F011"),
])
def test_callable_object_or_shadowed_method(tmp_path, how, loaders, want):
    m = marker_path()
    path = write(tmp_path, how + ".pkl", callable_object_payload(m, how))
    assert_proven_and_dangerous(path, m, loaders=loaders, want=(want,))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# 26. States and wrappers the scan did not follow (hunt 20). A BUILD state
# made by a call and filled by SETITEM (dict(), copyreg.__newobj__(
# OrderedDict)) sets attributes as a literal dict does; torch's
# _rebuild_from_type_v2 sets its state's items on what its function made
# (or runs that class's __setstate__: Optimizer's calls
# self._hook_for_profile()) as a BUILD does; numpy's assignment into a
# unicode array and torch's persistent_load format the values they are
# given (str(), f-strings), so an instance the pickle gave attributes runs
# its methods there, whatever its class; and joblib reads an array's bytes
# after the BUILD of a NumpyArrayWrapper however the wrapper was named (a
# protocol 4 dotted name through another module, a STRING with octal
# escapes) or made (_rebuild_from_type_v2 of copyreg.__newobj__), where the
# scan read those bytes as a literal that hid what joblib then runs.
def _unicode_array_setitem(value):  # arr[0] = value into a unicode array: numpy calls str(value)
    import numpy as np
    strs = pickle.dumps(np.array(["a" * 64, "b"]), protocol=2)[2:-1]
    return p2(strs + b"K\x00" + value + b"s")


def _storage_type_name(value):  # torch's persistent_load formats the id's type name
    pid = tup(value, g("torch", "FloatStorage"), s("0"), s("cpu"), b"K\x02") + b"Q"
    return _torch_zip_with_record(p2(b"(" + s("w") + _rebuild_v2(pid) + b"d"))


def _joblib_polyglot(m, wrapper, protocol=2):
    # A wrapper BUILT with a one-byte array's state: joblib reads five bytes
    # there (the straight reading: BINBYTES) and runs the pickle after them.
    state = (b"(" + s("subclass") + g("numpy", "ndarray") + s("shape") + tup(b"K\x05") + s("order") + s("C") +
             s("dtype") + _u1_dtype() + s("allow_mmap") + b"\x89" + b"d")
    payload = call(g("os", "system"), s("touch " + m))
    return proto(protocol) + wrapper + state + b"b" + b"B" + struct.pack("<I", len(payload)) + payload + b"0."


def state_and_wrapper_payload(m, how):
    get_args = _partial_open_memmap(m)
    if how.startswith("newobj_ordered_dict_state"):
        od = call(g("copyreg", "__newobj__"), g("collections", "OrderedDict")) + s("_get_args") + get_args + b"s"
        data = p2(call(g("builtins", "str"), call(g("argparse", "Namespace")) + od + b"b"))
        return _torch_zip_with_record(data) if how.endswith("_in_zip") else data
    if how.startswith("dict_call_state"):
        ns = call(g("argparse", "Namespace")) + call(g("builtins", "dict")) + s("_get_args") + get_args + b"s" + b"b"
        return _storage_type_name(ns) if how.endswith("_in_zip") else _unicode_array_setitem(ns)
    if how.startswith("rebuild_from_type_setattr"):
        ns = call(g("torch._tensor", "_rebuild_from_type_v2"), g("argparse", "Namespace"), g("argparse", "Namespace"),
                  b")", b"(" + s("_get_args") + get_args + b"d")
        return _storage_type_name(ns) if how.endswith("_in_zip") else _unicode_array_setitem(ns)
    if how.startswith("rebuild_from_type_optimizer"):
        opt = call(g("torch._tensor", "_rebuild_from_type_v2"), g("copyreg", "__newobj__"), g("torch.optim", "SGD"),
                   tup(g("torch.optim", "SGD")),
                   b"(" + s("_hook_for_profile") + get_args + s("defaults") + b"}" + s("param_groups") + b"]" +
                   s("state") + b"}" + b"d")
        data = p2(b"(" + s("optimizer") + opt + b"d")
        return _torch_zip_with_record(data) if how.endswith("_in_zip") else data
    if how.startswith("unlisted_holder_callable_object"):
        parser = (g("argparse", "ArgumentParser") + b")\x81" + b"(" + s("_get_args") + _batched_calls(m) +
                  s("_get_kwargs") + g("builtins", "list") + b"db")
        return _storage_type_name(parser) if how.endswith("_in_zip") else _unicode_array_setitem(parser)
    if how == "joblib_wrapper_by_rebuild_from_type":
        wrapper = call(g("torch._tensor", "_rebuild_from_type_v2"), g("copyreg", "__newobj__"),
                       g("torch._tensor", "Tensor"), tup(g("joblib.numpy_pickle", "NumpyArrayWrapper")), NONE)
        return _joblib_polyglot(m, wrapper)
    if how == "joblib_wrapper_through_another_module":
        return _joblib_polyglot(m, sg("joblib._store_backends", "numpy_pickle.NumpyArrayWrapper") + b")\x81", 4)
    assert how == "joblib_wrapper_named_with_octal_escapes"
    wrapper = b"S'joblib.numpy_pickle'\n" + b"S'Numpy\\101rrayWrapper'\n" + b"\x93" + b")\x81"
    data = _joblib_polyglot(m, wrapper, 4)
    assert b"ArrayWrapper" not in data and b"\\x" not in data and b"\\u00" not in data
    return data


@pytest.mark.parametrize("how,ext,loaders,want", [
    ("newobj_ordered_dict_state", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("newobj_ordered_dict_state_in_zip", ".pt", ("torch.load",), "CKG-F002"),
    ("dict_call_state", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("dict_call_state_in_zip", ".pt", ("torch.load",), "CKG-F002"),
    ("rebuild_from_type_setattr", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("rebuild_from_type_setattr_in_zip", ".pt", ("torch.load",), "CKG-F002"),
    ("rebuild_from_type_optimizer", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("rebuild_from_type_optimizer_in_zip", ".pt", ("torch.load",), "CKG-F002"),
    ("unlisted_holder_callable_object", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F081"),
    ("unlisted_holder_callable_object_in_zip", ".pt", ("torch.load",), "CKG-F081"),
    ("joblib_wrapper_by_rebuild_from_type", ".pkl", ("joblib.load",), "CKG-D001"),
    ("joblib_wrapper_through_another_module", ".pkl", ("joblib.load",), "CKG-D001"),
    ("joblib_wrapper_named_with_octal_escapes", ".pkl", ("joblib.load",), "CKG-D001"),
])
def test_state_or_wrapper_the_scan_did_not_follow(tmp_path, how, ext, loaders, want):
    m = marker_path()
    path = write(tmp_path, how + ext, state_and_wrapper_payload(m, how))
    assert_proven_and_dangerous(path, m, loaders=loaders, want=(want,))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# 27. Hunt 21: more holders and triggers. A class's own __setitem__ after a
# BUILD set its attributes (torch's ModuleDict.__setitem__ calls
# self.add_module(k, v)); a wrapper reached by getattr(joblib.numpy_pickle,
# 'NumpyArrayWrapper'); a DataPipe serialization wrapper, whose __setstate__
# unpickles its state (a dict's key); an OrderedDict(pairs) or Counter(d)
# state, which holds what it is built from; a masked array's fill value
# (numpy's __setstate__ formats it) and an item put into an array made by
# copyreg.__newobj__(numpy.ndarray, ...); callable objects that run the
# calls they hold (joblib's BatchedCalls, torch's quantization
# _PartialWrapper), planted where NumpyVersion.__ne__ calls
# self._compare(), which torch's legacy reader runs on the first pickle.
def _partial_wrapper(m):
    return (g("torch.ao.quantization.observer", "_PartialWrapper") + b")\x81" + b"(" + s("p") + g("builtins", "abs") +
            s("callable_args") + b"(" + s("x") + _batched_calls(m) + b"d" + b"db")


def _argument_parser_holding(m):
    kw = b"".join(s(k) + NONE for k in ("prog", "usage", "description", "formatter_class", "conflict_handler"))
    return (g("argparse", "ArgumentParser") + b")\x81" + b"(" + s("_get_args") + _batched_calls(m) + kw + s("add_help") +
            b"\x89" + b"db")


def hunt21_payload(m, how):
    import numpy as np
    sgd_state = s("defaults") + b"}" + s("param_groups") + b"]" + s("state") + b"}"
    if how.startswith("module_dict_setitem"):
        data = p2(g("torch.nn.modules.container", "ModuleDict") + b")\x81" + b"(" + s("add_module") +
                  g("numpy.lib.format", "open_memmap") + b"db" + s(m) + s("w+") + b"s")
        return _torch_zip_with_record(data) if how.endswith("_in_zip") else data
    if how == "joblib_wrapper_by_getattr":
        cls = call(g("builtins", "getattr"), g("joblib", "numpy_pickle"), s("NumpyArrayWrapper"))
        return _joblib_polyglot(m, cls + b")\x81")
    if how.startswith("datapipe_wrapper_dict_key"):
        nested = b"cos\nsystem\n(S'touch " + m.encode() + b"'\ntR."
        data = proto(3) + g("torch.utils.data.datapipes.datapipe", "_DataPipeSerializationWrapper") + b")\x81" + \
            b"(" + b(nested) + b"K\x00K\x00K\x00" + b"db."
        return _torch_zip_with_record(data) if how.endswith("_in_zip") else data
    if how.startswith("optimizer_ordered_dict_pairs"):
        pairs = (b"(" + tup(s("_hook_for_profile"), _partial_open_memmap(m)) + tup(s("defaults"), b"}") +
                 tup(s("param_groups"), b"]") + tup(s("state"), b"}") + b"l")
        data = p2(g("torch.optim.sgd", "SGD") + b")\x81" + call(g("collections", "OrderedDict"), pairs) + b"b")
        return _torch_zip_with_record(data) if how.endswith("_in_zip") else data
    if how == "optimizer_counter_state":
        d = b"(" + s("_hook_for_profile") + _partial_open_memmap(m) + sgd_state + b"d"
        return p2(g("torch.optim.sgd", "SGD") + b")\x81" + call(g("collections", "Counter"), d) + b"b")
    if how.startswith("masked_array_fill_value"):
        p = pickle.dumps(np.ma.array(np.array(["a"], dtype="U1"), mask=[False]), protocol=2)
        assert p.endswith(b"Nt" + b"q\x16" + b"b."), p[-12:]
        data = p[:-len(b"Ntq\x16b.")] + _argument_parser_holding(m) + b"t" + b"q\x16" + b"b."
        return _torch_zip_with_record(data) if how.endswith("_in_zip") else data
    if how.startswith("newobj_ndarray_setitem"):
        arr = call(g("copyreg", "__newobj__"), g("numpy", "ndarray"), tup(b"K\x01"), s("U1"))
        data = p2(arr + b"K\x00" + _argument_parser_holding(m) + b"s")
        return _torch_zip_with_record(data) if how.endswith("_in_zip") else data
    assert how == "legacy_magic_number_ne"
    magic = p2(g("numpy.lib._version", "NumpyVersion") + b")\x81" + b"(" + s("_compare") + _partial_wrapper(m) + b"db")
    return magic + p2(b"M\xe9\x03") + p2(b"}") + p2(b"}") + p2(b"]")


@pytest.mark.parametrize("how,ext,loaders,want", [
    ("module_dict_setitem", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("module_dict_setitem_in_zip", ".pt", ("torch.load",), "CKG-F002"),
    ("joblib_wrapper_by_getattr", ".pkl", ("joblib.load",), "CKG-D001"),
    ("datapipe_wrapper_dict_key", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-D071"),
    ("datapipe_wrapper_dict_key_in_zip", ".pt", ("torch.load",), "CKG-D071"),
    ("optimizer_ordered_dict_pairs", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("optimizer_ordered_dict_pairs_in_zip", ".pt", ("torch.load",), "CKG-F002"),
    ("optimizer_counter_state", ".pkl", ("pickle.loads",), "CKG-F002"),
    ("masked_array_fill_value", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F081"),
    ("masked_array_fill_value_in_zip", ".pt", ("torch.load",), "CKG-F081"),
    ("newobj_ndarray_setitem", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F081"),
    ("newobj_ndarray_setitem_in_zip", ".pt", ("torch.load",), "CKG-F081"),
    ("legacy_magic_number_ne", ".pt", ("torch.load",), "CKG-D070"),
])
def test_holders_and_triggers_of_hunt_21(tmp_path, how, ext, loaders, want):
    m = marker_path()
    path = write(tmp_path, how + ext, hunt21_payload(m, how))
    assert_proven_and_dangerous(path, m, loaders=loaders, want=(want,))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# 28. Hunt 22: more triggers for the same holders. The payload is a plain
# function that creates its path (mailbox.mbox), planted as an attribute
# that a class's own method calls: ipaddress.IPv4Interface's str() calls
# self._string_from_ip_int(self._ip), a LegacyVersion's == calls
# self._compare, an enum.Flag's iteration self._iter_member_, a
# numpy.vectorize's call self._vectorize_call_with_signature, and
# finalizers run at the end of the loading process (torch.library.Library
# iterates _op_impls, wave.Wave_read calls self.close()). The triggers: a
# dict key hashed and compared with an equal-hash key; a gadget inside a
# list assigned into a numpy array or held by a persistent id, or a dict's
# value formatted by str(); torch's legacy reader formatting its second
# pickle and iterating its fifth; Optimizer's __setstate__ under another
# module's name (torch.optim.adam.Optimizer).
def _ipv4_interface(m):  # str() of it runs mailbox.mbox(m)
    return (g("ipaddress", "IPv4Interface") + b")\x81" +
            tup(b"(" + s("_string_from_ip_int") + g("mailbox", "mbox") + s("_prefixlen") + b"K\x01" + b"d",
                b"(" + s("_ip") + s(m) + b"d") + b"b")


def _vectorize(m):  # calling it runs mailbox.mbox(m, args)
    return (g("numpy", "vectorize") + b")\x81" + b"(" + s("pyfunc") + s(m) + s("excluded") + NONE + s("signature") +
            s("(n)->()") + s("_vectorize_call_with_signature") + g("mailbox", "mbox") + b"db")


def _flag(m):  # iterating it runs mailbox.mbox(m)
    return (call(g("copyreg", "_reconstructor"), g("enum", "Flag"), g("builtins", "object"), NONE) + b"(" +
            s("_iter_member_") + g("mailbox", "mbox") + s("_value_") + s(m) + b"db")


def hunt22_payload(m, how):
    import numpy as np
    magic = pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2)
    zipped = how.endswith("_in_zip")
    if how.startswith("dict_key_equal_hash"):
        version = (g("numpy.compat._pep440", "LegacyVersion") + b")\x81" + b"(" + s("_key") + s(m) + s("_compare") +
                   g("mailbox", "mbox") + b"db")
        data = p2(b"(" + s(m) + b"K\x00" + version + b"K\x01" + b"d")
    elif how.startswith("array_assigned_list"):
        arr = pickle.dumps(np.zeros(1, "U80"), protocol=2)[:-1]
        data = arr + call(g("builtins", "slice"), NONE) + b"(" + _ipv4_interface(m) + b"l" + b"s."
    elif how == "storage_type_name_list_in_zip":
        data = p2(tup(b"(" + _ipv4_interface(m) + b"l") + b"Q")
    elif how.startswith("str_of_dict_value"):
        data = p2(b"(" + s("x") + call(g("builtins", "str"), b"(" + s("k") + _ipv4_interface(m) + b"d") + b"d")
    elif how.startswith("optimizer_under_another_module"):
        opt = (g("torch.optim.adam", "Optimizer") + b")\x81" + b"(" + s("_hook_for_profile") + _vectorize(m) +
               s("defaults") + b"}" + s("param_groups") + b"]" + s("state") + b"}" + b"db")
        data = p2(b"(" + s("optimizer") + opt + b"d")
    elif how.startswith("finalizer_library"):
        lib = g("torch.library", "Library") + b")\x81" + b"(" + s("_op_impls") + _flag(m) + s("m") + NONE + b"db"
        data = p2(b"(" + s("lib") + lib + b"d")
    elif how == "legacy_protocol_version_formatted":
        return magic + p2(_ipv4_interface(m)) + pickle.dumps({}, protocol=2) + pickle.dumps([], protocol=2) + \
            pickle.dumps({}, protocol=2) + pickle.dumps([], protocol=2)
    else:
        assert how == "legacy_storage_keys_iterated"
        return (magic + pickle.dumps(1001, protocol=2) + pickle.dumps({}, protocol=2) +
                pickle.dumps({"a": 1}, protocol=2) + p2(_flag(m)))
    return _torch_zip_with_record(data) if zipped else data


@pytest.mark.parametrize("how,ext,loaders,want", [
    ("dict_key_equal_hash", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-D072"),
    ("dict_key_equal_hash_in_zip", ".pt", ("torch.load",), "CKG-D072"),
    ("array_assigned_list", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F081"),
    ("storage_type_name_list_in_zip", ".pt", ("torch.load",), "CKG-F081"),
    ("str_of_dict_value", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F081"),
    ("str_of_dict_value_in_zip", ".pt", ("torch.load",), "CKG-F081"),
    ("optimizer_under_another_module", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("optimizer_under_another_module_in_zip", ".pt", ("torch.load",), "CKG-F002"),
    ("finalizer_library", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-D072"),
    ("finalizer_library_in_zip", ".pt", ("torch.load",), "CKG-D072"),
    ("legacy_protocol_version_formatted", ".pt", ("torch.load",), "CKG-F081"),
    ("legacy_storage_keys_iterated", ".pt", ("torch.load",), "CKG-F081"),
])
def test_triggers_of_hunt_22(tmp_path, how, ext, loaders, want):
    m = marker_path()
    path = write(tmp_path, how + ext, hunt22_payload(m, how))
    assert_proven_and_dangerous(path, m, loaders=loaders, want=(want,))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


def test_benign_scheduler_and_version_records_are_not_dangerous(tmp_path):
    # Benign files the hunts' rules must not flag (a benign-file hunt found
    # them dangerous): torch 1.x's OneCycleLR keeps its annealing function
    # as a bound method of itself in its state_dict(); checkpoints save
    # torch.__version__ (TorchVersion, a str subclass); numpy record arrays.
    import numpy as np
    import torch
    m = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10)
    path = tmp_path / "one_cycle.pt"
    torch.save({"sched": sched.state_dict(), "opt": opt.state_dict(), "torch_version": torch.__version__}, path)
    r = scan(path)
    assert r["verdict"] == "suspicious", describe(r)
    rec = tmp_path / "recarray.pkl"
    rec.write_bytes(pickle.dumps({"r": np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")]),
                                  "c": np.char.array(["ab", "c"])}, protocol=2))
    r = scan(rec)
    assert r["verdict"] == "suspicious", describe(r)


# 29. Hunt 23: the same objects under other names, and finalizers. A
# denylisted class is found through every module that re-exports it
# (joblib._dask.BatchedCalls, torch.utils.data.dataloader's DataPipe
# wrappers), numpy.matlib.X is numpy.X, torch 1.x's foreach optimizers
# (torch.optim._multi_tensor) keep Optimizer's __setstate__ rule, and the
# finalizers of sunau's, aifc's and cgi's file wrappers call self.close():
# a BatchedCalls there runs typing.get_type_hints on a Namespace whose
# annotation is code (eval) when the loaded object is dropped.
def _get_type_hints_item(m):  # one BatchedCalls item: typing.get_type_hints(ns) evals ns.__annotations__
    expr = "__import__('pathlib').Path(%r).touch()" % m
    ns = _namespace_with("__annotations__", b"(" + s("x") + s(expr) + b"d")
    return tup(g("typing", "get_type_hints"), tup(ns), b"}")


def _dask_batched_calls(item):
    return (g("joblib._dask", "BatchedCalls") + b")\x81" + b"(" + s("items") + b"(" + item + b"l" + s("_backend") +
            s("sequential") + s("_n_jobs") + b"K\x01" + s("_reducer_callback") + NONE + s("_pickle_cache") + b"}" +
            b"db")


def hunt23_payload(m, how):
    zipped = how.endswith("_in_zip")
    if how.startswith("datapipe_wrapper_from_dataloader"):
        nested = b"cos\nsystem\n(S'touch " + m.encode() + b"'\ntR."
        data = (proto(3) + g("torch.utils.data.dataloader", "_IterDataPipeSerializationWrapper") + b")\x81" + b"(" +
                b(nested) + b"K\x00K\x00K\x00" + b"db.")
    elif how.startswith("finalizer_sunau"):
        obj = (g("sunau", "Au_read") + b")\x81" + b"(" + s("_file") + b"K\x01" + s("close") +
               _dask_batched_calls(_get_type_hints_item(m)) + b"db")
        data = p2(b"(" + s("audio") + obj + b"d")
    else:
        assert how.startswith("foreach_optimizer")
        opt = (g("torch.optim._multi_tensor", "Adam") + b")\x81" + b"(" + s("_hook_for_profile") +
               _dask_batched_calls(_get_type_hints_item(m)) + s("defaults") + b"}" + s("param_groups") + b"]" +
               s("state") + b"}" + b"db")
        data = p2(b"(" + s("optimizer") + opt + b"d")
    return _torch_zip_with_record(data) if zipped else data


@pytest.mark.parametrize("how,ext,loaders,want", [
    ("datapipe_wrapper_from_dataloader", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-D071"),
    ("datapipe_wrapper_from_dataloader_in_zip", ".pt", ("torch.load",), "CKG-D071"),
    ("finalizer_sunau", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-D072"),
    ("finalizer_sunau_in_zip", ".pt", ("torch.load",), "CKG-D072"),
    ("foreach_optimizer", ".pkl", ("pickle.loads", "numpy.load", "joblib.load"), "CKG-F002"),
    ("foreach_optimizer_in_zip", ".pt", ("torch.load",), "CKG-F002"),
])
def test_other_names_and_finalizers_of_hunt_23(tmp_path, how, ext, loaders, want):
    m = marker_path()
    path = write(tmp_path, how + ext, hunt23_payload(m, how))
    assert_proven_and_dangerous(path, m, loaders=loaders, want=(want,))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout


# 30. Hunt 24: finalizers. A class whose __del__ calls an attribute of the
# instance runs whatever a BUILD put there when the loaded object is
# dropped (at the latest when the loading process ends): zipfile's
# ZipFile.__del__ calls self._fpclose(self.fp) (as torch.utils._zip names
# it), torch's StorageWeakRef self._free_weak_ref(self.cdata) (as
# torch._subclasses names it). typing.get_type_hints there evals a
# Namespace's annotation.
def hunt24_payload(m, how):
    expr = "__import__('pathlib').Path(%r).touch()" % m
    ns = _namespace_with("__annotations__", b"(" + s("x") + s(expr) + b"d") + b"q\x01"
    gth = g("typing", "get_type_hints")
    if how.startswith("zipfile_of_torch_utils"):
        fin = (g("torch.utils._zip", "ZipFile") + b")\x81" + b"(" + s("fp") + b"h\x01" + s("_writing") + b"\x89" +
               s("mode") + s("r") + s("_fpclose") + gth + b"db")
    else:
        assert how.startswith("storage_weak_ref_of_fake_tensor")
        fin = (g("torch._subclasses.fake_tensor", "StorageWeakRef") + b")\x81" + b"(" + s("cdata") + b"h\x01" +
               s("_free_weak_ref") + gth + b"db")
    data = p2(b"(" + ns + fin + b"t")
    return _torch_zip_with_record(data) if how.endswith("_in_zip") else data


@pytest.mark.parametrize("how,ext,loaders", [
    ("zipfile_of_torch_utils", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
    ("zipfile_of_torch_utils_in_zip", ".pt", ("torch.load",)),
    ("storage_weak_ref_of_fake_tensor", ".pkl", ("pickle.loads", "numpy.load", "joblib.load")),
    ("storage_weak_ref_of_fake_tensor_in_zip", ".pt", ("torch.load",)),
])
def test_finalizers_of_hunt_24(tmp_path, how, ext, loaders):
    m = marker_path()
    path = write(tmp_path, how + ext, hunt24_payload(m, how))
    assert_proven_and_dangerous(path, m, loaders=loaders, want=("CKG-D074",))
    out = run_cli("inspect", "--no-digest", str(path))
    assert out.returncode == 2, out.stdout
