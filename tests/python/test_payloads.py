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
import os
import struct
import zlib

import pytest

from ckg import describe, load_runs_payload, marker_path, scan


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


def test_no_markers_left():
    assert not glob.glob("/tmp/ckptguard-pwned-%d-*" % os.getpid())
