// Fuzz target for ParseShardIndex (lib/load/include/ckptguard/sharded.h):
// the index of a sharded checkpoint, which names the files a loader opens.
//
// Invariants checked (abort on violation):
//  * never a kInternal error;
//  * on success: `shards` is sorted and unique, and no shard path could
//    leave the folder (empty, absolute, a ".." component, a NUL byte);
//    every such path is in `escaping` instead; every weight_map entry
//    points into `shards`, and its name is not also in `not_strings`;
//  * parsing is deterministic.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "ckptguard/sharded.h"
#include "fuzz_check.h"

namespace {

using ckptguard::fuzz::Check;

// LeavesFolder restates the rule independently of the parser.
bool LeavesFolder(const std::string& shard) {
  if (shard.empty() || shard[0] == '/' || shard.find('\0') != std::string::npos) return true;
  size_t start = 0;
  while (start <= shard.size()) {
    size_t end = shard.find('/', start);
    if (end == std::string::npos) end = shard.size();
    if (shard.compare(start, end - start, "..") == 0 && end - start == 2) return true;
    start = end + 1;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ckptguard::ShardIndexLimits limits;
#ifndef CKPTGUARD_FUZZ_DEFAULT_LIMITS
  limits.max_tensors = 1 << 12;
  limits.max_shards = 1 << 10;
#endif
  const std::filesystem::path where = "/models/m/model.safetensors.index.json";
  auto a = ckptguard::ParseShardIndex(text, where, limits);
  auto b = ckptguard::ParseShardIndex(text, where, limits);
  Check(a.has_value() == b.has_value(), "deterministic");
  if (!a) {
    Check(a.error().code != ckptguard::ErrorCode::kInternal, "no internal error", a.error().ToString());
    Check(a.error().ToString() == b.error().ToString(), "deterministic error");
    return 0;
  }
  Check(a->folder == "/models/m", "folder");
  Check(std::is_sorted(a->shards.begin(), a->shards.end()), "shards sorted");
  Check(std::adjacent_find(a->shards.begin(), a->shards.end()) == a->shards.end(), "shards unique");
  for (const std::string& s : a->shards) Check(!LeavesFolder(s), "a kept shard stays in the folder", s);
  for (const std::string& s : a->escaping) Check(LeavesFolder(s), "an escaping shard leaves the folder", s);
  for (const auto& [tensor, shard] : a->weight_map) {
    Check(shard < a->shards.size(), "weight_map points into shards");
    Check(std::find(a->not_strings.begin(), a->not_strings.end(), tensor) == a->not_strings.end(),
          "a tensor is either mapped or not a string", tensor);
  }
  Check(a->shards == b->shards && a->weight_map == b->weight_map && a->escaping == b->escaping, "deterministic");
  return 0;
}
