// Convert: a loaded checkpoint (one file, a sharded checkpoint, a
// torch.distributed.checkpoint folder) written as one safetensors file or as
// a torch zip checkpoint, through the writers' atomic, read-back path. What
// `ckptguard convert` and the Python package's convert run.
//
// safetensors holds only plain dense tensors: a tensor reachable under two
// names (tied weights) is written once and the other name noted in
// __metadata__ ("ckptguard.aliases"); plain values (epoch, lr...) are refused
// by name unless ConvertOptions::keep_metadata keeps them as JSON in
// __metadata__ ("ckptguard.values"). A torch zip keeps the whole file's
// structure, sharing and views, or rebuilds the sub-dict at the prefix as an
// OrderedDict of contiguous tensors.
#ifndef CKPTGUARD_CONVERT_H_
#define CKPTGUARD_CONVERT_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "ckptguard/checkpoint.h"
#include "ckptguard/dcp.h"
#include "ckptguard/error.h"
#include "ckptguard/sharded.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct ConvertOptions {
  std::string prefix;          // convert only the value at this dotted path ("model"); "" for all
  bool keep_metadata = false;  // safetensors: keep plain values as JSON in __metadata__ instead of refusing
};

// ConvertSummary is what was written.
struct ConvertSummary {
  size_t tensors = 0;  // tensors written
  size_t aliases = 0;  // safetensors: names of a tensor written once, noted in __metadata__
  size_t values = 0;   // safetensors: plain values kept in __metadata__
};

// Each fails with an Error whose `where` is the path the failure is about
// (`input`, or `output` when writing failed) and whose detail says why,
// naming the tensor or value; nothing is written then (or the previous
// `output` is left as it was). A file that changed while it was read fails
// before anything is committed.
Result<ConvertSummary> ConvertToSafetensors(const Checkpoint& ckpt, const std::string& input, const std::string& output,
                                            const ConvertOptions& options = {});
// A sharded checkpoint's shards merged into one file (options.prefix must be
// empty: a shard is a plain dict of tensors).
Result<ConvertSummary> ConvertToSafetensors(const ShardedCheckpoint& sharded, const std::string& input,
                                            const std::string& output, const ConvertOptions& options = {});
// A DCP folder's tensors, chunks assembled; options.prefix keeps the keys
// under a dotted path, without it.
Result<ConvertSummary> ConvertToSafetensors(const DcpCheckpoint& dcp, const std::string& input,
                                            const std::string& output, const ConvertOptions& options = {});
Result<ConvertSummary> ConvertToTorch(const Checkpoint& ckpt, const std::string& input, const std::string& output,
                                      const ConvertOptions& options = {});

enum class ConvertTo : uint8_t { kSafetensors, kTorch };

// ConvertFormatOf is the format `output`'s name says: ".safetensors", or a
// torch zip for ".pt", ".pth", ".bin", ".ckpt"; nullopt otherwise.
std::optional<ConvertTo> ConvertFormatOf(const std::string& output);

// ConvertFile loads `input` with `load` (a checkpoint file; a sharded
// checkpoint's *.index.json; a DCP folder, both only to safetensors) and
// converts it as above. Load failures name `input` (their detail is the
// load's error).
Result<ConvertSummary> ConvertFile(const std::string& input, const std::string& output, ConvertTo to,
                                   const ConvertOptions& options = {}, const LoadOptions& load = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_CONVERT_H_
