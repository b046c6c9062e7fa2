// Fuzz target for LoadCheckpointBytes: every container format, the VM, the
// storage resolvers and the walks over a loaded checkpoint, with small limits.
//
// Invariants checked, strict (anomalies refused) and with allow_anomalies
// (abort on violation):
//  * never a kInternal error, from the load or from any accessor;
//  * an error offset lies within the bytes it indexes: the input when the
//    container has no gzip/bzip2/xz wrapper (otherwise offsets are in the
//    unwrapped bytes, which are not checked), or the inflated data of the
//    deflated zip entry the error names;
//  * on success, every tensor's StorageBytes lies inside its storage's bytes
//    (empty for an empty tensor, at least one element otherwise); a meta or
//    sparse tensor covers none, refuses Sha256Hex with kUnsupportedFormat,
//    and a sparse one's components are tensors with data of the table;
//  * a quantized tensor's per-channel parameters have one value per channel,
//    and Dequantize succeeds (or a limit ends it) with every element;
//  * NamedTensors and DescribeJson succeed or fail with kLimitExceeded;
//    Sha256Hex and ContiguousBytes succeed on every tensor, the digest is 64
//    hex digits and the copy holds every element;
//  * loading the same bytes twice gives the identical DescribeJson;
//  * ReadDcpMetadata (the load read as a torch.distributed.checkpoint
//    .metadata) is never kInternal, and what it accepts is consistent: every
//    tensor's chunks lie inside it and cover exactly its elements;
//  * DescribeJson is JSON (once its lone-surrogate escapes, which nlohmann
//    refuses, are made plain) and drops no tensor: every one NamedTensors
//    lists is under "tensors", or under "collisions" when its path is shared.
//
// Digests and copies take time (and a copy memory) in proportion to a
// tensor's logical size; VmLimits::max_view_bytes bounds it (a stride-0 view
// of a one-element storage may claim 2^62 elements: see
// regressions/checkpoint/broadcast-2e62-elements.pt), here to 16 MiB.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckptguard/checkpoint.h"
#include "ckptguard/container.h"
#include "ckptguard/dcp.h"
#include "ckptguard/dtype.h"
#include "ckptguard/error.h"
#include "fuzz_check.h"
#include "fuzz_limits.h"

namespace {

using ckptguard::Bytes;
using ckptguard::Checkpoint;
using ckptguard::Container;
using ckptguard::Error;
using ckptguard::ErrorCode;
using ckptguard::LoadOptions;
using ckptguard::Result;
using ckptguard::fuzz::Check;

LoadOptions SmallOptions(bool allow_anomalies) { return ckptguard::fuzz::SmallLoadOptions(allow_anomalies); }

// CheckErrorOffset: where the error's offset points must exist.
void CheckErrorOffset(const Error& err, const Container& container, size_t size, const LoadOptions& options) {
  if (!container.wrappers.empty()) return;  // offsets are in the unwrapped bytes
  uint64_t bound = size;
  // Errors inside a deflated entry's data are offsets in the inflated data.
  for (const ckptguard::ContainerEntry& e : container.entries) {
    if (e.zip.name == err.where && e.zip.method != ckptguard::kZipMethodStored) {
      bound = std::max<uint64_t>(bound, options.container.zip.max_inflated_len);
    }
  }
  Check(err.offset <= bound, "error offset inside input", err.ToString() + " (input " + std::to_string(size) + ")");
}

void CheckNotInternal(const Error& err, const char* what) {
  Check(err.code != ErrorCode::kInternal, what, err.ToString());
}

// TensorCounter counts, while nlohmann's SAX parser reads a DescribeJson,
// the keys of "tensors", the groups of "collisions" and the tensors in them.
// (Parsing into a json object would merge equal keys and hide a loss.)
struct TensorCounter {
  using Json = nlohmann::json;
  int depth = 0;
  std::string top;  // the member of the top object being read
  uint64_t tensors = 0, groups = 0, entries = 0;

  bool start_object(std::size_t) {
    ++depth;
    if (top == "collisions" && depth == 3) ++groups;
    if (top == "collisions" && depth == 5) ++entries;
    return true;
  }
  bool key(Json::string_t& k) {
    if (depth == 1) top = k;
    if (depth == 2 && top == "tensors") ++tensors;
    return true;
  }
  bool end_object() { return --depth, true; }
  bool start_array(std::size_t) { return ++depth, true; }
  bool end_array() { return --depth, true; }
  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(Json::number_integer_t) { return true; }
  bool number_unsigned(Json::number_unsigned_t) { return true; }
  bool number_float(Json::number_float_t, const Json::string_t&) { return true; }
  bool string(Json::string_t&) { return true; }
  bool binary(Json::binary_t&) { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) { return false; }
};

void CheckDescribed(const std::string& described, uint64_t num_named) {
  // \udXXX escapes of lone surrogates become \u0XXX: nlohmann refuses
  // them, and they are valid JSON otherwise.
  std::string plain = described;
  for (size_t at = plain.find("\\ud"); at != std::string::npos; at = plain.find("\\ud", at + 3)) plain[at + 2] = '0';
  TensorCounter counter;
  const bool parsed = nlohmann::json::sax_parse(plain, &counter);
  Check(parsed, "DescribeJson is JSON", described.substr(0, 400));
  if (!parsed) return;
  Check(counter.tensors + counter.entries - counter.groups == num_named,
        "DescribeJson lists every tensor NamedTensors does (under tensors or collisions)", described.substr(0, 400));
}

// CheckLoaded checks a successful load and returns its DescribeJson (or the
// kLimitExceeded message, which must be deterministic too).
std::string CheckLoaded(const Checkpoint& ck, bool digests) {
  const auto& tensors = ck.tensors();
  const auto& storages = ck.storages();
  for (uint32_t i = 0; i < tensors.size(); ++i) {
    const ckptguard::Tensor& t = tensors[i];
    if (!t.HasData()) {
      // A meta tensor (shape, no data), a sparse or a nested one (its data
      // are its component tensors, strided tensors with data of the same
      // table).
      Check(ck.StorageBytes(i).empty(), "a tensor without data covers no bytes");
      if (t.meta) {
        Check(t.layout == ckptguard::TensorLayout::kStrided && t.shape.size() == t.stride.size(),
              "a meta tensor is strided, shape and stride of one rank");
      } else if (t.layout == ckptguard::TensorLayout::kNested) {
        // A nested tensor: four components, each a strided tensor with data;
        // every component view was checked to stay inside the buffer.
        const ckptguard::NestedParts& np = *t.nested;
        Check(t.stride.empty() && t.shape.size() == 1, "a nested tensor has [components] and no stride");
        Check(np.buffer < tensors.size() && np.sizes < tensors.size() && np.strides < tensors.size() &&
                  np.offsets < tensors.size(),
              "nested components in range");
        Check(tensors[np.buffer].HasData() && tensors[np.sizes].HasData() && tensors[np.strides].HasData() &&
                  tensors[np.offsets].HasData() && tensors[np.buffer].shape.size() == 1,
              "nested components are strided tensors with data, the buffer 1-D");
      } else {
        const ckptguard::SparseParts& sp = *t.sparse;
        const bool coo = t.layout == ckptguard::TensorLayout::kSparseCoo;
        Check(t.stride.empty(), "a sparse tensor has no stride");
        Check(sp.indices < tensors.size() && sp.values < tensors.size() && (coo || sp.plain_indices < tensors.size()),
              "sparse components in range");
        Check(tensors[sp.indices].HasData() && tensors[sp.values].HasData() &&
                  (coo || tensors[sp.plain_indices].HasData()),
              "sparse components are strided tensors with data");
      }
      if (digests) {
        Result<std::string> digest = ck.Sha256Hex(i);
        Check(!digest.has_value() && digest.error().code == ErrorCode::kUnsupportedFormat,
              "Sha256Hex of a tensor without data fails with kUnsupportedFormat",
              digest ? *digest : digest.error().ToString());
      }
      continue;
    }
    Check(t.storage < storages.size(), "tensor storage index in range");
    Check(t.shape.size() == t.stride.size(), "shape and stride have the same rank");
    const ckptguard::Storage& st = storages[t.storage];
    const Bytes view = ck.StorageBytes(i);
    if (t.num_elements == 0) {
      Check(view.empty(), "an empty tensor covers no bytes");
    } else {
      const uint8_t* lo = st.bytes.data();
      const uint8_t* hi = lo + st.bytes.size();
      Check(view.data() >= lo && view.data() <= hi && view.size() <= static_cast<size_t>(hi - view.data()),
            "StorageBytes inside its storage");
      Check(view.size() >= ckptguard::DTypeSize(t.dtype), "a non-empty tensor covers at least one element");
    }
    if (t.quant->scheme != ckptguard::QScheme::kNone && t.quant->scheme != ckptguard::QScheme::kPerTensorAffine) {
      Check(t.quant->axis >= 0 && static_cast<size_t>(t.quant->axis) < t.shape.size(), "per-channel axis in range");
      Check(t.quant->scales < tensors.size() && t.quant->zero_points < tensors.size(), "per-channel params in range");
      Check(tensors[t.quant->scales].num_elements == static_cast<uint64_t>(t.shape[t.quant->axis]) &&
                tensors[t.quant->zero_points].num_elements == static_cast<uint64_t>(t.shape[t.quant->axis]),
            "one scale and one zero point per channel");
    }
    if (!digests) continue;
    if (t.quant->scheme != ckptguard::QScheme::kNone) {
      Result<std::vector<float>> real = ck.Dequantize(i);
      Check(real.has_value() || real.error().code == ErrorCode::kLimitExceeded, "Dequantize succeeds or a limit ends it",
            real ? std::string() : real.error().ToString());
      if (real) Check(real->size() == t.num_elements, "Dequantize has every element");
    }
    Result<std::string> digest = ck.Sha256Hex(i);
    // Hashing charges the view's logical size to the file's budget: it may
    // run out (a stride-0 view of 2^30 elements), and then says so by name.
    Check(digest.has_value() || digest.error().limit == "max_view_bytes", "Sha256Hex succeeds or the budget ends it",
          digest ? std::string() : digest.error().ToString());
    if (!digest) continue;
    Check(digest->size() == 64, "Sha256Hex is 64 hex digits");
    Result<std::vector<uint8_t>> bytes = ck.ContiguousBytes(i);
    Check(bytes.has_value() || bytes.error().code == ErrorCode::kLimitExceeded, "ContiguousBytes succeeds",
          bytes ? std::string() : bytes.error().ToString());
    if (bytes) {
      Check(bytes->size() == ckptguard::DTypePackedBytes(t.dtype, t.num_elements), "ContiguousBytes has every element");
    }
  }
  Result<std::vector<ckptguard::NamedTensor>> named = ck.NamedTensors();
  if (named) {
    for (const auto& nt : *named) Check(nt.tensor < tensors.size(), "NamedTensors index in range");
  } else {
    Check(named.error().code == ErrorCode::kLimitExceeded, "NamedTensors fails only on limits",
          named.error().ToString());
  }
  Result<std::string> json = ck.DescribeJson("", digests);
  if (json && named) CheckDescribed(*json, named->size());
  if (json) return *json;
  Check(json.error().code == ErrorCode::kLimitExceeded, "DescribeJson fails only on limits", json.error().ToString());
  return "error: " + json.error().ToString();
}

// CheckDcpMetadata reads a load as a DCP .metadata (records on, as
// LoadDcpCheckpoint reads it) and checks what ReadDcpMetadata accepts.
void CheckDcpMetadata(const Checkpoint& ckpt) {
  Result<ckptguard::DcpMetadata> md = ckptguard::ReadDcpMetadata(ckpt, ckptguard::DcpLimits{});
  if (!md) {
    CheckNotInternal(md.error(), "ReadDcpMetadata is never kInternal");
    return;
  }
  for (const ckptguard::DcpEntry& e : md->entries) {
    if (!e.is_tensor) continue;
    unsigned __int128 total = 1;
    for (int64_t d : e.size) total *= static_cast<uint64_t>(d);
    unsigned __int128 covered = 0;
    for (const ckptguard::DcpChunk& c : e.chunks) {
      Check(c.offsets.size() == e.size.size() && c.sizes.size() == e.size.size(), "a chunk has the tensor's rank");
      unsigned __int128 v = 1;
      for (size_t k = 0; k < e.size.size(); ++k) {
        Check(c.offsets[k] >= 0 && c.sizes[k] >= 0 && c.offsets[k] + c.sizes[k] <= e.size[k], "a chunk lies inside");
        v *= static_cast<uint64_t>(c.sizes[k]);
      }
      covered += v;
    }
    Check(covered == total, "the chunks cover the tensor");
  }
}

void RunOnce(const uint8_t* data, size_t size, bool allow_anomalies, const Container& container) {
  LoadOptions options = SmallOptions(allow_anomalies);
  options.threads = 1;
  const Bytes input(data, size);
  Result<Checkpoint> first = ckptguard::LoadCheckpointBytes(input, options);
  // A zip's data.pkl run beside its container (on a second thread) gives
  // what a run after it gives, error or values, and is kept only when the
  // container reads what the directory alone does.
  LoadOptions beside = options;
  beside.threads = 2;
  beside.run_beside_container = true;
  beside.parallel_min_bytes = 0;
  Result<Checkpoint> other = ckptguard::LoadCheckpointBytes(input, beside);
  // The same with only the memo scan of data.pkl made on the other thread.
  LoadOptions ahead = beside;
  ahead.run_beside_container = false;
  Result<Checkpoint> scanned = ckptguard::LoadCheckpointBytes(input, ahead);
  Check(scanned.has_value() == first.has_value() &&
            (scanned ? !scanned->ran_beside_container() : scanned.error().ToString() == first.error().ToString()),
        "a load with the memo scan ahead fails or succeeds as one without");
  // Tensor records read whole (pickle_machine.h MachineTensorRecord) leave
  // what their opcodes run one by one leave: the same values, the same
  // error at the same opcode, the same limit reached.
  LoadOptions by_opcode = options;
  by_opcode.tensor_records = false;
  {
    Result<Checkpoint> plain = ckptguard::LoadCheckpointBytes(input, by_opcode);
    Check(plain.has_value() == first.has_value(), "tensor records load or fail as their opcodes do",
          plain.has_value() == first.has_value() ? std::string()
          : first                                ? plain.error().ToString()
                                                 : first.error().ToString());
    if (!first) {
      Check(plain.error().ToString() == first.error().ToString(), "tensor records fail as their opcodes do",
            first.error().ToString() + " vs " + plain.error().ToString());
    } else {
      Result<Checkpoint> fused = ckptguard::LoadCheckpointBytes(input, options);
      Result<std::string> a = fused->DescribeJson("", true);
      Result<std::string> b = plain->DescribeJson("", true);
      Check((a ? *a : a.error().ToString()) == (b ? *b : b.error().ToString()),
            "tensor records give what their opcodes give");
    }
  }
  if (!first) {
    CheckNotInternal(first.error(), "load is never kInternal");
    CheckErrorOffset(first.error(), container, size, options);
    Check(!other.has_value() && other.error().ToString() == first.error().ToString(),
          "a load beside the container fails as one after it", first.error().ToString() + " vs " +
          (other ? std::string("a checkpoint") : other.error().ToString()));
    return;
  }
  Check(other.has_value(), "a load beside the container succeeds as one after it",
        other ? std::string() : other.error().ToString());
  Check(!other->ran_beside_container() || (other->anomalies().empty() && other->format() == ckptguard::ContainerFormat::kTorchZip),
        "a run beside is kept only for a plain torch zip");
  Check(!first->anomalies().empty() ? allow_anomalies : true, "a strict load has no anomalies");
  const bool digests = true;
  // Compared on fresh loads: each Checkpoint charges its own file budget, and
  // CheckLoaded's digests and copies spend it (an error's totals then differ).
  Result<std::string> fresh = first->DescribeJson("", digests);
  const std::string dump = fresh ? *fresh : "error: " + fresh.error().ToString();
  Result<std::string> other_json = other->DescribeJson("", digests);
  Check(dump == (other_json ? *other_json : "error: " + other_json.error().ToString()),
        "a load beside the container gives what one after it gives");
  CheckLoaded(*first, digests);
  CheckDcpMetadata(*first);
  Result<Checkpoint> second = ckptguard::LoadCheckpointBytes(input, options);
  Check(second.has_value(), "a second load of the same bytes succeeds",
        second ? std::string() : second.error().ToString());
  Result<std::string> again = second->DescribeJson("", digests);
  const std::string dump2 = again ? *again : "error: " + again.error().ToString();
  Check(dump == dump2, "DescribeJson is deterministic");
  // Reclaiming used-up values changes memory, never what a load gives
  // (a value reclaimed while something still reached it would show here).
  // Without it more values are held, so a limit may end that load first.
  LoadOptions keep = options;
  keep.reclaim = false;
  Result<Checkpoint> kept = ckptguard::LoadCheckpointBytes(input, keep);
  if (!kept) {
    Check(kept.error().code == ErrorCode::kLimitExceeded, "a load that keeps every value fails only on a limit",
          kept.error().ToString());
    return;
  }
  Result<std::string> kept_json = kept->DescribeJson("", digests);
  const std::string dump3 = kept_json ? *kept_json : "error: " + kept_json.error().ToString();
  Check(dump == dump3, "reclaiming changes nothing a load gives", dump.substr(0, 300) + " vs " + dump3.substr(0, 300));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const LoadOptions options = SmallOptions(false);
  const Container container = ckptguard::OpenContainer(Bytes(data, size), options.container);
  RunOnce(data, size, false, container);
  RunOnce(data, size, true, container);
  return 0;
}
