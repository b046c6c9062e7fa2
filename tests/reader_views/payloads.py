"""Hostile files that each real reader runs, one per "reader's view" class.

    payloads.py make CLASS OUT MARKER   write the file OUT whose payload touches MARKER
                                        (MARKER "-": the same layout, harmless data)
    payloads.py load CLASS FILE         load FILE the way that class's real reader does

The payload is os.system("touch MARKER"): harmless, and proof that loading ran
code. reader_views_test.cc makes each file, loads it here in a subprocess,
checks that MARKER appeared (and removes it), then checks that
`ckptguard scan` calls the file dangerous. Only Debian's python3, numpy,
torch and joblib are used.
"""
import bz2
import gzip
import io
import lzma
import os
import pickle
import struct
import sys
import zipfile
import zlib


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def payload_pickle(marker, protocol=2):
    return pickle.dumps(Payload(marker), protocol=protocol)


def benign_pickle(protocol=2):
    return pickle.dumps({"epoch": 3, "lr": 0.1}, protocol=protocol)


def body(p):
    """The opcodes of a pickle after its PROTO (and FRAME, if any)."""
    assert p[0] == 0x80
    rest = p[2:]
    if rest[:1] == b"\x95":
        rest = rest[9:]
    return rest


def gzip_member(data):
    return gzip.compress(data, mtime=0)


def make(cls, marker):
    # marker "-": the same layout around harmless data (no view may call it dangerous)
    benign = marker == "-"
    hostile = benign_pickle() if benign else payload_pickle(marker)
    obj = {"benign": [1, 2.5, "x"]} if benign else Payload(marker)
    if cls == "frame_too_long":
        # A FRAME that claims more bytes than the file has: the C unpickler
        # stops at it, pickle._Unpickler reads the short frame and runs it.
        return b"\x80\x04\x95" + struct.pack("<Q", len(hostile) + 4096) + body(hostile)
    if cls == "frame_stop_skips":
        # STOP inside a frame, junk after it in the frame, then the hostile
        # pickle: the C reader's next load starts at the junk, the
        # pure-Python reader's at the frame's end.
        first = body(benign_pickle(4)) + b"\xff\xff\xff"
        return b"\x80\x04\x95" + struct.pack("<Q", len(first)) + first + hostile
    if cls == "second_pickle":
        return benign_pickle() + hostile
    if cls == "gzip_split_members":
        half = len(hostile) // 2
        return gzip_member(hostile[:half]) + gzip_member(hostile[half:])
    if cls == "gzip_zero_padding":
        half = len(hostile) // 2
        return gzip_member(hostile[:half]) + b"\0" * 16 + gzip_member(hostile[half:])
    if cls == "gzip_trailing_garbage":
        return gzip_member(hostile) + b"this is not gzip data"
    if cls == "gzip_bad_crc":
        member = bytearray(gzip_member(hostile))
        member[-8] ^= 0xFF  # the CRC-32: gzip checks it only after handing out the data
        return bytes(member)
    if cls == "gzip_reserved_flags":
        member = bytearray(gzip_member(hostile))
        member[3] |= 0xE0  # reserved flag bits: zlib refuses them, Python's gzip ignores them
        return bytes(member)
    if cls == "lzma_alone":
        return lzma.compress(hostile, format=lzma.FORMAT_ALONE)
    if cls == "zlib_raw":
        return zlib.compress(hostile)
    if cls == "bz2_trailing_garbage":
        return bz2.compress(hostile) + b"garbage after the stream"
    if cls == "npy_appended_object_array":
        import numpy as np
        buf = io.BytesIO()
        np.save(buf, np.arange(6, dtype=np.float32))
        np.save(buf, np.array([obj], dtype=object), allow_pickle=True)
        return buf.getvalue()
    if cls == "zip_protocol0_member":
        # A protocol-0 pickle under a name that says nothing: zipfile + pickle.load runs it.
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("model/weights.bin", pickle.dumps({"benign": 1} if benign else Payload(marker), protocol=0))
        return buf.getvalue()
    if cls in ("zip_prefixed", "zip_bzip2_member", "zip_lzma_member", "zip_duplicate_name"):
        method = {"zip_bzip2_member": zipfile.ZIP_BZIP2, "zip_lzma_member": zipfile.ZIP_LZMA}.get(cls, zipfile.ZIP_STORED)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as z:
            if cls == "zip_duplicate_name":
                z.writestr("archive/data.pkl", benign_pickle())
                z.writestr("archive/version", "3\n")
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    z.writestr("archive/data.pkl", hostile)
            else:
                z.writestr("archive/data.pkl", hostile)
                z.writestr("archive/version", "3\n")
        data = buf.getvalue()
        if cls == "zip_prefixed":
            data = b"not a pickle, not a zip header: data before the archive\n" * 4 + data
        return data
    if cls == "legacy_tar_second_storage":
        # The payload hides behind a real storage record's raw bytes in 'storages'.
        import tarfile
        import torch
        storages = (pickle.dumps(2, protocol=2) + pickle.dumps(("0", "cpu", torch.FloatStorage), protocol=2) +
                    struct.pack("<q", 1) + struct.pack("<f", 1.5) +
                    (pickle.dumps(("1", "cpu", torch.FloatStorage), protocol=2) if benign else hostile) +
                    struct.pack("<q", 0) + pickle.dumps([], protocol=2))
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in (("storages", storages), ("tensors", pickle.dumps(0, protocol=2)),
                               ("pickle", pickle.dumps({}, protocol=2))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()
    if cls == "legacy_tar":
        # torch < 0.4's format: torch.load tries it first and unpickles the
        # members 'storages', 'tensors' and then 'pickle'.
        import tarfile
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name, data in (("sys_info", pickle.dumps({"little_endian": True}, protocol=2)),
                               ("storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)),
                               ("tensors", pickle.dumps(0, protocol=2)),
                               ("pickle", hostile)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()
    if cls == "sevenz_pickle":
        import subprocess
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "model.pkl"), "wb") as f:
                f.write(hostile)
            out = os.path.join(d, "out.7z")
            subprocess.run(["bsdtar", "--format", "7zip", "-cf", out, "-C", d, "model.pkl"], check=True)
            with open(out, "rb") as f:
                return f.read()
    if cls == "joblib_resumes_after_array":
        import joblib
        import numpy as np
        out = io.BytesIO()
        joblib.dump({"weights": np.arange(64, dtype=np.float64), "hook": obj,
                     "more": np.ones((3, 5), dtype=np.int16)}, out)
        return out.getvalue()
    raise SystemExit("unknown class " + cls)


def load(cls, path):
    if cls in ("frame_too_long",):
        with open(path, "rb") as f:
            pickle._load(f)
        return
    if cls in ("frame_stop_skips",):
        with open(path, "rb") as f:
            pickle._Unpickler(f).load()
            pickle._Unpickler(f).load()
        return
    if cls == "second_pickle":
        with open(path, "rb") as f:
            pickle.load(f)
            pickle.load(f)
        return
    if cls.startswith("gzip_"):
        with gzip.open(path, "rb") as f:
            pickle.load(f)
        return
    if cls == "lzma_alone":
        with lzma.open(path, "rb") as f:
            pickle.load(f)
        return
    if cls == "zlib_raw":
        with open(path, "rb") as f:
            pickle.loads(zlib.decompress(f.read()))
        return
    if cls == "bz2_trailing_garbage":
        with bz2.open(path, "rb") as f:
            pickle.load(f)
        return
    if cls == "npy_appended_object_array":
        import numpy as np
        with open(path, "rb") as f:
            np.load(f)
            np.load(f, allow_pickle=True)
        return
    if cls == "zip_protocol0_member":
        with zipfile.ZipFile(path) as z, z.open("model/weights.bin") as f:
            pickle.load(f)
        return
    if cls.startswith("zip_"):
        with zipfile.ZipFile(path) as z, z.open("archive/data.pkl") as f:
            pickle.load(f)
        return
    if cls == "joblib_resumes_after_array":
        import joblib
        joblib.load(path)
        return
    if cls in ("legacy_tar", "legacy_tar_second_storage"):
        import torch
        torch.load(path)
        return
    if cls == "sevenz_pickle":
        import subprocess
        data = subprocess.run(["bsdtar", "-xOf", path, "model.pkl"], check=True, stdout=subprocess.PIPE).stdout
        pickle.loads(data)
        return
    raise SystemExit("unknown class " + cls)


if __name__ == "__main__":
    what, cls, path = sys.argv[1:4]
    if what == "make":
        with open(path, "wb") as f:
            f.write(make(cls, sys.argv[4]))
    else:
        try:
            load(cls, path)
        except Exception as e:  # the payload ran before the error, or the test fails on the marker
            print("load raised %s: %s" % (type(e).__name__, e), file=sys.stderr)
