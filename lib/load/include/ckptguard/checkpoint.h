// LoadCheckpoint: a checkpoint file into native tensors, executing nothing.
//
// Reads torch zip (1.x and 2.x layouts, stored or deflated records), legacy
// torch, safetensors, numpy .npy/.npz and the data.pkl of TorchScript archives
// (weights only: the archive's code is never run). The file is memory-mapped;
// tensors are zero-copy views of its records (a deflated record is inflated
// once into a buffer the Checkpoint owns), valid while the Checkpoint lives.
//
// Zero-copy views see the file as it is when they are read: if another
// process truncates or rewrites the file while the Checkpoint lives, tensor
// data may change under the views or read as zero pages (never a crash; see
// mapped_file.h). Checkpoint::CheckUnchanged tells; LoadOptions::file.mode =
// MapMode::kRead reads the file into owned memory instead and is immune.
#ifndef CKPTGUARD_CHECKPOINT_H_
#define CKPTGUARD_CHECKPOINT_H_

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/allowlist.h"
#include "ckptguard/container.h"
#include "ckptguard/error.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/value.h"
#include "ckptguard/vm.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// LoaderContainerLimits: ContainerLimits for loading. CRCs are not computed
// (torch does not check them either; `ckptguard info` and `verify` do), so a
// load never pages in tensor data it is not asked for, and the records are
// checked against data.pkl by the VM as it resolves them, not decoded twice.
ContainerLimits LoaderContainerLimits();

struct LoadOptions {
  VmLimits limits;
  ContainerLimits container = LoaderContainerLimits();
  const Allowlist* allowlist = nullptr;  // nullptr: BuiltinAllowlist()
  // By default any container anomaly (a local header that disagrees with the
  // directory, a CRC mismatch, a record of the wrong size...) fails the load:
  // the file is not what torch wrote. true loads anyway, reading what torch
  // would read; the anomalies stay in Checkpoint::anomalies().
  bool allow_anomalies = false;
  // The per-file budget (budget.h): LoadCheckpoint creates one Budget from
  // these and every stage charges it (unwrapping, inflating, the container,
  // each pickle, the walks, digests and copies of views).
  BudgetLimits budget;
  // How LoadCheckpoint reads the file (mapped_file.h): a guarded zero-copy
  // map (the default) or, with file.mode = MapMode::kRead, a pread into
  // memory the Checkpoint owns (at most file.max_read_len bytes).
  MappedFileOptions file;
  // Declared records (vm.h VmOptions::records): on by default; false loads
  // only what torch.load(weights_only=True) loads.
  bool records = true;
  // Reclaiming used-up pickle values (vm.h VmOptions::reclaim): on by
  // default; false only costs memory (the fuzzers compare both).
  bool reclaim = true;
  // Tensor records read whole (vm.h VmOptions::tensor_records): on by
  // default; false runs every opcode on its own, for the same result.
  bool tensor_records = true;
  // Threads a load may use. With 2 (the default), a torch zip of at least
  // parallel_min_bytes has the first step of its data.pkl run, finding the
  // memo keys the pickle reads (pickle_machine.h ScanMemoReads), done on a
  // second thread while this one opens the container (every local header,
  // every entry examined for hidden pickles and archives): the same work,
  // the same memory, about a tenth less time for a 20,000-record state dict
  // (docs/benchmarks.md). 1 never starts a thread; nor does a load when the
  // system refuses one (it then runs on this thread).
  unsigned threads = 2;
  uint64_t parallel_min_bytes = uint64_t{1} << 20;
  // With threads of 2 or more, also run data.pkl itself on this thread
  // against the directory alone while the other opens the container; the
  // run is kept only when the opened container agrees with the directory on
  // everything the run read and the file's budget holds both, and is
  // otherwise run again against the container. The result is the same
  // either way. The price is memory: the file's pages that opening the
  // container reads stay resident while the pickle runs (one after the
  // other, they never overlap), so the peak RSS can grow by up to the
  // file's size. Off by default.
  bool run_beside_container = false;
};

// NamedTensor is a tensor reachable from the root with its dotted path, as
// the corpus names them: dict keys and list/tuple indexes joined by '.'.
struct NamedTensor {
  std::string path;
  uint32_t tensor = 0;  // index into tensors()
};

class Checkpoint {
 public:
  Checkpoint(Checkpoint&&) noexcept;
  Checkpoint& operator=(Checkpoint&&) noexcept;
  ~Checkpoint();

  ContainerFormat format() const;
  // ContainerInfo: the container as read (entries, anomalies).
  const Container& container() const;
  const Anomalies& anomalies() const;
  // Notes: facts a user should know, e.g. that a TorchScript archive's code
  // was not run.
  const std::vector<std::string>& notes() const;

  const ValueArena& values() const;
  ValueId root() const;
  // ran_beside_container: data.pkl ran while another thread opened the
  // container, and that run was kept (LoadOptions::threads). For tests and
  // benchmarks; the Checkpoint is the same either way.
  bool ran_beside_container() const;
  // tensor_records: how many tensors the pickle machine read as whole
  // records (LoadOptions::tensor_records). For tests and benchmarks; the
  // Checkpoint is the same either way.
  uint64_t tensor_records() const;
  // scanned_ahead: data.pkl's memo reads were found on another thread while
  // the container opened, and the run used them (LoadOptions::threads). For
  // tests and benchmarks; the Checkpoint is the same either way.
  bool scanned_ahead() const;
  std::span<const Tensor> tensors() const;
  std::span<const Storage> storages() const;

  // Find follows a dotted path of dict keys / list indexes from the root
  // ("model", "optimizer.state.0"); nullopt when there is none. A dict key
  // that contains dots ("hidden.weight") is matched whole first.
  std::optional<ValueId> Find(std::string_view dotted_path) const;

  // NamedTensors lists every tensor reachable from `from` (default the root),
  // depth first in dict/list order, with its path. A tensor reachable twice is
  // listed twice. Fails with kLimitExceeded on cycles or huge expansions.
  Result<std::vector<NamedTensor>> NamedTensors(std::optional<ValueId> from = std::nullopt) const;

  // StateDict is NamedTensors of the value at `prefix` ("" for the root),
  // failing with kInvalidArgument naming the prefix when it is not there.
  Result<std::vector<NamedTensor>> StateDict(std::string_view prefix = "") const;

  // GetInt returns the int at a dotted path (e.g. "epoch"); GetFloat a float
  // (or an int, converted); GetString a str. nullopt when the path is absent
  // or holds another kind of value.
  std::optional<int64_t> GetInt(std::string_view dotted_path) const;
  std::optional<double> GetFloat(std::string_view dotted_path) const;
  std::optional<std::string> GetString(std::string_view dotted_path) const;

  // ContiguousBytes copies a tensor's elements in C order, little-endian
  // (big-endian records are swapped), bool as one byte per element.
  Result<std::vector<uint8_t>> ContiguousBytes(uint32_t tensor) const;
  // Sha256Hex is the SHA-256 of ContiguousBytes, computed without the copy.
  // Both charge the view's logical size (elements x element size, which a
  // stride-0 view makes far larger than its storage) to the file's budget
  // (BudgetKind::kViewBytes) first, and fail naming max_view_bytes when it
  // runs out.
  Result<std::string> Sha256Hex(uint32_t tensor) const;
  // ChargeView charges what ContiguousBytes/Sha256Hex would, for callers that
  // read a view's elements themselves (writers, converters).
  // All three fail with kUnsupportedFormat for a tensor without data of its
  // own (Tensor::HasData() false): a meta tensor, or a sparse tensor, whose
  // component tensors (Tensor::sparse) are read instead.
  Status ChargeView(uint32_t tensor, std::string_view what) const;
  // QuantParams returns a quantized tensor's scales (zero_points false) or
  // zero points (true) as doubles: one value per tensor, or one per index
  // along the axis. kInvalidArgument for a tensor that is not quantized.
  Result<std::vector<double>> QuantParams(uint32_t tensor, bool zero_points) const;
  // Dequantize returns a quantized tensor's real values in C order, as
  // torch's dequantize() computes them in scalar code: (q - zero_point) *
  // scale in float32 (torch's vectorised kernels use a fused multiply-add
  // and may differ in the last bit). Charges the float32 result and the
  // integers to the budget. kInvalidArgument for a tensor that is not
  // quantized.
  Result<std::vector<float>> Dequantize(uint32_t tensor) const;
  // BudgetUsed is what the load has charged to the file's budget so far.
  uint64_t BudgetUsed(BudgetKind kind) const;
  // TensorBytes is the zero-copy span of the storage bytes a view covers
  // (from its first to its last element), in the file's byte order; empty
  // for a meta or sparse tensor.
  Bytes StorageBytes(uint32_t tensor) const;

  // CheckUnchanged: kIo ChangedWhileReading (input_file.h) when the file the
  // Checkpoint maps was truncated or rewritten since it was opened, so what
  // was read from it (values, tensor bytes, digests) may be torn. Call it
  // after reading tensor data. OK for LoadCheckpointBytes and kRead loads.
  Status CheckUnchanged() const;

  // SkeletonJson renders the non-tensor structure as the corpus's
  // .expect.json "skeleton" (tensors as "<tensor>"): {"__dict__": [[k, v],
  // ...]} (plus "__object__": class for objects), {"__list__": [...]},
  // {"__tuple__": [...]}, {"__set__": [...]}, {"__bytes__": hex},
  // {"__bigint__": "digits"} (beyond 2^53), {"__float__": "nan"/"inf"/"-inf"},
  // {"__complex__": [re, im]} (each part a number or a __float__ object),
  // {"__device__": d}, {"__global__": "module.name"}, dtypes as "torch.<name>".
  // A str is a JSON string with its lone surrogates as \udXXX escapes (as
  // json.dumps writes them), or {"__str__": hex of its surrogatepass UTF-8}
  // when it holds a high surrogate directly followed by a low one (which a
  // JSON reader would join). Fails with kLimitExceeded on max_walk_nodes or
  // max_walk_depth.
  Result<std::string> SkeletonJson() const;

  // DescribeJson renders the load in the shape of the corpus's .expect.json:
  // {"kind", "tensors": {path: {dtype, shape, stride, storage_offset,
  // parameter, sha256}}, "skeleton"}, plus "notes" and "anomalies" when there
  // are any. A quantized tensor adds "qscheme" and "q_scale", "q_zero_point"
  // (per tensor) or "q_per_channel_axis", "q_per_channel_scales",
  // "q_per_channel_zero_points" (lists of numbers; read from their tensors
  // even when `digests` is false). And:
  //  - "collisions" when two tensors have paths a JSON reader sees as one key
  //    ({'a.b': t1, 'a': {'b': t2}}): [{"path", "tensors": [{"keys", dtype,
  //    ...}, ...]}], every such tensor with its keys from `prefix`'s value
  //    (dict keys as skeleton values, list indexes as numbers); "tensors"
  //    holds the first of them in walk order.
  //  - "attrs" when OrderedDicts have attributes set by BUILD
  //    (state_dict()._metadata): [{"keys": keys from the root, "attrs":
  //    {"__dict__": [[name, value], ...]}}], once per path that reaches one
  //    (an attribute step in keys is {"__attr__": name}).
  // `prefix` selects a sub-dict as StateDict does; `digests` false skips the
  // SHA-256 (and so reads no tensor data). Members are in sorted order.
  Result<std::string> DescribeJson(std::string_view prefix = "", bool digests = true) const;

  struct State;  // opaque: the mapped file, container, values and buffers

 private:
  friend Result<Checkpoint> LoadCheckpointImpl(MappedFile file, Bytes data, const LoadOptions& options);
  explicit Checkpoint(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// LoadCheckpoint maps (or reads, per options.file) and loads `path`. A file
// that changed while it was loaded fails with kIo ChangedWhileReading instead
// of whatever the torn bytes gave. Errors name the file, the entry and
// the byte offset: kForbiddenGlobal for any global outside the allowlist,
// kUnsupportedFormat for known but unsupported content (tensor subclasses,
// object arrays), kMalformed/kTruncated for broken files, and
// kLimitExceeded naming the limit.
Result<Checkpoint> LoadCheckpoint(const std::string& path, const LoadOptions& options = {});

// LoadCheckpointBytes loads a checkpoint held in memory (an upload buffer, a
// fuzzer input). `data` must outlive the result; errors as LoadCheckpoint.
Result<Checkpoint> LoadCheckpointBytes(Bytes data, const LoadOptions& options = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_CHECKPOINT_H_
