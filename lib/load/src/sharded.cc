#include "ckptguard/sharded.h"

#include <algorithm>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "ckptguard/input_file.h"

namespace ckptguard {
namespace {

namespace fs = std::filesystem;

std::unexpected<Error> IndexError(ErrorCode code, const fs::path& index, std::string detail) {
  return MakeError(code, 0, std::move(detail), index.filename().string());
}

// IndexProblem is one way an index or its shards disagree with what a
// loader would read, with the error code LoadShardedCheckpoint gives it.
struct IndexProblem {
  ErrorCode code;
  std::string detail;
};

// IndexOnlyProblems: what is wrong with the index itself (shard paths that
// would leave the folder, shards that are no string), before any shard is
// opened.
std::vector<IndexProblem> IndexOnlyProblems(const ShardIndex& index) {
  std::vector<IndexProblem> out;
  for (const std::string& shard : index.escaping) {
    out.push_back({ErrorCode::kInvalidArgument, "shard \"" + shard + "\" leaves the index's folder: not read"});
  }
  for (const std::string& tensor : index.not_strings) {
    out.push_back({ErrorCode::kMalformed, "the shard of tensor \"" + tensor + "\" is not a string"});
  }
  return out;
}

// MissingShard: a shard the index names that is not in its folder.
std::optional<IndexProblem> MissingShard(const ShardIndex& index, uint32_t s) {
  std::error_code ec;
  if (fs::exists(fs::symlink_status(index.folder / index.shards[s], ec))) return std::nullopt;
  return IndexProblem{ErrorCode::kIo, "shard " + index.shards[s] + " is missing"};
}

// ShardAgreement compares what the shards hold with what the index maps to
// them. `contents[s]` is shard s's state dict, or nullopt when it could not
// be read (nothing is compared for it). `held` is every name's first holder
// (shard, tensor); `problems` come in the order LoadShardedCheckpoint
// reports the first of them: a name twice in one shard or in two shards,
// then a tensor mapped to a shard that does not hold it (index order), then
// a shard tensor the index does not map to that shard.
struct ShardAgreement {
  std::map<std::string, std::pair<uint32_t, uint32_t>, std::less<>> held;
  std::vector<IndexProblem> problems;
};

ShardAgreement CompareShards(const ShardIndex& index,
                             const std::vector<std::optional<std::vector<NamedTensor>>>& contents) {
  ShardAgreement out;
  std::vector<std::vector<std::string_view>> names(index.shards.size());  // sorted, per shard
  for (uint32_t s = 0; s < index.shards.size(); ++s) {
    if (!contents[s]) continue;
    for (const NamedTensor& t : *contents[s]) {
      auto [it, first] = out.held.emplace(t.path, std::pair<uint32_t, uint32_t>{s, t.tensor});
      if (!first && it->second.first == s && it->second.second != t.tensor) {
        out.problems.push_back({ErrorCode::kMalformed, "shard " + index.shards[s] + " holds two tensors named \"" +
                                                           t.path + "\" (keys with dots)"});
      } else if (!first && it->second.first != s) {
        out.problems.push_back({ErrorCode::kMalformed, "tensor \"" + t.path + "\" is in two shards: " +
                                                           index.shards[it->second.first] + " and " + index.shards[s]});
      }
      names[s].push_back(t.path);
    }
    std::sort(names[s].begin(), names[s].end());
    names[s].erase(std::unique(names[s].begin(), names[s].end()), names[s].end());
  }
  std::vector<std::vector<std::string_view>> mapped(index.shards.size());  // sorted, per shard
  for (const auto& [name, shard] : index.weight_map) {
    mapped[shard].push_back(name);
    if (contents[shard] && !std::binary_search(names[shard].begin(), names[shard].end(), std::string_view(name))) {
      out.problems.push_back({ErrorCode::kMalformed, "tensor \"" + name + "\" is mapped to " + index.shards[shard] +
                                                         ", which does not hold it"});
    }
  }
  for (uint32_t s = 0; s < index.shards.size(); ++s) {
    std::sort(mapped[s].begin(), mapped[s].end());
    for (std::string_view name : names[s]) {
      if (!std::binary_search(mapped[s].begin(), mapped[s].end(), name)) {
        out.problems.push_back({ErrorCode::kMalformed, "shard " + index.shards[s] + " holds tensor \"" +
                                                           std::string(name) + "\", which the index does not map to it"});
      }
    }
  }
  return out;
}

}  // namespace

bool PathLeavesFolder(std::string_view relative) {
  if (relative.empty() || relative.front() == '/' || relative.find('\0') != std::string_view::npos) return true;
  for (const fs::path& part : fs::path(relative)) {
    if (part == "..") return true;
  }
  return false;
}

bool IsShardIndexPath(std::string_view path) { return path.ends_with(".index.json"); }

Result<ShardIndex> ReadShardIndex(const fs::path& index_path, const ShardIndexLimits& limits) {
  Result<std::string> text = ReadInputFile(index_path.string(), limits.max_file_len);
  if (!text) return std::unexpected(std::move(text).error());
  return ParseShardIndex(*text, index_path, limits);
}

Result<ShardIndex> ParseShardIndex(std::string_view text, const fs::path& index_path, const ShardIndexLimits& limits) {
  if (text.size() > limits.max_file_len) {
    return IndexError(ErrorCode::kLimitExceeded, index_path,
                      "max_file_len (" + std::to_string(limits.max_file_len) + ") exceeded");
  }
  // An index nests three deep; a hostile one's depth is refused before the
  // document is built (and later copied and destroyed) at all.
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > 64) return IndexError(ErrorCode::kLimitExceeded, index_path, "nested deeper than 64 levels");
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  const nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return IndexError(ErrorCode::kMalformed, index_path, "not valid JSON");
  if (!doc.is_object()) return IndexError(ErrorCode::kMalformed, index_path, "not a JSON object");
  const auto map = doc.find("weight_map");
  if (map == doc.end() || !map->is_object()) {
    return IndexError(ErrorCode::kMalformed, index_path, "no \"weight_map\" object");
  }
  if (map->size() > limits.max_tensors) {
    return IndexError(ErrorCode::kLimitExceeded, index_path,
                      "max_tensors (" + std::to_string(limits.max_tensors) + ") exceeded");
  }
  ShardIndex out;
  out.index_path = index_path;
  out.folder = index_path.parent_path();
  std::map<std::string, uint32_t> shard_ids;
  std::set<std::string> escaping;
  std::vector<std::pair<std::string, std::string>> named;
  named.reserve(map->size());
  for (const auto& [tensor, shard] : map->items()) {
    if (!shard.is_string()) {
      out.not_strings.push_back(tensor);
      continue;
    }
    const std::string& file = shard.get_ref<const std::string&>();
    if (PathLeavesFolder(file)) {
      escaping.insert(file);
      continue;
    }
    if (shard_ids.emplace(file, 0).second && shard_ids.size() > limits.max_shards) {
      return IndexError(ErrorCode::kLimitExceeded, index_path,
                        "max_shards (" + std::to_string(limits.max_shards) + ") exceeded");
    }
    named.emplace_back(tensor, file);
  }
  out.escaping.assign(escaping.begin(), escaping.end());
  for (auto& [file, id] : shard_ids) {
    id = static_cast<uint32_t>(out.shards.size());
    out.shards.push_back(file);
  }
  out.weight_map.reserve(named.size());
  for (auto& [tensor, file] : named) out.weight_map.emplace_back(std::move(tensor), shard_ids.at(file));
  if (const auto meta = doc.find("metadata"); meta != doc.end() && meta->is_object()) {
    const auto total = meta->find("total_size");
    if (total != meta->end() && total->is_number_unsigned()) out.total_size = total->get<uint64_t>();
  }
  return out;
}

VerifyReport VerifyShardedCheckpoint(const std::string& index_path, const LoadOptions& options) {
  VerifyReport report;
  report.path = index_path;
  report.format = "sharded";
  const fs::path index_file(index_path);
  const std::string index_name = index_file.filename().string();
  Result<ShardIndex> index = ReadShardIndex(index_file);
  if (!index) {
    const Error& e = index.error();
    report.problems.push_back({e.code == ErrorCode::kIo ? "io" : "index", index_name, e.offset, e.ToString()});
    return report;
  }
  auto add = [&](const IndexProblem& p) { report.problems.push_back({"index", index_name, 0, p.detail}); };
  for (const IndexProblem& p : IndexOnlyProblems(*index)) add(p);
  std::vector<std::optional<std::vector<NamedTensor>>> contents(index->shards.size());
  for (uint32_t s = 0; s < index->shards.size(); ++s) {
    const std::string& shard = index->shards[s];
    if (std::optional<IndexProblem> missing = MissingShard(*index, s)) {
      add(*missing);
      continue;
    }
    std::optional<std::vector<NamedTensor>> held;
    const VerifyReport r = VerifyCheckpoint((index->folder / shard).string(), options, [&](const Checkpoint& ckpt) {
      if (Result<std::vector<NamedTensor>> names = ckpt.StateDict()) held = std::move(*names);
    });
    for (const VerifyProblem& p : r.problems) {
      report.problems.push_back({p.kind, p.entry.empty() ? shard : shard + ":" + p.entry, p.offset, p.detail});
    }
    report.num_tensors += r.num_tensors;
    report.tensor_bytes += r.tensor_bytes;
    if (r.ok()) contents[s] = std::move(held);  // else its contents are not known: nothing to compare
  }
  for (const IndexProblem& p : CompareShards(*index, contents).problems) add(p);
  return report;
}

Status ShardedCheckpoint::CheckUnchanged() const {
  for (const Checkpoint& shard : shards_) CKG_TRY(shard.CheckUnchanged());
  return OkStatus();
}

Result<ShardedCheckpoint> LoadShardedCheckpoint(const std::string& index_path, const LoadOptions& options) {
  ShardedCheckpoint out;
  const fs::path index_file(index_path);
  CKG_ASSIGN_OR_RETURN(out.index_, ReadShardIndex(index_file));
  const ShardIndex& index = out.index_;
  if (std::vector<IndexProblem> bad = IndexOnlyProblems(index); !bad.empty()) {
    return IndexError(bad.front().code, index_file, bad.front().detail);
  }
  std::vector<std::optional<std::vector<NamedTensor>>> contents(index.shards.size());
  out.shards_.reserve(index.shards.size());
  for (uint32_t s = 0; s < index.shards.size(); ++s) {
    const std::string& shard = index.shards[s];
    if (std::optional<IndexProblem> missing = MissingShard(index, s)) {
      return IndexError(missing->code, index_file, missing->detail);
    }
    Result<Checkpoint> ckpt = LoadCheckpoint((index.folder / shard).string(), options);
    if (!ckpt) {
      Error e = std::move(ckpt).error();
      e.where = e.where.empty() || e.where == (index.folder / shard).string() ? shard : shard + ":" + e.where;
      return std::unexpected(std::move(e));
    }
    CKG_ASSIGN_OR_RETURN(contents[s], ckpt->StateDict());
    out.shards_.push_back(std::move(*ckpt));
  }
  const ShardAgreement agreement = CompareShards(index, contents);
  if (!agreement.problems.empty()) {
    return IndexError(agreement.problems.front().code, index_file, agreement.problems.front().detail);
  }
  out.tensors_.reserve(index.weight_map.size());
  for (const auto& [name, shard] : index.weight_map) {
    out.tensors_.push_back({name, shard, agreement.held.find(name)->second.second});
  }
  return out;
}

}  // namespace ckptguard
