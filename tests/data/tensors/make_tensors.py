"""Makes the tensor-kind corpus of issue 17 (quantized tensors) with Debian's
torch 1.13: /usr/bin/python3 tests/data/tensors/make_tensors.py. Each file is
what torch.save writes; tests/python/test_tensor_kinds.py loads them with torch
and with ckptguard and compares the values."""
import collections
import os
import sys

import torch

OUT = os.path.dirname(os.path.abspath(__file__))


def save(name, obj):
    torch.save(obj, os.path.join(OUT, name))


class WithMetadata:
    """Pickles a tensor as torch >= 2.0 does when it has the conjugate or
    negative bit: _rebuild_tensor_v2(..., metadata) with {'conj': True} and/or
    {'neg': True} (torch.save of 1.13 drops the bits, so the call is written
    through torch 1.13's own pickler and persistent ids, in 2.x's layout)."""

    def __init__(self, tensor, metadata):
        self.tensor, self.metadata = tensor, metadata

    def __reduce_ex__(self, protocol):
        t = self.tensor
        return (torch._utils._rebuild_tensor_v2,
                (t.storage(), t.storage_offset(), tuple(t.size()), t.stride(), False, collections.OrderedDict(),
                 self.metadata))


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    """torch 2.x's (torch/_utils.py), which torch 1.13 lacks: here only so
    that pickle can name it."""
    raise NotImplementedError


_rebuild_parameter_with_state.__module__ = "torch._utils"


class WithState:
    """Pickles as torch >= 2.0's Parameter.__reduce_ex__ does for a
    parameter with attributes (torch._utils._get_obj_state gives vars(), or a
    (vars, slots) pair for classes with __slots__)."""

    def __init__(self, data, requires_grad, state):
        self.data, self.requires_grad, self.state = data, requires_grad, state

    def __reduce_ex__(self, protocol):
        return (torch._utils._rebuild_parameter_with_state,
                (self.data, self.requires_grad, collections.OrderedDict(), self.state))


class V1:
    """Pickles a tensor as torch <= 0.3 did: torch._utils._rebuild_tensor(
    storage, storage_offset, size, stride), which torch's weights_only loader
    still accepts (torch 1.13 writes _rebuild_tensor_v2, so the call is
    written through its pickler)."""

    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce_ex__(self, protocol):
        t = self.tensor
        return (torch._utils._rebuild_tensor, (t.storage(), t.storage_offset(), tuple(t.size()), t.stride()))


def rebuild_tensor_v1():
    """The v1 rebuild function in both containers torch 0.3 era files reach
    users in: the legacy format and (re-saved) the zip format."""
    torch.manual_seed(3)
    base = torch.randn(5, 7)
    ints = torch.arange(24, dtype=torch.int64).reshape(2, 3, 4)
    obj = {"features.0.weight": V1(base), "features.0.bias": V1(base[0]), "transposed": V1(base.t()),
           "slice": V1(base[1:4, 2:6]), "ints": V1(ints), "scalar": V1(torch.tensor(2.5))}
    save("rebuild_tensor_v1.pt", obj)
    torch.save(obj, os.path.join(OUT, "rebuild_tensor_v1_legacy.pt"), _use_new_zipfile_serialization=False)


def main():
    rebuild_tensor_v1()
    torch.manual_seed(17)
    x = torch.randn(4, 6) * 3
    per_tensor = {
        "quint8": torch.quantize_per_tensor(x, 0.05, 128, torch.quint8),
        "qint8": torch.quantize_per_tensor(x, 0.025, -3, torch.qint8),
        "qint32": torch.quantize_per_tensor(x * 1000, 1e-3, 7, torch.qint32),
        # Views keep their storage, offset and strides.
        "quint8_t": torch.quantize_per_tensor(x, 0.05, 128, torch.quint8).t(),
        "qint8_slice": torch.quantize_per_tensor(x, 0.5, 0, torch.qint8)[1:, 2:5],
        "scalar": torch.quantize_per_tensor(torch.tensor(1.5), 0.1, 10, torch.quint8),
    }
    save("quantized_per_tensor.pt", per_tensor)

    scales = torch.tensor([0.1, 0.2, 0.05, 0.5], dtype=torch.double)
    zero_points = torch.tensor([0, 3, -2, 10], dtype=torch.long)
    per_channel = {
        "qint8_axis0": torch.quantize_per_channel(x, scales, zero_points, 0, torch.qint8),
        "quint8_axis1": torch.quantize_per_channel(
            x, torch.linspace(0.02, 0.2, 6, dtype=torch.double), torch.arange(6) * 10 + 60, 1, torch.quint8),
        "qint32_axis0": torch.quantize_per_channel(x * 100, scales, zero_points, 0, torch.qint32),
    }
    # per_channel_affine_float_qparams: float zero points (embedding bags).
    per_channel["float_qparams"] = torch.quantize_per_channel(
        x, torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([1.0, -2.5, 0.0, 3.25]), 0, torch.quint8)
    assert per_channel["float_qparams"].qscheme() == torch.per_channel_affine_float_qparams
    save("quantized_per_channel.pt", per_channel)
    # Packed values: quint4x2 (two per byte) and quint2x4 (four), as
    # 4-bit embedding bags store them; an odd count leaves half a byte.
    packed = {
        "quint4x2": torch.quantize_per_tensor(x, 0.5, 8, torch.quint4x2),
        "quint4x2_odd": torch.quantize_per_tensor(torch.linspace(-1, 1, 5), 0.2, 7, torch.quint4x2),
        "quint2x4": torch.quantize_per_tensor(x[:, :5], 2.0, 1, torch.quint2x4),
        "quint4x2_float_qparams": torch.quantize_per_channel(
            x, torch.tensor([0.5, 0.25, 1.0, 0.75]), torch.tensor([7.0, 8.0, 6.5, 7.25]), 0, torch.quint4x2),
    }
    save("quantized_packed.pt", packed)
    # What torch's dequantize() gives for each, as plain float32 tensors
    # (checkpoint_test compares Checkpoint::Dequantize with them).
    save("quantized_dequantized.pt", {
        "per_tensor": {k: v.dequantize() for k, v in per_tensor.items()},
        "per_channel": {k: v.dequantize() for k, v in per_channel.items()},
        "packed": {k: v.dequantize() for k, v in packed.items()},
    })

    z = torch.complex(torch.randn(3, 4), torch.randn(3, 4))
    r = torch.randn(2, 5, dtype=torch.float64)
    save("tensor_metadata_v2.pt", {
        "plain": z,
        "conj": WithMetadata(z, {"conj": True}),
        "neg": WithMetadata(z, {"neg": True}),
        "conj_neg": WithMetadata(z, {"conj": True, "neg": True}),
        "conj_t": WithMetadata(z.t(), {"conj": True}),
        "neg_real": WithMetadata(r[:, 1:], {"neg": True}),
        "empty": WithMetadata(r, {}),
    })

    # Parameters with Python attributes: torch >= 2.0 writes
    # _rebuild_parameter_with_state(data, requires_grad, hooks, vars(param)).
    torch._utils._rebuild_parameter_with_state = _rebuild_parameter_with_state
    try:
        save("parameter_with_state.pt", {
            "weight": WithState(torch.arange(6.0).reshape(2, 3), True,
                                {"tag": "encoder", "scale": 0.5, "flags": {"frozen": False, "ids": (1, 2)}}),
            "frozen": WithState(torch.ones(3), False, {"note": None}),
            "slots": WithState(torch.zeros(2), True, ({"a": 1}, {"b": 2})),
            "plain": torch.nn.Parameter(torch.zeros(2)),
        })
    finally:
        del torch._utils._rebuild_parameter_with_state

    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    dynamic = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    save("quantize_dynamic_linear.pt", dynamic.state_dict())

    python2_legacy(os.path.join(OUT, "legacy_python2_keys.pt"))


def python2_legacy(path):
    """A legacy (torch <= 1.5) file as Python 2 wrote it: every str operand of
    the five pickles as SHORT_BINSTRING (bytes) instead of BINUNICODE, as
    pickle protocol 2 under Python 2 spells str. Made from torch 1.13's
    legacy writer by re-encoding those operands (the storage records follow
    the pickles, so nothing else moves)."""
    import io
    import pickletools
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}, buf,
               _use_new_zipfile_serialization=False, pickle_protocol=2)
    data = buf.getvalue()
    out = bytearray()
    pos = 0
    for _ in range(5):
        last = pos
        for op, arg, off in pickletools.genops(data[pos:]):
            if op.name == "BINUNICODE" and arg.isascii() and len(arg) < 256:
                out += data[last:pos + off] + b"U" + bytes([len(arg)]) + arg.encode()
                last = pos + off + 5 + len(arg)
            if op.name == "STOP":
                end = pos + off + 1
                break
        out += data[last:end]
        pos = end
    out += data[pos:]
    with open(path, "wb") as f:
        f.write(bytes(out))


if __name__ == "__main__":
    main()
    sys.exit(0)
