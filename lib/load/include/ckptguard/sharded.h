// Sharded checkpoints: one state dict in several files, as Hugging Face
// writes large models. An index (`model.safetensors.index.json`,
// `pytorch_model.bin.index.json`) maps every tensor name to the shard that
// holds it:
//
//   {"metadata": {"total_size": 28966928384},
//    "weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors", ...}}
//
// transformers loads every shard the index names, from the index's folder.
// ReadShardIndex reads and checks the index alone; VerifyShardedCheckpoint
// checks the shards against it.
#ifndef CKPTGUARD_SHARDED_H_
#define CKPTGUARD_SHARDED_H_

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ckptguard/verify.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// ShardIndexLimits bounds an index file.
struct ShardIndexLimits {
  // Largest index file in bytes. Default 64 MiB (a 400-billion-parameter
  // model's index is a few MiB). Ceiling: the file is read into memory.
  uint64_t max_file_len = uint64_t{64} << 20;
  // Most tensor names. Default 10,000,000.
  uint64_t max_tensors = 10'000'000;
  // Most shard files. Default 100,000.
  uint64_t max_shards = 100'000;
};

struct ShardIndex {
  std::filesystem::path index_path;
  std::filesystem::path folder;  // where the shards are, as transformers looks for them
  // Shard paths relative to `folder` that stay in it, sorted, each once. A
  // path may name a sub-folder ("a/b.bin"): loaders join it to the folder.
  std::vector<std::string> shards;
  // Tensor name -> index into `shards`, in the index's order (tensors of
  // an escaping shard or with no string value are not here).
  std::vector<std::pair<std::string, uint32_t>> weight_map;
  // Shard paths that would leave the folder (empty, absolute, a ".."
  // component, a NUL byte), each once: never opened.
  std::vector<std::string> escaping;
  // Tensor names whose weight_map value is not a string.
  std::vector<std::string> not_strings;
  std::optional<uint64_t> total_size;  // metadata.total_size, when given
};

// PathLeavesFolder: whether a relative path that a checkpoint's index or
// metadata names (a shard, a DCP item's file) may not be opened, since
// loaders join it to the checkpoint's folder: empty, absolute, with a ".."
// component or a NUL byte (a C path would end there).
bool PathLeavesFolder(std::string_view relative);

// IsShardIndexPath: whether `path` names a sharded checkpoint's index
// (its name ends in ".index.json").
bool IsShardIndexPath(std::string_view path);

// ReadShardIndex reads an index; a shard path that escapes or a value that
// is no string is kept aside (above), not an error, so callers still see
// every other shard. Errors name the index: kIo (unreadable, not a regular
// file), kLimitExceeded (ShardIndexLimits, nesting deeper than 64), kMalformed
// ("not valid JSON", "not a JSON object", "no \"weight_map\" object").
Result<ShardIndex> ReadShardIndex(const std::filesystem::path& index_path, const ShardIndexLimits& limits = {});
// ParseShardIndex is ReadShardIndex on text already read (`index_path`
// names it in errors and gives the shards' folder).
Result<ShardIndex> ParseShardIndex(std::string_view text, const std::filesystem::path& index_path,
                                   const ShardIndexLimits& limits = {});

// VerifyShardedCheckpoint verifies a sharded checkpoint through its index:
// the index itself, every shard whole (VerifyCheckpoint; problems carry the
// shard's name in `entry`), every tensor the index maps to a shard present
// in that shard, no tensor held by two shards, no shard tensor the index
// does not name. Problems about the index have kind "index". `format` is
// "sharded"; tensor counts are summed over the shards.
VerifyReport VerifyShardedCheckpoint(const std::string& index_path, const LoadOptions& options = {});

// ShardedTensor is one tensor of a sharded state dict: its name and where
// it lives (a shard, and the tensor's index in that shard's tensors()).
struct ShardedTensor {
  std::string name;
  uint32_t shard = 0;
  uint32_t tensor = 0;
};

// ShardedCheckpoint is a sharded state dict loaded as one: every shard a
// Checkpoint (zero-copy views of its own file) and the merged list of
// tensors.
class ShardedCheckpoint {
 public:
  const ShardIndex& index() const { return index_; }
  // The shards, in index().shards order.
  const std::vector<Checkpoint>& shards() const { return shards_; }
  // Every tensor, in the index's order (each name once).
  const std::vector<ShardedTensor>& tensors() const { return tensors_; }
  const Tensor& TensorOf(const ShardedTensor& t) const { return shards_[t.shard].tensors()[t.tensor]; }
  Result<std::string> Sha256Hex(const ShardedTensor& t) const { return shards_[t.shard].Sha256Hex(t.tensor); }
  // CheckUnchanged: no shard changed while it was read (Checkpoint's).
  Status CheckUnchanged() const;

 private:
  friend Result<ShardedCheckpoint> LoadShardedCheckpoint(const std::string& index_path, const LoadOptions& options);
  ShardIndex index_;
  std::vector<Checkpoint> shards_;
  std::vector<ShardedTensor> tensors_;
};

// LoadShardedCheckpoint loads every shard of an index (LoadCheckpoint, each
// with its own per-file budget) as one state dict. It fails on the first
// thing transformers would load differently from what the index says, with
// the index and the shard or tensor named: ReadShardIndex's errors; a shard
// path that leaves the folder (kInvalidArgument) or is no string
// (kMalformed); a missing shard (kIo); a shard that does not load (its
// error, `where` prefixed with the shard); a tensor the index maps to a
// shard that does not hold it, a tensor in two shards, a shard tensor the
// index does not name (kMalformed).
Result<ShardedCheckpoint> LoadShardedCheckpoint(const std::string& index_path, const LoadOptions& options = {});

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_SHARDED_H_
