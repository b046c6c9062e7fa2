"""torch.load with an allowlist, for files torch 1.13's weights_only=True refuses only because
they hold Python floats or bytes.

torch 1.13's weights-only unpickler has no BINFLOAT opcode and no `_codecs.encode` global, so it
refuses every optimizer state_dict (lr, betas, eps are floats) and any bytes value. This loader
runs CPython's unpickler with find_class limited to the very same allowlist torch uses
(torch._weights_only_unpickler._get_allowed_globals()) plus `_codecs.encode` and the empty-bytes
constructor `builtins.bytes` (what protocol 2 pickles bytes as). Any other global is refused.
It is meant for files we produced ourselves; it is not a security boundary.
"""
import _codecs
import pickle
import types

import torch
from torch import _weights_only_unpickler

_EXTRA = {
    ("_codecs", "encode"): _codecs.encode,
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _EXTRA:
            return _EXTRA[(module, name)]
        allowed = _weights_only_unpickler._get_allowed_globals()
        full = f"{module}.{name}"
        if full in allowed:
            return allowed[full]
        raise pickle.UnpicklingError(f"global {full} is not allowed")


def _load(file, **kw):
    return RestrictedUnpickler(file, **kw).load()


# what torch.load expects of a pickle_module: Unpickler and load
restricted_pickle = types.SimpleNamespace(__name__="restricted_pickle", Unpickler=RestrictedUnpickler, load=_load)


def restricted_load(path, map_location="cpu"):
    # torch.load(..., pickle_module=M) cannot be used: torch 1.13's load() replaces any
    # pickle_module by the stdlib pickle whenever weights_only is False. So call the two
    # loaders torch.load dispatches to (private, but stable through 1.13) directly.
    ser = torch.serialization
    with open(path, "rb") as f:
        if ser._is_zipfile(f):
            with ser._open_zipfile_reader(f) as z:
                if ser._is_torchscript_zip(z):
                    raise pickle.UnpicklingError("TorchScript archive, not a pickled checkpoint")
                return ser._load(z, map_location, restricted_pickle, encoding="utf-8")
        return ser._legacy_load(f, map_location, restricted_pickle, encoding="utf-8")
