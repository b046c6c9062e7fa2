"""Zip archives that Python's zipfile (numpy.load, zipfile + pickle) and
torch's reader (miniz) read differently from ckptguard's first reading: each
test builds the archive, proves with the real loader in a subprocess (Debian's
/usr/bin/python3) that loading it writes the marker file /tmp/ckptguard-pwned-*,
removes the marker, and checks that `ckptguard scan` calls the file dangerous
and `ckptguard inspect` refuses it.

- a deflated member that does not inflate cleanly: zipfile streams the prefix
  that inflates (cut at the declared size), and pickle.load runs it first;
- zipfile's reading of the directory: records read until the directory's size
  is used up (not the end record's count), offsets shifted by `concat` (the
  directory taken as the bytes that end at the end record), disk numbers
  ignored, names cut at NUL;
- torch 1.13's miniz reads a stored entry's uncompressed size, into what
  follows it."""
import glob
import io
import os
import struct
import subprocess
import zipfile
import zlib

import pytest

from ckg import PYTHON, describe, marker_path, run_cli, scan

LOADERS = {
    # numpy.load of an .npz reads a member when it is indexed.
    "numpy.load": "import numpy,sys\nr=numpy.load(sys.argv[1], allow_pickle=True)\n[r[k] for k in r.files]",
    # A user who unpickles the .pkl members of a zip.
    "zipfile+pickle": ("import zipfile,pickle,sys\nz=zipfile.ZipFile(sys.argv[1])\n"
                       "[pickle.loads(z.read(n)) for n in z.namelist() if n.endswith('.pkl')]"),
    "torch.load": "import torch,sys; torch.load(sys.argv[1])",
}


def load_runs_payload(path, marker, loader):
    try:
        subprocess.run([PYTHON, "-c", LOADERS[loader], str(path)], capture_output=True, timeout=120)
        return os.path.exists(marker)
    finally:
        if os.path.exists(marker):
            os.remove(marker)


def assert_proven_and_dangerous(path, marker, loader, anomaly=None):
    assert load_runs_payload(path, marker, loader), "%s did not run the payload of %s" % (loader, path)
    r = scan(path)
    assert r["verdict"] == "dangerous", describe(r)
    if anomaly is not None:
        assert any(anomaly in f["message"] for f in r["findings"]), describe(r)
    inspected = run_cli("inspect", str(path))
    assert inspected.returncode != 0, inspected.stdout
    return r


# --- payloads and a zip assembler ----------------------------------------------
def payload(marker):  # protocol 0 text: posix.system('touch MARKER'), then POP
    return b"cposix\nsystem\n(V" + ("touch " + marker).encode() + b"\ntR0"


def npy(descr, data, shape):
    header = ("{'descr': %s, 'fortran_order': False, 'shape': (%d,), }" % (descr, shape)).encode()
    header += b" " * ((-(10 + len(header) + 1)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


def object_npy(marker, tail=b"(lp0\n."):  # an object array: its data is a pickle
    return npy("'|O'", b"\x80\x02" + payload(marker) + tail, 1)


def float_npy():
    return npy("'<f4'", b"\0" * 16, 4)


def local_header(name, data, crc=None, method=0, usize=None, time=0x21):
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, time, 0x21,
                       zlib.crc32(data) if crc is None else crc, len(data),
                       len(data) if usize is None else usize, len(name), 0) + name


def central_record(name, data, offset, crc=None, method=0, usize=None, time=0x21, csize=None):
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, time, 0x21,
                       zlib.crc32(data) if crc is None else crc, len(data) if csize is None else csize,
                       len(data) if usize is None else usize, len(name), 0, 0, 0, 0, 0, offset) + name


def end_record(count, cd_len, cd_offset, disk=(0, 0)):
    return struct.pack("<IHHHHIIH", 0x06054B50, disk[0], disk[1], count, count, cd_len, cd_offset, 0)


def stored_zip(members, count=None, disk=(0, 0)):
    """members: [(name bytes, data)] stored; the end record says `count` entries."""
    body, cd = b"", b""
    for name, data in members:
        cd += central_record(name, data, len(body))
        body += local_header(name, data) + data
    return body + cd + end_record(len(members) if count is None else count, len(cd), len(body), disk)


def deflate(data, finish=True):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + (c.flush() if finish else c.flush(zlib.Z_SYNC_FLUSH))


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- 1. deflated members that do not inflate cleanly ---------------------------
@pytest.mark.parametrize("how", ["longer", "unfinished", "garbage"])
def test_npz_member_whose_deflate_stream_breaks_after_the_payload(tmp_path, how):
    m = marker_path()
    if how == "longer":  # inflates past the declared size: zipfile stops there
        raw = object_npy(m)
        data = deflate(raw + b"JUNK" * 100)
    elif how == "unfinished":  # no final block: the sizes and CRC describe the prefix
        raw = object_npy(m)
        data = deflate(raw, finish=False)
    else:  # the payload, a large pad, then bytes that break the stream
        raw = object_npy(m, tail=b"B" + struct.pack("<I", 300000) + os.urandom(300000) + b".")
        data = deflate(raw, finish=False) + b"\xff" * 64
    name = b"a.npy"
    body = local_header(name, data, crc=zlib.crc32(raw), method=8, usize=len(raw)) + data
    cd = central_record(name, data, 0, crc=zlib.crc32(raw), method=8, usize=len(raw))
    path = write(tmp_path, "deflate_%s.npz" % how, body + cd + end_record(1, len(cd), len(body)))
    assert_proven_and_dangerous(path, m, "numpy.load", anomaly="bytes decoded before are read")


def test_npz_member_that_inflates_whole_is_still_checked(tmp_path):
    # Control: a clean deflated object member is scanned as before.
    m = marker_path()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.npy", object_npy(m))
    path = write(tmp_path, "clean_deflate.npz", buf.getvalue())
    assert_proven_and_dangerous(path, m, "numpy.load")


# --- 2. zipfile's reading of the directory -------------------------------------
@pytest.mark.parametrize("count", [1, 0])
def test_npz_end_record_counting_fewer_entries_than_the_directory_holds(tmp_path, count):
    # zipfile reads records until the directory's size is used up.
    m = marker_path()
    path = write(tmp_path, "count%d.npz" % count,
                 stored_zip([(b"a.npy", float_npy()), (b"b.npy", object_npy(m))], count=count))
    assert_proven_and_dangerous(path, m, "numpy.load", anomaly="zipfile")


def test_npz_directory_found_by_concat_shift(tmp_path):
    # The end record's offset names a benign directory (CD1); zipfile reads
    # the directory of the same size that ends at the end record (CD2), and
    # shifts its offsets by concat = end_pos - cd_size - cd_offset.
    m = marker_path()
    a, b = npy("'<f4'", b"\0" * 256, 64), object_npy(m)
    body = local_header(b"a.npy", a) + a
    off_b = len(body)
    body += local_header(b"b.npy", b) + b
    cd1 = central_record(b"a.npy", a, 0)
    cd2 = central_record(b"b.npy", b, off_b - len(cd1))  # + concat (== len(cd1)) lands on b.npy
    assert len(cd1) == len(cd2)
    path = write(tmp_path, "concat.npz", body + cd1 + cd2 + end_record(1, len(cd1), len(body)))
    assert_proven_and_dangerous(path, m, "numpy.load", anomaly="shifted")


@pytest.mark.parametrize("disk", [(1, 1), (2, 2), (0, 3)])
def test_npz_end_record_with_disk_numbers(tmp_path, disk):
    # zipfile ignores the end record's disk numbers; miniz reads 1/1 too.
    m = marker_path()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.npy", object_npy(m))
    data = bytearray(buf.getvalue())
    end = data.rfind(b"PK\x05\x06")
    data[end + 4:end + 8] = struct.pack("<HH", *disk)
    path = write(tmp_path, "disk%d%d.npz" % disk, bytes(data))
    assert_proven_and_dangerous(path, m, "numpy.load")


def test_zip_member_name_cut_at_nul(tmp_path):
    # ZipInfo cuts 'x.pkl\0.bin' to 'x.pkl'; the pickle (PROTO 1, then
    # trailing bytes) is no pickle ckptguard finds by content.
    m = marker_path()
    data = b"\x80\x01" + payload(m) + b"(lp0\n.trailing junk"
    path = write(tmp_path, "nul_name.zip", stored_zip([(b"x.pkl\x00.bin", data)]))
    assert_proven_and_dangerous(path, m, "zipfile+pickle", anomaly="'x.pkl'")


# --- 3. torch's reader reads a stored entry's uncompressed size ----------------
def test_torch_stored_data_pkl_read_to_its_uncompressed_size(tmp_path):
    # data.pkl holds 7 bytes (PROTO 2, BINBYTES of the next local header) but
    # declares 113 uncompressed: miniz reads 113, through archive/data/0's
    # local header (the BINBYTES operand) into its data: POP, the payload.
    m = marker_path()
    record = b"0" + payload(m) + b"(lp0\n."
    record_header = local_header(b"archive/data/0", record)
    pickle = b"\x80\x02B" + struct.pack("<I", len(record_header))
    usize = len(pickle) + len(record_header) + len(record)
    body = local_header(b"archive/data.pkl", pickle, usize=usize) + pickle
    off_record = len(body)
    body += record_header + record
    off_version = len(body)
    body += local_header(b"archive/version", b"3\n") + b"3\n"
    cd = (central_record(b"archive/data.pkl", pickle, 0, usize=usize)
          + central_record(b"archive/data/0", record, off_record)
          + central_record(b"archive/version", b"3\n", off_version))
    path = write(tmp_path, "stored_usize.pt", body + cd + end_record(3, len(cd), len(body)))
    assert_proven_and_dangerous(path, m, "torch.load", anomaly="stored entry of 7 bytes")


# --- 4. duplicate names: the copy torch's reader (miniz) finds -----------------
# miniz sorts the directory by name (an unstable heap sort, case ignored) and
# binary-searches it, so which of several entries of one name torch reads
# follows only from the whole directory. `inspect --allow-anomalies` reads
# "what torch reads": it must read the same copies as torch.load.
DUPLICATES_SCRIPT = r"""
import io, json, random, sys, zipfile, warnings, torch
warnings.simplefilter("ignore")
out = sys.argv[1]
def torch_members(key, values):
    buf = io.BytesIO()
    torch.save({key: torch.tensor(values, dtype=torch.float32)}, buf)
    z = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    return {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}
rng = random.Random(1307)
made = []
for case in range(24):
    copies = 2 + case % 3
    versions = [torch_members("k%d" % i, [float(i), case, 1.0, 2.0]) for i in range(copies)]
    entries = []
    for i, m in enumerate(versions):
        # data.pkl repeated (case % 2 == 0) or data/0 repeated (odd cases)
        if case % 2 == 0 or i == 0:
            entries.append(("data.pkl", m["data.pkl"]))
        entries.append(("data/0", m["data/0"]))
    entries += [("version", b"3\n")] + [("filler%d" % j, b"") for j in range(rng.randrange(0, 9))]
    first = entries.pop(rng.randrange(len(entries)))
    rng.shuffle(entries)
    entries.insert(0, first)
    if case % 5 == 4:  # one copy spelled in capitals: miniz ignores case
        name, data = entries[-1]
        entries[-1] = (name.upper() if name.startswith("data") else name, data)
    path = "%s/dup%d.pt" % (out, case)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr("a/" + name, data)
    try:
        d = torch.load(path, weights_only=True)
        got = {k: v.numpy().tobytes().hex() for k, v in d.items()}
    except Exception as e:
        got = None
    made.append((path, got))
print(json.dumps(made))
"""


def test_duplicate_names_read_as_torch_reads_them(tmp_path):
    import json
    made = subprocess.run([PYTHON, "-c", DUPLICATES_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          timeout=600)
    assert made.returncode == 0, made.stderr
    compared = 0
    for path, torch_values in json.loads(made.stdout):
        r = run_cli("inspect", "--allow-anomalies", "--json", path)
        if torch_values is None:
            continue  # torch refuses it (a capitals-only data.pkl it finds no prefix for, say)
        assert r.returncode == 0, (path, r.stdout, r.stderr)
        report = json.loads(r.stdout)["files"][0]
        ours = {k: v["sha256"] for k, v in report["tensors"].items()}
        import hashlib
        want = {k: hashlib.sha256(bytes.fromhex(v)).hexdigest() for k, v in torch_values.items()}
        assert ours == want, (path, report.get("anomalies"))
        kinds = {a["kind"] for a in report["anomalies"]}
        assert kinds & {"zip.duplicate_name", "zip.case_duplicate_name"}, (path, kinds)
        compared += 1
    assert compared >= 16


# --- benign: archives both readers read alike have no zipfile view --------------
def test_benign_archives_have_one_reading(tmp_path):
    made = subprocess.run(
        [PYTHON, "-c", "import numpy, torch, sys\n"
                       "numpy.savez(sys.argv[1] + '/a.npz', x=numpy.arange(4))\n"
                       "numpy.savez_compressed(sys.argv[1] + '/b.npz', x=numpy.arange(4))\n"
                       "torch.save({'w': torch.ones(3)}, sys.argv[1] + '/c.pt')\n", str(tmp_path)],
        capture_output=True, timeout=300)
    assert made.returncode == 0, made.stderr
    for name in ("a.npz", "b.npz", "c.pt"):
        r = scan(tmp_path / name)
        assert r["verdict"] == "safe", describe(r)


def test_no_markers_left():
    assert not glob.glob("/tmp/ckptguard-pwned-%d-*" % os.getpid())
