#!/usr/bin/python3
"""Test oracle: CPython's own pickletools.dis of every pickle in a model file.

Prints JSON: {"sources": [{"entry": NAME, "pickles": [DIS_TEXT, ...], "error": MSG|null}]}.
The pickles are found independently of ckptguard's C++ code, with the standard
library only:
  * a zip (first bytes PK\\x03\\x04): every entry, named by the central
    directory (as torch reads it), data located through its local header and
    inflated with zlib when deflated; an entry holds a pickle when its name
    ends in .pkl or its data starts with PROTO 2..5; .npy entries with an
    object dtype hold a pickle after their header;
  * a .npy file (\\x93NUMPY) with an object dtype: the pickle after the header;
  * safetensors (u64 header length, then '{'): no pickle;
  * anything else: a stream of pickles from offset 0 until the end; a legacy
    torch file (first pickle the magic number, or second the protocol
    version 1001) is five pickles.
Each pickle is disassembled with pickletools.dis (default options) from a
BytesIO over its source, so offsets are relative to the entry (or the file).
"""
import io
import json
import pickletools
import struct
import sys
import zipfile
import zlib

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def npy_pickle_offset(data):
    """Offset of the pickle in an object-dtype .npy, or None."""
    if not data.startswith(b"\x93NUMPY") or len(data) < 10:
        return None
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    else:
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    header = data[start:start + hlen].decode("latin-1")
    if "'descr': '|O'" not in header:
        return None
    return start + hlen


def is_safetensors(data):
    if len(data) < 9:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    return n <= len(data) - 8 and data[8:9] == b"{"


def single_int(data, value):
    ops = list(pickletools.genops(data))
    names = [op.name for op, _, _ in ops if op.name != "PROTO"]
    return len(names) == 2 and names[1] == "STOP" and ops[-2][1] == value


def dis_stream(data, start=0):
    """Pickles one after another; a legacy torch stream (first pickle the
    magic number, or second the protocol version 1001) is five pickles."""
    pickles, error = [], None
    f = io.BytesIO(data)
    f.seek(start)
    legacy = False
    while f.tell() < len(data):
        if legacy and len(pickles) == 5:
            break
        out = io.StringIO()
        begin = f.tell()
        try:
            pickletools.dis(f, out=out)
        except Exception as exc:  # pickletools raises ValueError and others
            pickles.append(out.getvalue())
            error = "%s: %s" % (type(exc).__name__, exc)
            break
        pickles.append(out.getvalue())
        if len(pickles) == 1:
            legacy = single_int(data[begin:f.tell()], LEGACY_MAGIC)
        elif len(pickles) == 2 and not legacy:
            legacy = single_int(data[begin:f.tell()], 1001)
    return {"pickles": pickles, "error": error}


def zip_sources(data):
    sources = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            off = info.header_offset
            name_len, extra_len = struct.unpack("<HH", data[off + 26:off + 30])
            begin = off + 30 + name_len + extra_len
            raw = data[begin:begin + info.compress_size]
            if info.compress_type == zipfile.ZIP_DEFLATED:
                raw = zlib.decompressobj(-15).decompress(raw)
            elif info.compress_type != zipfile.ZIP_STORED:
                continue
            start = npy_pickle_offset(raw)
            if start is None:
                looks_like_pickle = len(raw) >= 2 and raw[0] == 0x80 and 2 <= raw[1] <= 5
                if not (info.filename.endswith(".pkl") or looks_like_pickle):
                    continue
                start = 0
            src = dis_stream(raw, start)
            src["entry"] = info.filename
            sources.append(src)
    return sources


def main():
    data = open(sys.argv[1], "rb").read()
    if data.startswith(b"PK\x03\x04"):
        sources = zip_sources(data)
    elif data.startswith(b"\x93NUMPY"):
        start = npy_pickle_offset(data)
        sources = [] if start is None else [dict(dis_stream(data, start), entry="")]
    elif is_safetensors(data):
        sources = []
    else:
        sources = [dict(dis_stream(data), entry="")]
    json.dump({"sources": sources}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
