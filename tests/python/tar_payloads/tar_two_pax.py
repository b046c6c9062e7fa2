"""Legacy torch tar: two pax headers before 'storages' (header size 0), read differently by Python's
tarfile and libarchive; either way tarfile finds storages 512 bytes long and libarchive 0 bytes, and
libarchive reads the data block as the next header.
  (no style) two per-file (x) headers, the first size=512, the second size=0: tarfile applies the outer
             (first) one last; libarchive applies them in order, so the second wins.
  global     a global (g) header size=512, then a per-file (x) header with a comment only: tarfile starts
             each x header from the global records; libarchive does not apply g records.
usage: python3 tar_two_pax.py OUT MARKER [global]"""
import sys

from tarblocks import header, pad, write_legacy_tar

def main(out, marker, style=None):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    if style == "global":
        (n1, r1, t1), (n2, r2) = (b"GlobalHead", b"12 size=512\n", b"g"), (b"PaxHeader/2", b"16 comment=abcd\n")
    else:
        (n1, r1, t1), (n2, r2) = (b"PaxHeader/1", b"12 size=512\n", b"x"), (b"PaxHeader/2", b"10 size=0\n")
    blocks = [header(n1, len(r1), t1), pad(r1),
              header(n2, len(r2), b"x"), pad(r2),
              header(b"storages", 0),
              header(payload, 0)]      # tarfile: storages' 512 bytes; libarchive: a header
    write_legacy_tar(out, blocks)

if __name__ == "__main__":
    main(*sys.argv[1:])
