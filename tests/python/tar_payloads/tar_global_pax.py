"""Legacy torch tar: a global pax header (g) says size=512; a per-file pax header (x, a comment only) and
then storages (header size 0). tarfile starts each x header from the global records, so storages is 512
bytes; libarchive does not apply g records (0 bytes) and reads the data block as the next header.
usage: python3 tar_global_pax.py OUT MARKER"""
import sys

from tarblocks import header, pad, write_legacy_tar

def main(out, marker):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    r1, r2 = b"12 size=512\n", b"16 comment=abcd\n"
    blocks = [header(b"GlobalHead", len(r1), b"g"), pad(r1),
              header(b"PaxHeader/2", len(r2), b"x"), pad(r2),
              header(b"storages", 0),
              header(payload, 0)]      # tarfile: storages' 512 bytes; libarchive: a header
    write_legacy_tar(out, blocks)

if __name__ == "__main__":
    main(*sys.argv[1:])
