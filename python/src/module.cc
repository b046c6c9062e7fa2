// _core: the ckptguard Python extension (pybind11), wrapped by the pure
// Python package in python/ckptguard/.
//
// A Checkpoint is loaded by the hardened loader (nothing from the file is
// ever called) and kept alive by a shared pointer; every numpy array made
// from one of its tensors is a view of the memory-mapped file whose base is
// a capsule holding that pointer, so the mapping lives as long as any array
// does. Values become Python objects by an explicit worklist (no recursion on
// untrusted input): records, TorchScript objects, globals and devices through
// factories the package passes in. Errors are raised as ckptguard.Error (the
// class the package registers) with the code, file, entry, offset and limit.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/allowlist.h"
#include "ckptguard/budget.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/convert.h"
#include "ckptguard/dtype.h"
#include "ckptguard/error.h"
#include "ckptguard/scanner/key_check.h"
#include "ckptguard/scanner/report.h"
#include "ckptguard/scanner/scan.h"
#include "ckptguard/safetensors_writer.h"
#include "ckptguard/value.h"

namespace py = pybind11;

namespace ckptguard::python {
namespace {

// CkgError carries an Error and the file it is about to the translator.
struct CkgError {
  Error error;
  std::string path;
};

py::object& ErrorClass() {
  static py::object* cls = new py::object();  // never destroyed: outlives the interpreter's teardown order
  return *cls;
}

[[noreturn]] void Raise(Error error, const std::string& path) { throw CkgError{std::move(error), path}; }

// The numpy dtype of a tensor's elements as the file stores them, or, for a
// dtype numpy lacks, its raw bits (unsigned integers of its width) with the
// torch dtype name in the dtype's metadata ("ckptguard_dtype").
py::dtype NumpyDType(DType dtype, bool big_endian) {
  const std::optional<NumpyKind> numpy = DTypeToNumpy(dtype);
  const NumpyKind kind = numpy.value_or(NumpyKind{'u', DTypeSize(dtype)});
  const char order = kind.item_size == 1 ? '|' : big_endian ? '>' : '<';
  const std::string spec = std::string(1, order) + kind.kind + std::to_string(kind.item_size);
  if (numpy) return py::dtype(spec);
  py::dict metadata;
  metadata["ckptguard_dtype"] = std::string(DTypeName(dtype));
  return py::reinterpret_steal<py::dtype>(
      py::module_::import("numpy").attr("dtype")(spec, py::arg("metadata") = metadata).release());
}

// Loaded is a Checkpoint shared by the arrays made from it.
class Loaded {
 public:
  // `writable`: the file is mapped copy-on-write, and arrays may be written.
  Loaded(std::shared_ptr<const Checkpoint> ck, std::string path, bool writable)
      : ck_(std::move(ck)), path_(std::move(path)), writable_(writable) {}

  const std::string& path() const { return path_; }

  // StateDict: (dotted path, tensor index) of every tensor under `prefix`.
  std::vector<std::pair<std::string, uint32_t>> StateDict(const std::string& prefix) const {
    Result<std::vector<NamedTensor>> named = ck_->StateDict(prefix);
    if (!named) Raise(named.error(), path_);
    std::vector<std::pair<std::string, uint32_t>> out;
    out.reserve(named->size());
    for (NamedTensor& n : *named) out.emplace_back(std::move(n.path), n.tensor);
    return out;
  }

  // Info: what a caller needs besides the data: dtype name, shape, layout,
  // flags and, for the kinds without data of their own, their components.
  py::dict Info(uint32_t index) const {
    const Tensor& t = Get(index);
    py::dict d;
    d["dtype"] = std::string(DTypeName(t.dtype));
    d["shape"] = std::vector<int64_t>(t.shape.begin(), t.shape.end());
    d["layout"] = std::string(TensorLayoutName(t.layout));
    d["meta"] = t.meta;
    d["parameter"] = t.parameter;
    d["requires_grad"] = t.requires_grad;
    d["quantized"] = t.quant->scheme != QScheme::kNone;
    if (t.layout != TensorLayout::kStrided && t.layout != TensorLayout::kNested) {
      d["indices"] = t.sparse->indices;
      d["plain_indices"] = t.sparse->plain_indices;
      d["values"] = t.sparse->values;
      d["sparse_dim"] = t.sparse->sparse_dim;
      d["dense_dim"] = t.sparse->dense_dim;
      if (t.sparse->coalesced) d["coalesced"] = *t.sparse->coalesced;
    }
    if (t.layout == TensorLayout::kNested) {
      d["buffer"] = t.nested->buffer;
      d["sizes"] = t.nested->sizes;
      d["strides"] = t.nested->strides;
      d["offsets"] = t.nested->offsets;
    }
    if (t.quant->scheme != QScheme::kNone) {
      d["qscheme"] = std::string(QSchemeName(t.quant->scheme));
      if (t.quant->scheme == QScheme::kPerTensorAffine) {
        d["scale"] = t.quant->scale;
        d["zero_point"] = t.quant->zero_point;
      } else {
        d["scales"] = t.quant->scales;
        d["zero_points"] = t.quant->zero_points;
        d["axis"] = t.quant->axis;
      }
    }
    if (!t.numpy_dtype.empty()) d["numpy_dtype"] = std::string(t.numpy_dtype);
    return d;
  }

  // Array: the tensor's elements as a read-only numpy array. A strided view
  // of the mapped file without a copy when its bytes are as the file holds
  // them; a copy (C order, little-endian) when torch's conj/neg bits change
  // the values or the elements are packed below a byte. Meta, sparse and
  // nested tensors have no array of their own (Info names their parts).
  py::array Array(uint32_t index) const {
    const Tensor& t = Get(index);
    if (!t.HasData()) {
      Raise(Error{ErrorCode::kUnsupportedFormat, 0, {},
                  "tensor " + std::to_string(index) + " is " + NotAPlainArray(t).value_or("without data") +
                      ": it has no array of its own"},
            path_);
    }
    const bool packed = DTypeValuesPerByte(t.dtype) > 1;
    const bool changed = (t.conj && DTypeIsComplex(t.dtype)) || t.neg;
    std::vector<py::ssize_t> shape(t.shape.begin(), t.shape.end());
    if (packed || changed) {
      Result<std::vector<uint8_t>> bytes = ck_->ContiguousBytes(index);
      if (!bytes) Raise(bytes.error(), path_);
      py::array out;
      if (packed) {
        // Packed values: their bytes, one dimension of bytes.
        out = py::array(NumpyDType(DType::kUInt8, false), {static_cast<py::ssize_t>(bytes->size())}, {1}, bytes->data());
        py::dict metadata;
        metadata["ckptguard_dtype"] = std::string(DTypeName(t.dtype));
        metadata["shape"] = shape;
        out = out.attr("view")(py::module_::import("numpy").attr("dtype")("|u1", py::arg("metadata") = metadata));
      } else {
        out = py::array(NumpyDType(t.dtype, false), shape, bytes->data());
      }
      if (!writable_) out.attr("setflags")(py::arg("write") = false);
      return out;
    }
    const Storage& storage = ck_->storages()[t.storage];
    const Bytes bytes = ck_->StorageBytes(index);
    const uint32_t unit = DTypeSize(t.dtype);
    std::vector<py::ssize_t> strides;
    for (int64_t s : t.stride) strides.push_back(static_cast<py::ssize_t>(s) * unit);
    // The base keeps the Checkpoint (and its mapping) alive.
    py::capsule base(new std::shared_ptr<const Checkpoint>(ck_), [](void* p) {
      delete static_cast<std::shared_ptr<const Checkpoint>*>(p);
    });
    // No elements: an array of its own (nothing to view).
    py::array out = bytes.empty() ? py::array(NumpyDType(t.dtype, storage.big_endian), shape)
                                  : py::array(NumpyDType(t.dtype, storage.big_endian), shape, strides, bytes.data(), base);
    if (!writable_) out.attr("setflags")(py::arg("write") = false);
    return out;
  }

  // Tree: the whole object graph as Python objects (see the package's
  // load_checkpoint). `tensor(index)` makes each tensor's object; the
  // factories make records, objects, globals and devices.
  py::object Tree(const py::function& tensor, const py::function& record, const py::function& script_object,
                  const py::function& global, const py::function& device) const {
    const ValueArena& values = ck_->values();
    py::module_ collections = py::module_::import("collections");
    std::vector<py::object> made(values.size());
    std::vector<uint8_t> state(values.size(), 0);  // 0 new, 1 open (children pending), 2 done
    constexpr size_t kMaxNodes = size_t{1} << 26;
    size_t visits = 0;
    struct Frame {
      ValueId id;
      bool children_done;
    };
    std::vector<Frame> todo{{ck_->root(), false}};
    auto items_of = [&](const Value& v) -> std::vector<ValueId> {
      std::vector<ValueId> ids(v.items.begin(), v.items.end());
      for (ValueId a : values.Attrs(v)) ids.push_back(a);
      return ids;
    };
    auto text = [](const Value& v) { return py::str(std::string(v.text)); };
    while (!todo.empty()) {
      if (++visits > kMaxNodes) Raise(Error{ErrorCode::kLimitExceeded, 0, {}, "more than 2^26 values to convert"}, path_);
      const Frame f = todo.back();
      todo.pop_back();
      if (f.id >= values.size()) {
        Raise(Error{ErrorCode::kInternal, 0, {}, "value " + std::to_string(f.id) + " is not in the arena"}, path_);
      }
      const Value& v = values.Get(f.id);
      if (state[f.id] == 2) continue;
      const bool container = v.kind == ValueKind::kTuple || v.kind == ValueKind::kList || v.kind == ValueKind::kDict ||
                             v.kind == ValueKind::kSet || v.kind == ValueKind::kRecord || v.kind == ValueKind::kObject;
      if (container && !f.children_done) {
        if (state[f.id] == 1) {
          // Reached again while its children are pending: a cycle. Lists and
          // dicts exist already (made empty below) and are filled later.
          if (made[f.id]) continue;
          Raise(Error{ErrorCode::kUnsupportedFormat, 0, {}, "a cycle through an immutable value"}, path_);
        }
        state[f.id] = 1;
        if (v.kind == ValueKind::kList) made[f.id] = py::list();
        if (v.kind == ValueKind::kDict) made[f.id] = v.ordered_dict ? collections.attr("OrderedDict")() : py::dict();
        todo.push_back({f.id, true});
        const std::vector<ValueId> ids = items_of(v);
        for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
          if (state[*it] == 0 || (state[*it] == 1 && !made[*it])) todo.push_back({*it, false});
        }
        continue;
      }
      auto get = [&](ValueId id) -> py::object {
        if (!made[id]) Raise(Error{ErrorCode::kUnsupportedFormat, 0, {}, "a cycle through an immutable value"}, path_);
        return made[id];
      };
      py::object out;
      switch (v.kind) {
        case ValueKind::kNone: out = py::none(); break;
        case ValueKind::kBool: out = py::bool_(v.int_value != 0); break;
        case ValueKind::kInt: out = py::int_(v.int_value); break;
        case ValueKind::kBigInt:
          out = py::reinterpret_steal<py::object>(PyLong_FromString(std::string(v.text).c_str(), nullptr, 10));
          if (!out) throw py::error_already_set();
          break;
        case ValueKind::kFloat: out = py::float_(v.float_value); break;
        case ValueKind::kComplex:
          out = py::reinterpret_steal<py::object>(PyComplex_FromDoubles(v.float_value, v.imag_value()));
          break;
        case ValueKind::kStr: {
          const std::string s(v.text);
          out = py::reinterpret_steal<py::object>(
              PyUnicode_DecodeUTF8(s.data(), static_cast<py::ssize_t>(s.size()), "surrogatepass"));
          if (!out) throw py::error_already_set();
          break;
        }
        case ValueKind::kBytes: {
          const std::string s(v.text);
          out = v.byte_array ? py::object(py::reinterpret_steal<py::object>(
                                   PyByteArray_FromStringAndSize(s.data(), static_cast<py::ssize_t>(s.size()))))
                             : py::object(py::bytes(s));
          break;
        }
        case ValueKind::kTuple: {
          py::tuple t(v.items.size());
          for (size_t i = 0; i < v.items.size(); ++i) t[i] = get(v.items[i]);
          out = t;  // a torch.Size too (frozen): a tuple of its sizes
          break;
        }
        case ValueKind::kList: {
          py::list l = made[f.id].cast<py::list>();
          for (ValueId id : v.items) l.append(get(id));
          out = l;
          break;
        }
        case ValueKind::kDict: {
          py::object d = made[f.id];
          for (size_t i = 0; i + 1 < v.items.size(); i += 2) d[get(v.items[i])] = get(v.items[i + 1]);
          const std::span<const ValueId> attrs = values.Attrs(v);
          // state_dict()._metadata: OrderedDict attributes, set as pickle's
          // BUILD sets them (a plain dict has none).
          for (size_t i = 0; v.ordered_dict && i + 1 < attrs.size(); i += 2) {
            py::object name = get(attrs[i]);
            if (py::isinstance<py::str>(name)) py::setattr(d, name, get(attrs[i + 1]));
          }
          out = d;
          break;
        }
        case ValueKind::kSet: {
          py::list items;
          for (ValueId id : v.items) items.append(get(id));
          out = v.frozen ? py::object(py::frozenset(items)) : py::object(py::set(items));
          break;
        }
        case ValueKind::kTensor: out = tensor(v.index); break;
        case ValueKind::kStorage: {
          const Storage& s = ck_->storages()[v.index];
          out = py::bytes(reinterpret_cast<const char*>(s.bytes.data()), s.bytes.size());
          break;
        }
        case ValueKind::kGlobal: out = global(text(v)); break;
        case ValueKind::kDtype: out = global(py::str("torch." + std::string(DTypeName(v.dtype)))); break;
        case ValueKind::kDevice: out = device(text(v)); break;
        case ValueKind::kObject: {
          py::list attrs;
          for (ValueId id : v.items) attrs.append(get(id));
          out = script_object(text(v), attrs);
          break;
        }
        case ValueKind::kRecord: {
          py::list args;
          for (ValueId id : v.items) args.append(get(id));
          py::list state_items;
          for (ValueId id : values.Attrs(v)) state_items.append(get(id));
          out = record(text(v), std::string(RecordFormName(static_cast<RecordForm>(v.index))), args, state_items);
          break;
        }
      }
      made[f.id] = out;
      state[f.id] = 2;
    }
    return made[ck_->root()];
  }

 private:
  const Tensor& Get(uint32_t index) const {
    if (index >= ck_->tensors().size()) throw py::index_error("no tensor " + std::to_string(index));
    return ck_->tensors()[index];
  }

  std::shared_ptr<const Checkpoint> ck_;
  std::string path_;
  bool writable_;
};

// SetLimit sets one field of the file's budget (budget.h) by its name.
void SetLimit(BudgetLimits& limits, const std::string& name, uint64_t value) {
  for (size_t k = 0; k < kNumBudgetKinds; ++k) {
    if (BudgetLimitName(static_cast<BudgetKind>(k)) == name) {
      limits.Set(static_cast<BudgetKind>(k), value);
      return;
    }
  }
  const std::pair<const char*, uint64_t BudgetLimits::*> ratios[] = {
      {"inflate_per_file_byte", &BudgetLimits::inflate_per_file_byte},
      {"work_per_input_byte", &BudgetLimits::work_per_input_byte},
      {"views_per_file_byte", &BudgetLimits::views_per_file_byte},
      {"floor_bytes", &BudgetLimits::floor_bytes},
      {"floor_count", &BudgetLimits::floor_count}};
  for (const auto& [field, member] : ratios) {
    if (name == field) {
      limits.*member = value;
      return;
    }
  }
  std::string known;
  for (size_t k = 0; k < kNumBudgetKinds; ++k) known += std::string(BudgetLimitName(static_cast<BudgetKind>(k))) + ", ";
  for (const auto& [field, member] : ratios) known += std::string(field) + (field == std::string("floor_count") ? "" : ", ");
  Raise(Error{ErrorCode::kInvalidArgument, 0, {}, "unknown limit '" + name + "' (the file's budget has " + known + ")"}, "");
}

Loaded Load(const std::string& path, const std::optional<std::string>& rules, bool records, bool copy_on_write,
            const std::map<std::string, uint64_t>& limits) {
  LoadOptions options;
  for (const auto& [name, value] : limits) SetLimit(options.budget, name, value);
  options.records = records;
  options.file.copy_on_write = copy_on_write;
  std::optional<Allowlist> allowlist;
  if (rules) {
    Result<Allowlist> parsed = LoadAllowlistFile(*rules);
    if (!parsed) Raise(parsed.error(), *rules);
    allowlist = std::move(*parsed);
    options.allowlist = &*allowlist;
  }
  std::optional<Result<Checkpoint>> ck;
  {
    py::gil_scoped_release released;  // a load runs no Python
    ck.emplace(LoadCheckpoint(path, options));
  }
  if (!*ck) Raise(ck->error(), path);
  return Loaded(std::make_shared<const Checkpoint>(std::move(**ck)), path, copy_on_write);
}

// SaveSafetensors writes `items` ((name, torch dtype name, shape, C-order
// little-endian buffer) each) atomically as a safetensors file, read back
// before it replaces anything (WriteSafetensors).
void SaveSafetensors(const std::string& path, const py::list& items, const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsTensorData> tensors;
  std::vector<py::buffer_info> held;  // the buffers stay requested while written
  held.reserve(items.size());
  for (const py::handle& item : items) {
    const py::tuple t = item.cast<py::tuple>();
    const std::string name = t[0].cast<std::string>();
    // A torch dtype name, or a numpy dtype (DTypeFromNumpy).
    std::optional<DType> dtype;
    if (py::isinstance<py::str>(t[1])) {
      const std::string dtype_name = t[1].cast<std::string>();
      dtype = ParseDType(dtype_name);
      if (!dtype) Raise(Error{ErrorCode::kInvalidArgument, 0, name, "unknown dtype " + dtype_name}, path);
    } else {
      const py::dtype numpy = t[1].cast<py::dtype>();
      dtype = DTypeFromNumpy(numpy.kind(), static_cast<uint64_t>(numpy.itemsize()));
      if (!dtype) {
        Raise(Error{ErrorCode::kUnsupportedFormat, 0, name,
                    "numpy dtype " + py::repr(numpy).cast<std::string>() + " has no safetensors form"},
              path);
      }
    }
    held.push_back(t[3].cast<py::buffer>().request());
    const py::buffer_info& info = held.back();
    SafetensorsTensorData d;
    d.name = name;
    d.dtype = *dtype;
    d.shape = t[2].cast<std::vector<int64_t>>();
    d.data = Bytes(static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size * info.itemsize));
    tensors.push_back(std::move(d));
  }
  std::vector<std::pair<std::string, std::string>> meta(metadata.begin(), metadata.end());
  Status st = WriteSafetensors(path, std::move(tensors), meta);
  if (!st) Raise(st.error(), path);
}

// Check replays model.load_state_dict(state_dict, strict) for the
// checkpoint at `path` (a file, a sharded checkpoint's index, a DCP folder)
// against the model `expect` describes (a reference checkpoint or a JSON
// schema), as `ckptguard check` does (CheckKeysOfPath).
py::dict Check(const std::string& path, const std::string& expect, const std::string& prefix, bool strict,
               const std::optional<std::string>& strip_prefix) {
  scanner::KeyCheckOptions options;
  options.strict = strict;
  options.prefix = prefix;
  options.strip_prefix = strip_prefix;
  std::optional<Result<scanner::ModelSchema>> schema;
  std::optional<Result<scanner::KeyCheckResult>> checked;
  {
    py::gil_scoped_release released;
    schema.emplace(scanner::LoadSchema(expect));
    if (*schema) checked.emplace(scanner::CheckKeysOfPath(path, **schema, options));
  }
  if (!*schema) Raise(schema->error(), expect);
  if (!*checked) Raise(checked->error(), path);
  const scanner::KeyCheckResult* r = &**checked;
  auto notes = [](const std::vector<scanner::KeyCheckResult::Note>& in) {
    py::list out;
    for (const auto& n : in) out.append(py::dict(py::arg("key") = n.key, py::arg("detail") = n.detail));
    return out;
  };
  auto mode = [](const scanner::ModeResult& m) -> py::object {
    if (m.ok()) return py::none();
    return py::dict(py::arg("type") = m.exception->type, py::arg("message") = m.exception->message);
  };
  py::list mismatched;
  for (const auto& m : r->mismatched) {
    mismatched.append(py::dict(py::arg("key") = m.key, py::arg("kind") = m.kind, py::arg("detail") = m.detail));
  }
  py::dict d;
  d["ok"] = r->ok;
  d["state_dict_type"] = r->state_dict_type;
  d["num_keys"] = r->num_keys;
  d["num_expected"] = r->num_expected;
  d["missing"] = r->missing;
  d["unexpected"] = r->unexpected;
  d["mismatched"] = mismatched;
  d["converted"] = notes(r->converted);
  d["ignored"] = notes(r->ignored);
  d["filled"] = notes(r->filled);
  d["loaded"] = r->loaded;
  d["caveats"] = r->caveats;
  d["hints"] = r->hints;
  d["strict_raises"] = mode(r->strict);
  d["non_strict_raises"] = mode(r->non_strict);
  return d;
}

// Convert: `ckptguard convert` (ConvertFile), the format from `to`
// ("safetensors", "pt") or the output's name.
py::dict Convert(const std::string& input, const std::string& output, const std::optional<std::string>& to,
                 const std::string& prefix, bool keep_metadata, const std::map<std::string, uint64_t>& limits) {
  std::optional<ConvertTo> format;
  if (!to) {
    format = ConvertFormatOf(output);
  } else if (*to == "safetensors") {
    format = ConvertTo::kSafetensors;
  } else if (*to == "pt") {
    format = ConvertTo::kTorch;
  }
  if (!format) {
    Raise(Error{ErrorCode::kInvalidArgument, 0, {},
                "cannot tell the output format " + (to ? "'" + *to + "'" : "from the name") +
                    ": use to=\"safetensors\" or to=\"pt\""},
          output);
  }
  LoadOptions load;
  for (const auto& [name, value] : limits) SetLimit(load.budget, name, value);
  std::optional<Result<ConvertSummary>> r;
  {
    py::gil_scoped_release released;
    r.emplace(ConvertFile(input, output, *format, ConvertOptions{prefix, keep_metadata}, load));
  }
  if (!*r) {
    Error e = (*r).error();
    const std::string path = e.where;
    e.where.clear();
    Raise(std::move(e), path);
  }
  py::dict d;
  d["format"] = *format == ConvertTo::kSafetensors ? "safetensors" : "pt";
  d["tensors"] = (*r)->tensors;
  d["aliases"] = (*r)->aliases;
  d["values"] = (*r)->values;
  return d;
}

std::string Scan(const std::vector<std::string>& paths) {
  std::vector<scanner::FileReport> reports;
  py::gil_scoped_release released;
  for (const std::string& p : paths) reports.push_back(scanner::ScanFile(p));
  return scanner::ReportJson(reports);
}

}  // namespace
}  // namespace ckptguard::python

PYBIND11_MODULE(_core, m) {
  using namespace ckptguard::python;
  m.doc() = "ckptguard's C++ core (use the ckptguard package, not this module)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CkgError& e) {
      py::object cls = ErrorClass() ? ErrorClass() : py::reinterpret_borrow<py::object>(PyExc_RuntimeError);
      py::object exc = cls(e.error.ToString(), std::string(ckptguard::ErrorCodeName(e.error.code)), e.path,
                           e.error.where, e.error.offset, e.error.limit);
      PyErr_SetObject(cls.ptr(), exc.ptr());
    }
  });
  m.def("_set_error_class", [](py::object cls) { ErrorClass() = std::move(cls); });
  py::class_<Loaded>(m, "Loaded")
      .def_property_readonly("path", &Loaded::path)
      .def("state_dict", &Loaded::StateDict, py::arg("prefix") = "")
      .def("info", &Loaded::Info)
      .def("array", &Loaded::Array)
      .def("tree", &Loaded::Tree);
  m.def("load", &Load, py::arg("path"), py::arg("rules") = std::nullopt, py::arg("records") = true,
        py::arg("copy_on_write") = false, py::arg("limits") = std::map<std::string, uint64_t>{});
  m.def("scan", &Scan, py::arg("paths"));
  m.def("convert", &Convert, py::arg("input"), py::arg("output"), py::arg("to"), py::arg("prefix"),
        py::arg("keep_metadata"), py::arg("limits"));
  m.def("check", &Check, py::arg("path"), py::arg("expect"), py::arg("prefix"), py::arg("strict"),
        py::arg("strip_prefix"));
  m.def("save_safetensors", &SaveSafetensors, py::arg("path"), py::arg("items"), py::arg("metadata"));
}
