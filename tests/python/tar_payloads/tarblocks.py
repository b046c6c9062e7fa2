"""Tar blocks for the generators beside this file: a ustar header (or an old
GNU one with a sparse map), its checksum spelled as tarfile reads it, and
padding to 512 bytes."""


def header(name, size=0, typeflag=b"0", size_field=None, sparse=None, spell=None):
    """A 512-byte header. `size_field` replaces the octal size; `sparse`
    (offset, numbytes, realsize fields) makes it an old GNU header with one
    sparse record; `spell` writes the checksum as '0o...', '+...' or with an
    underscore (tarfile's int(s, 8) takes them)."""
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = size_field if size_field is not None else b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[148:156] = b" " * 8
    b[156:157] = typeflag
    if sparse is None:
        b[257:263] = b"ustar\0"
        b[263:265] = b"00"
    else:
        b[257:265] = b"ustar  \0"  # old GNU magic
        off, num, real = sparse
        b[386:398] = off
        b[398:410] = num
        b[482] = 0  # isextended
        b[483:495] = real
    s = sum(b)  # the checksum field counts as spaces
    if spell is None:
        b[148:156] = b"%06o\0 " % s
    else:
        b[148:156] = {"0o": b"0o%06o" % s, "plus": b"+%06o\0" % s,
                      "underscore": b"%03o_%03o" % (s >> 9, s & 0o777)}[spell][:8].ljust(8, b"\0")
    return bytes(b)


def pad(b):
    return b + b"\0" * (-len(b) % 512)


def write_legacy_tar(out, blocks):
    """Writes `blocks` followed by the 'tensors' and 'pickle' members a
    legacy checkpoint needs after 'storages' (no tensors, an empty dict) and
    the end-of-archive blocks."""
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))


def payload(marker):
    """The pickle torch unpickles from 'storages': posix.system('touch MARKER')."""
    return b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntR."
