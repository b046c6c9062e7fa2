// Values: what the hardened VM builds from a pickle, stored in an arena.
//
// A checkpoint's object graph is a DAG through the pickle memo, and can even
// be cyclic (a list that contains itself), so values are not owned by their
// parents: every value lives in one ValueArena and refers to others by
// ValueId. Destruction is flat, walks use explicit worklists, and shared
// subobjects stay shared. Tensors and storages live in their own tables and
// are referred to by index.
#ifndef CKPTGUARD_VALUE_H_
#define CKPTGUARD_VALUE_H_

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/bulk_allocator.h"
#include "ckptguard/compact_text.h"
#include "ckptguard/dtype.h"
#include "ckptguard/inline_vec.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

using ValueId = uint32_t;

enum class ValueKind : uint8_t {
  kNone,
  kBool,       // int_value 0/1
  kInt,        // int_value
  kBigInt,     // text: decimal digits with optional '-', beyond int64
  kFloat,      // float_value
  kComplex,    // float_value (real), imag_value()
  kStr,        // text (UTF-8, lone surrogates kept as CPython's surrogatepass)
  kBytes,      // text holds the bytes; byte_array marks bytearray
  kTuple,      // items
  kList,       // items
  kDict,       // items: key, value, key, value...; ordered_dict marks OrderedDict/Counter
  kSet,        // items; frozen marks frozenset
  kTensor,     // index into Checkpoint tensors
  kStorage,    // index into Checkpoint storages
  kGlobal,     // an allowlisted global: text "module.name", index = AllowAction
  kDtype,      // dtype
  kDevice,     // text: "cpu", "cuda:0"
  kObject,     // an object whose code is never run: a TorchScript module object (text = class name,
               // items = attribute dict: key, value...) or a lazy module's uninitialised parameter
               // (text = "torch.nn.parameter.UninitializedParameter"/"UninitializedBuffer", no items)
  kRecord,     // a declared record: what a call of a data kind of rules/callables.toml (or of an
               // allowlist entry with action "record") would have built, built without calling
               // anything. text = the callable's dotted name ("argparse.Namespace"), index =
               // RecordForm, items = its arguments, its attributes (ValueArena::Attrs) = the
               // state BUILD gave it (key, value...; a state that is not a dict is kept under the
               // key "__state__").
};

// RecordForm is how a record was made (Value::index of a kRecord).
enum class RecordForm : uint8_t {
  kCall,    // text(*items): REDUCE, OBJ or INST of a constructor
  kNew,     // text.__new__(text, *items): NEWOBJ, copyreg.__newobj__, copyreg._reconstructor
  kMember,  // getattr(text, items[0]): a class attribute, as Python 3.11+ pickles Enum members
};

// RecordFormName: "call", "new", "member".
std::string_view RecordFormName(RecordForm form);

std::string_view ValueKindName(ValueKind kind);

// IdList is a Value's list of ids. Most lists a checkpoint holds are short
// tuples (a storage's persistent id, a tensor's size and stride, a rebuild
// call's arguments) and a state dict makes four of them per tensor, so the
// first six ids live in the value itself.
using IdList = InlineVec<ValueId, 6>;

// Dims is a tensor's shape or stride: four dimensions inline (every tensor
// of a typical state dict), more on the heap.
using Dims = InlineVec<int64_t, 4>;

// Value is laid out for size (a many-tensor state dict builds about ten per
// tensor): the kind, flags, dtype and index share the first eight bytes, a
// text is one word (CompactText), the ids are inline (InlineVec), a complex
// number keeps its imaginary part in int_value's bytes, and the rare
// attributes live beside the values (ValueArena::Attrs): 64 bytes.
struct Value {
  ValueKind kind = ValueKind::kNone;
  bool ordered_dict : 1 = false;  // kDict from collections.OrderedDict/Counter
  bool frozen : 1 = false;        // kSet: frozenset; kTuple: torch.Size
  bool byte_array : 1 = false;    // kBytes: bytearray
  DType dtype = DType::kFloat32;
  uint32_t index = 0;             // kTensor, kStorage, kGlobal (AllowAction)
  int64_t int_value = 0;          // kBool, kInt (kComplex: imag_value()'s bytes)
  double float_value = 0.0;       // kFloat, kComplex (the real part)
  CompactText text;
  IdList items;
  // Attributes set by BUILD on an OrderedDict (state_dict()._metadata) or a
  // record: key, value, key, value..., read with ValueArena::Attrs. Rare:
  // the value keeps only the number of its list in the arena (0: none).
  uint32_t attrs_slot = 0;

  // The imaginary part of a kComplex.
  double imag_value() const { return std::bit_cast<double>(int_value); }
  void set_imag_value(double imag) { int_value = std::bit_cast<int64_t>(imag); }
};
static_assert(sizeof(Value) <= 64, "Value grew: a many-tensor load builds ten per tensor");

// Storage is one record of tensor data: a zip `data/<key>` entry, a legacy
// raw record, a safetensors or npy byte range. `bytes` views the memory-mapped
// file (stored records) or a buffer the Checkpoint owns (inflated ones).
struct Storage {
  CompactText key;            // "0", a safetensors name, an npz member
  CompactText location;       // "cpu", "cuda:0" as written (data is always read to host memory)
  uint64_t num_elements = 0;  // elements of `dtype`
  Bytes bytes;                // num_elements x DTypeSize(dtype) bytes
  uint64_t file_offset = 0;   // where the record starts in the container bytes (0 when inflated)
  DType dtype = DType::kUInt8;  // element type of the storage as typed in the file
  bool big_endian = false;    // records written big-endian (torch 2.x byteorder, '>' npy)
  bool inflated = false;
};

// QScheme is how a quantized tensor's integers map to real values, as
// torch.qscheme names them. kNone: not quantized.
enum class QScheme : uint8_t {
  kNone,
  kPerTensorAffine,              // real = (q - zero_point) * scale
  kPerChannelAffine,             // per index along axis: scales float64, zero_points int64
  kPerChannelAffineFloatQParams, // per index along axis: scales and zero_points float32
};

// QSchemeName: "per_tensor_affine", ... as torch prints str(qscheme) without
// "torch."; "none" for kNone.
std::string_view QSchemeName(QScheme scheme);

// Quantization is the quantizer of a tensor rebuilt by
// torch._utils._rebuild_qtensor. The tensor itself is its integer
// representation (torch's int_repr(): dtype quint8, qint8 or qint32).
struct Quantization {
  QScheme scheme = QScheme::kNone;
  double scale = 0.0;       // kPerTensorAffine
  int64_t zero_point = 0;   // kPerTensorAffine
  // Per channel: indexes into the tensors of the checkpoint (1-D tensors of
  // size[axis] elements, as the file stores them; checked at load).
  uint32_t scales = 0;
  uint32_t zero_points = 0;
  int64_t axis = 0;
};

// TensorLayout is torch.layout: how a tensor's elements are stored.
enum class TensorLayout : uint8_t {
  kStrided,    // a strided view of a storage (every tensor but a sparse one)
  kSparseCoo,  // torch.sparse_coo
  kSparseCsr,  // torch.sparse_csr
  kSparseCsc,  // torch.sparse_csc
  kSparseBsr,  // torch.sparse_bsr
  kSparseBsc,  // torch.sparse_bsc
  kNested,     // a nested tensor (torch's is_nested; torch reports its layout as strided): NestedParts
};

// TensorLayoutName: "strided", "sparse_coo", ... as torch prints str(layout)
// without "torch."; "nested" for a nested tensor.
std::string_view TensorLayoutName(TensorLayout layout);

// SparseParts are the components of a sparse tensor, as the file stores them
// and as torch's accessors give them: indexes into the tensors of the
// checkpoint, each an ordinary strided tensor (checked at load: index dtypes,
// dimensions and sizes consistent with the layout and the dense size).
struct SparseParts {
  // COO: indices (_indices(): int64, sparse_dim x nnz; another dtype in the
  // file is converted at load, as torch converts it). CSR/BSR: crow_indices(),
  // CSC/BSC: ccol_indices() (int64 or int32, batch dims then compressed+1).
  uint32_t indices = 0;
  // CSR/BSR: col_indices(), CSC/BSC: row_indices() (the dtype of `indices`,
  // batch dims then nnz). Unused for COO.
  uint32_t plain_indices = 0;
  // COO: _values() (nnz x dense dims); compressed: values() (batch dims, nnz,
  // [block dims,] dense dims).
  uint32_t values = 0;
  // COO from torch >= 2.1: the is_coalesced item of the file (nullopt when
  // absent, as torch 1.x writes it).
  std::optional<bool> coalesced;
  int64_t sparse_dim = 0;  // COO: rows of indices; compressed: 2
  int64_t dense_dim = 0;   // dimensions of each stored value beyond the block
  uint64_t offset = 0;  // byte offset of the REDUCE that rebuilt it (errors of later checks name it)
};

// NestedParts are the components of a nested tensor as torch 2.x saves one
// (_rebuild_nested_tensor(buffer, sizes, strides, storage_offsets), what
// torch's values(), _nested_tensor_size(), _nested_tensor_strides() and
// _nested_tensor_storage_offsets() give): indexes into the tensors of the
// checkpoint. Component i is the view of the 1-D buffer at offsets[i] with
// sizes[i] and strides[i] (int64 tensors of n x d, n x d and n; checked at
// load to stay inside the buffer).
struct NestedParts {
  uint32_t buffer = 0;
  uint32_t sizes = 0;
  uint32_t strides = 0;
  uint32_t offsets = 0;
};

// Rare<T> is a part that most objects leave at its default (a tensor's
// quantizer, sparse or nested components): read through -> (the default
// when unset), written through Mut(), and kept on the heap only once set,
// so that a state dict's tensors do not each carry every kind's fields.
template <typename T>
class Rare {
 public:
  Rare() = default;
  Rare(const Rare& other) : p_(other.p_ ? std::make_unique<T>(*other.p_) : nullptr) {}
  Rare(Rare&&) noexcept = default;
  Rare& operator=(const Rare& other) {
    if (this != &other) p_ = other.p_ ? std::make_unique<T>(*other.p_) : nullptr;
    return *this;
  }
  Rare& operator=(Rare&&) noexcept = default;
  Rare& operator=(const T& value) {
    Mut() = value;
    return *this;
  }
  const T& operator*() const { return p_ ? *p_ : kDefault; }
  const T* operator->() const { return &**this; }
  T& Mut() {
    if (!p_) p_ = std::make_unique<T>();
    return *p_;
  }

 private:
  static inline const T kDefault{};
  std::unique_ptr<T> p_;
};

// Tensor is a strided view of a storage, exactly as torch describes it:
// element i0,i1,... lives at storage element storage_offset + sum(i_k*stride_k).
// Every view is checked against its storage before it is made.
//
// Three kinds have no bytes of their own (HasData() is false; storage,
// storage_offset mean nothing and ContiguousBytes/Sha256Hex refuse them):
// a meta tensor (torch's device "meta": dtype, shape, stride and nothing
// else), a sparse tensor (a sparse layout: dtype of its values, shape = its
// dense size, no stride; its data is the tensors in `sparse`) and a nested
// tensor (layout kNested: dtype of its buffer, shape [components], no
// stride; its data is the tensors in `nested`).
struct Tensor {
  DType dtype = DType::kFloat32;
  bool parameter = false;      // nn.Parameter
  bool requires_grad = false;
  // torch's lazy conjugate and negative bits (the metadata of torch >= 2.0's
  // _rebuild_tensor_v2/v3): the values are the stored ones conjugated
  // (complex only; a no-op on real tensors) and/or negated (floating and
  // complex only). ContiguousBytes and Sha256Hex apply them.
  bool conj = false;
  bool neg = false;
  TensorLayout layout = TensorLayout::kStrided;
  bool meta = false;           // _rebuild_meta_tensor_no_storage: shape and stride, no data
  uint32_t storage = 0;        // index into the storages
  // The Python attributes of an nn.Parameter saved with some
  // (_rebuild_parameter_with_state's state: a dict of name -> value, or a
  // (dict, slots dict) tuple), kept as values and never applied.
  std::optional<ValueId> state;
  int64_t storage_offset = 0;
  uint64_t num_elements = 0;   // product of shape
  Dims shape;
  Dims stride;
  // A numpy array whose dtype torch has no equivalent of (datetime64,
  // timedelta64, bytes, str, void, long double and its complex): numpy's
  // dtype string as the file writes it ("<M8[ns]", "|S10", "<U5", "<f16"),
  // with the elements kept as their raw bytes: dtype is uint8 and the last
  // dimension of shape is numpy's itemsize (stride 1), so the digest is that
  // of numpy's tobytes(), in the file's byte order. Empty for every other
  // tensor. Writers refuse such tensors.
  CompactText numpy_dtype;
  Rare<Quantization> quant;    // quant->scheme != kNone: a quantized tensor (dtype is its int_repr's)
  Rare<SparseParts> sparse;    // a sparse layout (offset: also set for kNested)
  Rare<NestedParts> nested;    // layout kNested (shape: [number of components])

  // HasData: the tensor is a view of a storage (not sparse, nested or meta).
  bool HasData() const { return layout == TensorLayout::kStrided && !meta; }
};
static_assert(sizeof(Tensor) <= 152, "Tensor grew: a state dict holds one per entry");
static_assert(sizeof(Storage) <= 64, "Storage grew: a state dict holds one per entry");

// DenseStrides: the strides of a C-order (or, `fortran`, Fortran-order)
// array of `shape` whose elements are `unit` storage elements each (a raw
// numpy element of so many bytes); a dimension of 0 steps as 1, as numpy
// and torch compute them. The callers have checked the product.
Dims DenseStrides(std::span<const int64_t> shape, bool fortran, int64_t unit = 1);

// NotAPlainArray says what a tensor is when it is not a plain dense array
// of a torch dtype, the only kind writers copy as it is: "a quantized tensor
// (quint8, per_tensor_affine)", "a tensor of numpy dtype <U5 (kept as its
// bytes)", "a meta tensor (float16)", "a sparse tensor (sparse_coo)".
// nullopt for a plain array. The safetensors and torch writers and convert
// refuse such tensors with it.
std::optional<std::string> NotAPlainArray(const Tensor& t);

// ValueArena owns every Value of one load. ValueIds index it. Values live
// in fixed-size chunks, so adding one never moves the others (references
// stay valid, and a large load neither copies its values on growth nor holds
// an old and a new array at once). The first kSmallChunks chunks are
// allocated one by one (a small pickle's values take one); after them,
// chunks are cut from slabs of kSlabChunks, which BulkAllocator backs with
// a huge page (a 20,000-tensor state dict keeps some 50,000 values).
class ValueArena {
 public:
  static constexpr size_t kChunkBits = 10;  // 64 KiB chunks: a load wastes half of one on average
  static constexpr size_t kChunkSize = size_t{1} << kChunkBits;  // values per chunk
  static constexpr size_t kSmallChunks = 8;
  static constexpr size_t kSlabChunks = 32;  // 2 MiB

  ValueArena() = default;
  ValueArena(ValueArena&& other) noexcept
      : chunks_(std::move(other.chunks_)),
        blocks_(std::move(other.blocks_)),
        slab_left_(std::exchange(other.slab_left_, 0)),
        size_(std::exchange(other.size_, 0)),
        attr_lists_(std::move(other.attr_lists_)) {
    other.chunks_.clear();
    other.blocks_.clear();
  }
  ValueArena& operator=(ValueArena&& other) noexcept {
    if (this != &other) {
      Release();
      chunks_ = std::move(other.chunks_);
      blocks_ = std::move(other.blocks_);
      slab_left_ = std::exchange(other.slab_left_, 0);
      size_ = std::exchange(other.size_, 0);
      attr_lists_ = std::move(other.attr_lists_);
      other.chunks_.clear();
      other.blocks_.clear();
    }
    return *this;
  }
  ValueArena(const ValueArena&) = delete;
  ValueArena& operator=(const ValueArena&) = delete;
  ~ValueArena() { Release(); }

  // Emplace hands out the next slot, a default Value (slots past size() are
  // always default: chunks are made so and PopLast resets), to be filled in
  // place instead of building a Value and moving it in.
  Value& Emplace(ValueId& id) {
    if ((size_ & (kChunkSize - 1)) == 0 && size_ >> kChunkBits == chunks_.size()) AddChunk();
    const size_t at = size_++;
    id = static_cast<ValueId>(at);
    return chunks_[at >> kChunkBits][at & (kChunkSize - 1)];
  }
  ValueId Add(Value&& value) {
    if ((size_ & (kChunkSize - 1)) == 0 && size_ >> kChunkBits == chunks_.size()) AddChunk();
    chunks_[size_ >> kChunkBits][size_ & (kChunkSize - 1)] = std::move(value);
    return static_cast<ValueId>(size_++);
  }
  const Value& Get(ValueId id) const { return chunks_[id >> kChunkBits][id & (kChunkSize - 1)]; }
  // Attrs is a value's attributes (key, value, key, value...; empty for
  // most); MutableAttrs makes value `id` a list of them if it has none.
  std::span<const ValueId> Attrs(const Value& v) const {
    if (v.attrs_slot == 0) return {};
    return attr_lists_[v.attrs_slot - 1];
  }
  std::span<const ValueId> Attrs(ValueId id) const { return Attrs(Get(id)); }
  IdList& MutableAttrs(ValueId id) {
    Value& v = Mutable(id);
    if (v.attrs_slot == 0) {
      attr_lists_.emplace_back();
      v.attrs_slot = static_cast<uint32_t>(attr_lists_.size());
    }
    return attr_lists_[v.attrs_slot - 1];
  }
  Value& Mutable(ValueId id) { return chunks_[id >> kChunkBits][id & (kChunkSize - 1)]; }
  size_t size() const { return size_; }
  // PopLast forgets the last value added (the VM reclaims a plain value that
  // nothing refers to). Its id may be handed out again.
  void PopLast() {
    --size_;
    // Destroyed and made again in place (a move-assignment of a default
    // Value costs several times that: Reclaim pops a few per tensor).
    Value& v = Mutable(static_cast<ValueId>(size_));
    std::destroy_at(&v);
    std::construct_at(&v);
  }
  // Truncate forgets every value from `n` on (n <= size()).
  void Truncate(size_t n) {
    while (size_ > n) PopLast();
  }
  // Reserve makes room for the chunk list of `n` values (the chunks
  // themselves are allocated as they fill).
  void Reserve(size_t n) { chunks_.reserve((n + kChunkSize - 1) >> kChunkBits); }

 private:
  // A block of chunks from BulkAllocator: its first chunk and how many.
  struct Block {
    Value* first;
    size_t chunks;
  };
  void AddChunk();
  void Release() noexcept;

  std::vector<Value*> chunks_;  // each kChunkSize default-made or used values
  std::vector<Block> blocks_;   // what chunks_ were cut from
  size_t slab_left_ = 0;        // chunks of blocks_.back() not yet in chunks_
  size_t size_ = 0;
  std::deque<IdList> attr_lists_;  // Value::attrs_slot - 1 indexes it (stable: spans of it stay valid)
};

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_VALUE_H_
