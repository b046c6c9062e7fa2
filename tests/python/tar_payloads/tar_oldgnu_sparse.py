"""Legacy torch tar whose 'storages' is an old-GNU sparse member (type 'S') with one sparse entry whose
numbytes field is spelled '+1000' (tarfile's nti: int('+1000', 8) = 512; C readers' octal parse: 0).
tarfile copies the 512 stored bytes (the payload); libarchive yields 512 zero bytes.
usage: python3 tar_oldgnu_sparse.py OUT MARKER [plus|0o|underscore]"""
import sys

from tarblocks import header, write_legacy_tar

def main(out, marker, kind="plus"):
    num = {"plus": b"+00000001000", "0o": b"0o0000001000", "underscore": b"0_0000001000"}[kind]
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    blocks = [header(b"storages", 512, b"S", sparse=(b"00000000000\0", num, b"00000001000\0")),
              header(payload, 0)]       # tarfile: the stored sparse data; libarchive (0 stored bytes): a header
    write_legacy_tar(out, blocks)

if __name__ == "__main__":
    main(*sys.argv[1:])
