"""(model, checkpoint) pairs made with real torch, and torch's own
load_state_dict as the oracle for `ckptguard check` (issue 16).

Run as a script with Debian's python3 and torch 1.13:
    /usr/bin/python3 check_oracle.py OUT_DIR
writes, for every case, the checkpoint (torch.save), a reference checkpoint
(torch.save(model.state_dict())) and a JSON schema of the model (as
`ckptguard check --help` says to make one), then loads the checkpoint back
with torch.load and runs model.load_state_dict(..., strict=True) and
(strict=False) on fresh models, recording what torch raises or returns and
which tensors strict=False changed. OUT_DIR/manifest.json lists it all.

Importing this module does not import torch: CASES (the names) is what the
pytest suite parametrizes over."""
import collections
import copy
import hashlib
import json
import os
import sys
import warnings

CASES = collections.OrderedDict()


def case(name, prefix=None, strip=None):
    """Registers a case: fn() -> (model_factory, checkpoint object)."""
    def register(fn):
        assert name not in CASES, name
        CASES[name] = {"fn": fn, "prefix": prefix, "strip": strip}
        return fn
    return register


torch = None  # set by main()
nn = None


# --- models ---------------------------------------------------------------

def models():
    class Net(nn.Module):
        def __init__(self, i=4, h=3, o=2):
            super().__init__()
            self.fc1 = nn.Linear(i, h)
            self.act = nn.ReLU()
            self.fc2 = nn.Linear(h, o)

    class ConvBN(nn.Module):
        def __init__(self, track=True, affine=True):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.bn = nn.BatchNorm2d(2, track_running_stats=track, affine=affine)
            self.relu = nn.ReLU()
            self.head = nn.Linear(2, 2)

    class WithNone(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.register_module("skip", None)

    class WithExtra(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.tag = {"v": 1}

        def get_extra_state(self):
            return self.tag

        def set_extra_state(self, state):
            self.tag = state

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = WithExtra()
            self.out = nn.Linear(2, 1)

    class Scalar(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(1.0))
            self.fc = nn.Linear(2, 2)

    class Buffers(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.register_buffer("steps", torch.zeros(3, dtype=torch.long))
            self.register_buffer("cache", torch.zeros(2), persistent=False)

    class LazyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.lazy = nn.LazyLinear(3)
            self.fc = nn.Linear(3, 2)

    class Wrapper(nn.Module):  # a Lightning-style module: the net under "model."
        def __init__(self):
            super().__init__()
            self.model = Net()

    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
            self.decoder = nn.ModuleDict({"proj": nn.Linear(2, 4), "drop": nn.Dropout()})

    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.inorm = nn.InstanceNorm1d(3, affine=True, track_running_stats=True)
            self.ln = nn.LayerNorm(3)
            self.bn = nn.BatchNorm1d(3, affine=False)

    class Spectral(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.utils.spectral_norm(nn.Linear(3, 3))

    return {k: v for k, v in locals().items() if isinstance(v, type)}


M = None  # the classes above, set by main()


def sd_of(model):
    return model.state_dict()


def plain(sd):
    """A plain dict: no _metadata."""
    return dict(sd)


def with_metadata(sd, metadata):
    out = collections.OrderedDict(sd)
    out._metadata = metadata
    return out


def without(sd, *keys):
    out = collections.OrderedDict((k, v) for k, v in sd.items() if k not in keys)
    out._metadata = sd._metadata
    return out


def plus(sd, **extra):
    out = collections.OrderedDict(sd)
    out.update(extra)
    out._metadata = sd._metadata
    return out


def replaced(sd, key, value):
    out = collections.OrderedDict((k, value if k == key else v) for k, v in sd.items())
    out._metadata = sd._metadata
    return out


def prefixed(sd, p):
    out = collections.OrderedDict((p + k, v) for k, v in sd.items())
    out._metadata = collections.OrderedDict((p + k if k else p[:-1], v) for k, v in sd._metadata.items())
    return out


# --- cases ---------------------------------------------------------------

def define_cases():
    @case("exact")
    def _():
        return M["Net"], sd_of(M["Net"]())

    @case("exact_plain_dict")
    def _():
        return M["Net"], plain(sd_of(M["Net"]()))

    @case("data_parallel_into_plain")
    def _():
        return M["Net"], nn.DataParallel(M["Net"]()).state_dict()

    @case("data_parallel_into_plain_stripped", strip="module.")
    def _():
        return M["Net"], nn.DataParallel(M["Net"]()).state_dict()

    @case("plain_into_data_parallel")
    def _():
        return (lambda: nn.DataParallel(M["Net"]())), sd_of(M["Net"]())

    @case("data_parallel_into_data_parallel")
    def _():
        return (lambda: nn.DataParallel(M["Net"]())), nn.DataParallel(M["Net"]()).state_dict()

    @case("sequential_zero_prefix_into_plain")
    def _():
        return M["Net"], nn.Sequential(M["Net"]()).state_dict()

    @case("plain_into_sequential_zero_prefix")
    def _():
        return (lambda: nn.Sequential(M["Net"]())), sd_of(M["Net"]())

    @case("sequential_stripped", strip="0.")
    def _():
        return M["Net"], nn.Sequential(M["Net"]()).state_dict()

    @case("lightning_model_prefix")
    def _():
        return M["Net"], M["Wrapper"]().state_dict()

    @case("lightning_model_prefix_stripped", strip="model.")
    def _():
        return M["Net"], M["Wrapper"]().state_dict()

    @case("lightning_checkpoint_top")
    def _():
        return M["Net"], {"state_dict": M["Wrapper"]().state_dict(), "epoch": 3, "global_step": 30}

    @case("lightning_checkpoint_prefix_and_strip", prefix="state_dict", strip="model.")
    def _():
        return M["Net"], {"state_dict": M["Wrapper"]().state_dict(), "epoch": 3}

    @case("state_dict_wrapper_top")
    def _():
        return M["Net"], {"state_dict": sd_of(M["Net"]())}

    @case("state_dict_wrapper_prefix", prefix="state_dict")
    def _():
        return M["Net"], {"state_dict": sd_of(M["Net"]())}

    @case("training_checkpoint_model_prefix", prefix="model")
    def _():
        net = M["Net"]()
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        return M["Net"], {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 1}

    @case("nested_dicts_per_module")
    def _():
        sd = sd_of(M["Net"]())
        return M["Net"], {"fc1": {"weight": sd["fc1.weight"], "bias": sd["fc1.bias"]},
                          "fc2": {"weight": sd["fc2.weight"], "bias": sd["fc2.bias"]}}

    @case("nested_dict_at_unknown_key")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), extra={"a": torch.zeros(2), "b": {"c": torch.ones(1)}})

    @case("nested_dict_fully_nested")
    def _():
        sd = sd_of(M["Net"]())
        return M["Net"], {"fc1.weight": sd["fc1.weight"], "fc1": {"bias": sd["fc1.bias"]},
                          "fc2.weight": sd["fc2.weight"], "fc2.bias": sd["fc2.bias"]}

    for name, value in [("int", 3), ("none", None), ("str", "w"), ("list", [1.0, 2.0]),
                        ("dict", {"data": 1}), ("float", 0.5), ("tuple", (1, 2))]:
        @case("non_tensor_at_expected_key_" + name)
        def _(value=value):
            return M["Net"], replaced(sd_of(M["Net"]()), "fc1.bias", value)

    @case("non_tensor_at_expected_and_size_mismatch")
    def _():
        sd = replaced(sd_of(M["Net"]()), "fc1.bias", 7)
        return M["Net"], replaced(sd, "fc2.weight", torch.zeros(5, 5))

    @case("non_tensor_at_unexpected_keys")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), step=5, note="hello", lr=0.1)

    @case("non_tensor_under_a_child")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), **{"fc1.step": 5, "fc2.weight_scale": [1, 2]})

    @case("extra_state_present")
    def _():
        return M["WithExtra"], M["WithExtra"]().state_dict()

    @case("extra_state_missing")
    def _():
        sd = M["WithExtra"]().state_dict()
        return M["WithExtra"], without(sd, "_extra_state")

    @case("extra_state_nested_missing")
    def _():
        return M["Outer"], without(M["Outer"]().state_dict(), "inner._extra_state")

    @case("extra_state_nested_present")
    def _():
        return M["Outer"], M["Outer"]().state_dict()

    @case("extra_state_unexpected_at_root")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), _extra_state={"v": 2})

    @case("extra_state_unexpected_under_child")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), **{"fc1._extra_state": torch.zeros(1)})

    @case("batchnorm_exact")
    def _():
        return M["ConvBN"], M["ConvBN"]().state_dict()

    @case("batchnorm_no_num_batches_tracked_with_metadata_v2")
    def _():
        return M["ConvBN"], without(M["ConvBN"]().state_dict(), "bn.num_batches_tracked")

    @case("batchnorm_no_num_batches_tracked_no_metadata")
    def _():
        return M["ConvBN"], plain(without(M["ConvBN"]().state_dict(), "bn.num_batches_tracked"))

    @case("batchnorm_no_num_batches_tracked_metadata_v1")
    def _():
        sd = without(M["ConvBN"]().state_dict(), "bn.num_batches_tracked")
        meta = copy.deepcopy(sd._metadata)
        meta["bn"] = {"version": 1}
        return M["ConvBN"], with_metadata(sd, meta)

    @case("batchnorm_no_num_batches_tracked_metadata_without_bn")
    def _():
        sd = without(M["ConvBN"]().state_dict(), "bn.num_batches_tracked")
        meta = copy.deepcopy(sd._metadata)
        del meta["bn"]
        return M["ConvBN"], with_metadata(sd, meta)

    @case("batchnorm_no_num_batches_tracked_version_none")
    def _():
        sd = without(M["ConvBN"]().state_dict(), "bn.num_batches_tracked")
        meta = copy.deepcopy(sd._metadata)
        meta["bn"] = {"version": None}
        return M["ConvBN"], with_metadata(sd, meta)

    @case("batchnorm_no_running_stats_model")
    def _():
        return (lambda: M["ConvBN"](track=False)), M["ConvBN"]().state_dict()

    @case("batchnorm_no_running_stats_checkpoint")
    def _():
        return M["ConvBN"], M["ConvBN"](track=False).state_dict()

    @case("batchnorm_no_affine")
    def _():
        return (lambda: M["ConvBN"](affine=False)), M["ConvBN"]().state_dict()

    @case("batchnorm_deep_sequential_no_nbt")
    def _():
        sd = M["Deep"]().state_dict()
        return M["Deep"], plain(without(sd, "encoder.1.num_batches_tracked"))

    @case("batchnorm_deep_sequential_no_nbt_v2")
    def _():
        return M["Deep"], without(M["Deep"]().state_dict(), "encoder.1.num_batches_tracked")

    @case("norms_missing_nbt_plain")
    def _():
        sd = M["Norms"]().state_dict()
        return M["Norms"], plain(without(sd, "inorm.num_batches_tracked", "bn.num_batches_tracked"))

    @case("child_module_names_as_keys")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), act=torch.zeros(1), fc1=torch.zeros(1))

    @case("child_module_name_param_less_nested")
    def _():
        return M["Deep"], plus(M["Deep"]().state_dict(), **{"encoder.2": torch.zeros(1), "decoder.drop": 3})

    @case("key_under_a_parameter")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), **{"fc1.weight.extra": torch.zeros(1)})

    @case("none_child_keys")
    def _():
        sd = M["WithNone"]().state_dict()
        return M["WithNone"], plus(sd, **{"skip.weight": torch.zeros(2, 2), "skip": torch.zeros(1)})

    @case("none_child_exact")
    def _():
        return M["WithNone"], M["WithNone"]().state_dict()

    @case("list_at_top")
    def _():
        return M["Net"], list(sd_of(M["Net"]()).values())

    @case("bare_tensor_at_top")
    def _():
        return M["Net"], torch.zeros(3)

    @case("tuple_at_top")
    def _():
        return M["Net"], (torch.zeros(3), torch.ones(2))

    @case("int_keys")
    def _():
        return M["Net"], {0: torch.zeros(1), 1: torch.zeros(1)}

    @case("lazy_model_initialised_checkpoint")
    def _():
        net = M["LazyNet"]()
        net.lazy(torch.zeros(1, 5))
        return M["LazyNet"], net.state_dict()

    @case("lazy_model_missing_lazy_weight")
    def _():
        net = M["LazyNet"]()
        net.lazy(torch.zeros(1, 5))
        return M["LazyNet"], without(net.state_dict(), "lazy.weight")

    @case("lazy_model_non_tensor")
    def _():
        net = M["LazyNet"]()
        net.lazy(torch.zeros(1, 5))
        return M["LazyNet"], replaced(net.state_dict(), "lazy.bias", 4)

    @case("lazy_model_size_mismatch_downstream")
    def _():
        net = M["LazyNet"]()
        net.lazy(torch.zeros(1, 5))
        sd = replaced(net.state_dict(), "fc.weight", torch.zeros(2, 4))
        return M["LazyNet"], sd

    @case("size_mismatch_wider")
    def _():
        return M["Net"], sd_of(M["Net"](5, 3, 2))

    @case("size_mismatch_transposed")
    def _():
        sd = sd_of(M["Net"]())
        return M["Net"], replaced(sd, "fc1.weight", sd["fc1.weight"].t().contiguous())

    @case("size_mismatch_and_missing")
    def _():
        return M["Net"], without(sd_of(M["Net"](4, 6, 2)), "fc2.bias")

    @case("dtype_double")
    def _():
        return M["Net"], M["Net"]().double().state_dict()

    @case("dtype_half")
    def _():
        return M["Net"], M["Net"]().half().state_dict()

    @case("dtype_int_into_float")
    def _():
        sd = sd_of(M["Net"]())
        return M["Net"], replaced(sd, "fc1.bias", torch.arange(3, dtype=torch.int32) + 7)

    @case("dtype_float_into_long_buffer")
    def _():
        sd = M["Buffers"]().state_dict()
        return M["Buffers"], replaced(sd, "steps", torch.tensor([1.5, 2.5, 3.5]))

    @case("buffers_non_persistent_in_checkpoint")
    def _():
        return M["Buffers"], plus(M["Buffers"]().state_dict(), cache=torch.ones(2))

    @case("zero_d_exact")
    def _():
        return M["Scalar"], M["Scalar"]().state_dict()

    @case("zero_d_from_one_element")
    def _():
        return M["Scalar"], replaced(M["Scalar"]().state_dict(), "scale", torch.tensor([2.0]))

    @case("zero_d_from_three_elements")
    def _():
        return M["Scalar"], replaced(M["Scalar"]().state_dict(), "scale", torch.tensor([2.0, 3.0, 4.0]))

    @case("zero_d_from_empty")
    def _():
        return M["Scalar"], replaced(M["Scalar"]().state_dict(), "scale", torch.zeros(0))

    @case("zero_d_from_2d")
    def _():
        return M["Scalar"], replaced(M["Scalar"]().state_dict(), "scale", torch.ones(1, 1))

    @case("one_d_param_from_zero_d")
    def _():
        return M["Scalar"], replaced(M["Scalar"]().state_dict(), "fc.bias", torch.tensor(1.0))

    @case("partial_overlap")
    def _():
        sd = sd_of(M["Net"]())
        return M["Net"], {"fc1.weight": sd["fc1.weight"], "encoder.x": torch.zeros(1), "head.w": torch.zeros(2)}

    @case("partial_overlap_prefix_one_of_four")
    def _():
        sd = prefixed(sd_of(M["Net"]()), "module.")
        sd["fc1.weight"] = sd.pop("module.fc1.weight")
        return M["Net"], sd

    @case("different_architecture")
    def _():
        return M["Net"], M["ConvBN"]().state_dict()

    @case("deep_exact")
    def _():
        return M["Deep"], M["Deep"]().state_dict()

    @case("deep_encoder_prefix_missing")
    def _():
        return M["Deep"], M["Deep"]().encoder.state_dict()

    @case("empty_state_dict")
    def _():
        return M["Net"], {}

    @case("metadata_not_a_dict")
    def _():
        return M["ConvBN"], with_metadata(M["ConvBN"]().state_dict(), [1, 2])

    @case("parameter_objects_as_values")
    def _():
        return M["Net"], collections.OrderedDict((k, nn.Parameter(v)) for k, v in sd_of(M["Net"]()).items())

    @case("torch_compile_prefix")
    def _():
        return M["Net"], prefixed(sd_of(M["Net"]()), "_orig_mod.")

    @case("data_parallel_batchnorm_stripped_no_nbt", strip="module.")
    def _():
        # consume_prefix_in_state_dict_if_present leaves _metadata under
        # "module.bn" in torch 1.13, so "bn" has no version and is filled.
        sd = nn.DataParallel(M["ConvBN"]()).state_dict()
        return M["ConvBN"], without(sd, "module.bn.num_batches_tracked")

    @case("strip_prefix_collides", strip="module.")
    def _():
        sd = sd_of(M["Net"]())
        out = prefixed(sd, "module.")
        out["fc1.weight"] = torch.zeros(7)  # replaced in place by module.fc1.weight
        return M["Net"], out

    @case("bytes_keys")
    def _():
        return M["Net"], {b"fc1.weight": torch.zeros(1)}

    @case("int_key_after_str_keys")
    def _():
        return M["Net"], plus(sd_of(M["Net"]()), **{"zz": torch.zeros(1)}) | {5: torch.zeros(1)}

    @case("batchnorm_version_is_a_string")
    def _():
        sd = without(M["ConvBN"]().state_dict(), "bn.num_batches_tracked")
        meta = copy.deepcopy(sd._metadata)
        meta["bn"] = {"version": "2"}
        return M["ConvBN"], with_metadata(sd, meta)

    @case("batchnorm_local_metadata_not_a_dict")
    def _():
        sd = M["ConvBN"]().state_dict()
        meta = copy.deepcopy(sd._metadata)
        meta["bn"] = [2]
        return M["ConvBN"], with_metadata(sd, meta)

    @case("spectral_norm_exact")
    def _():
        return M["Spectral"], M["Spectral"]().state_dict()

    @case("spectral_norm_plain_dict")
    def _():
        return M["Spectral"], plain(M["Spectral"]().state_dict())

    @case("unexpected_order_across_modules")
    def _():
        sd = sd_of(M["Deep"]())
        return M["Deep"], plus(sd, **{"zzz": torch.zeros(1), "decoder.proj.extra": torch.zeros(1),
                                      "encoder.0.x": torch.zeros(1), "aaa": torch.zeros(1)})


# --- the oracle ------------------------------------------------------------

SENTINEL_FLOAT = 1234.5
SENTINEL_INT = 1234


def run_torch(factory, state, strict):
    """What model.load_state_dict(state, strict) does on a fresh model:
    raises, or returns missing/unexpected keys and which tensors changed."""
    model = factory()
    marked = {}
    with torch.no_grad():
        for k, t in model.state_dict(keep_vars=True).items():
            if not torch.is_tensor(t) or isinstance(t, nn.parameter.UninitializedTensorMixin) or t.numel() == 0:
                continue
            if t.dtype.is_floating_point:
                t.fill_(SENTINEL_FLOAT)
                marked[k] = SENTINEL_FLOAT
            elif t.dtype in (torch.int64, torch.int32):
                t.fill_(SENTINEL_INT)
                marked[k] = SENTINEL_INT
    try:
        r = model.load_state_dict(state, strict=strict)
    except Exception as e:  # noqa: BLE001 - the exception is the answer
        return {"raised": True, "type": type(e).__name__, "message": str(e)}
    after = model.state_dict()
    changed = [k for k, v in marked.items() if k in after and not bool((after[k] == v).all())]
    uncertain = [k for k in after if k not in marked]
    return {"raised": False, "missing": list(r.missing_keys), "unexpected": list(r.unexpected_keys),
            "changed": changed, "uncertain": uncertain, "class": type(model).__name__}


def none_children(model):
    """(dotted name, None) of every child registered as None."""
    out = []
    for name, m in model.named_modules():
        for child, sub in m._modules.items():
            if sub is None:
                out.append(((name + "." if name else "") + child, None))
    return out


def schema_of(model):
    sd = model.state_dict()
    schema = {}
    for k, v in sd.items():
        if not torch.is_tensor(v):
            schema[k] = {"tensor": False}
        elif isinstance(v, nn.parameter.UninitializedTensorMixin):
            schema[k] = {"dtype": None, "shape": None}
        else:
            schema[k] = {"dtype": str(v.dtype)[6:], "shape": list(v.shape)}
    meta = {k: dict(v) for k, v in sd._metadata.items()}
    # None children are in no state dict: the schema names them.
    for module_name, _ in none_children(model):
        meta[module_name] = None
    schema["_metadata"] = meta
    return schema


def main(out_dir):
    global torch, nn, M
    warnings.simplefilter("ignore")
    import torch as torch_module
    import torch.nn as nn_module
    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present
    torch, nn = torch_module, nn_module
    torch.manual_seed(0)
    M = models()
    manifest = {}
    for name, spec in CASES.items():
        factory, ckpt = spec["fn"]()
        d = os.path.join(out_dir, name)
        os.makedirs(d, exist_ok=True)
        ckpt_path = os.path.join(d, "checkpoint.pt")
        torch.save(ckpt, ckpt_path)
        # Models of one architecture share their reference and schema, so
        # that one `check` run covers all their checkpoints.
        ref_model = factory()
        schema_text = json.dumps(schema_of(ref_model))
        group = hashlib.sha256(schema_text.encode()).hexdigest()[:16]
        refs = os.path.join(out_dir, "refs")
        os.makedirs(refs, exist_ok=True)
        ref_path = os.path.join(refs, group + ".pt")
        schema_path = os.path.join(refs, group + ".json")
        if not os.path.exists(ref_path):
            ref = ref_model.state_dict()
            for module_name, child in none_children(ref_model):
                ref._metadata[module_name] = None  # what a reference must add for None children
            torch.save(ref, ref_path)
            with open(schema_path, "w") as f:
                f.write(schema_text)
        results = {}
        for strict in (True, False):
            state = torch.load(ckpt_path)  # exactly what the user's torch.load gives
            if spec["prefix"]:
                state = state[spec["prefix"]]
            if spec["strip"]:
                consume_prefix_in_state_dict_if_present(state, spec["strip"])
            results["strict" if strict else "non_strict"] = run_torch(factory, state, strict)
        manifest[name] = {"checkpoint": ckpt_path, "reference": ref_path, "schema": schema_path, "group": group,
                          "prefix": spec["prefix"], "strip": spec["strip"],
                          "model_class": type(ref_model).__name__, "torch": results}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)


define_cases()  # registers the names; the bodies need torch only when run

if __name__ == "__main__":
    main(sys.argv[1])
