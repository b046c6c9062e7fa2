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

// Escapes: whether a shard path may not be opened. transformers joins it to
// the index's folder, so it must stay there: not empty, not absolute, no
// ".." component, no NUL (a C path would end there).
bool Escapes(std::string_view shard) {
  if (shard.empty() || shard.front() == '/' || shard.find('\0') != std::string_view::npos) return true;
  for (const fs::path& part : fs::path(shard)) {
    if (part == "..") return true;
  }
  return false;
}

}  // namespace

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
    if (Escapes(file)) {
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
  for (const std::string& shard : index->escaping) {
    report.problems.push_back({"index", index_name, 0, "shard \"" + shard + "\" leaves the index's folder: not read"});
  }
  for (const std::string& tensor : index->not_strings) {
    report.problems.push_back({"index", index_name, 0, "the shard of tensor \"" + tensor + "\" is not a string"});
  }
  // What the index says each shard holds, and which shard holds each name.
  std::vector<std::vector<std::string>> expected(index->shards.size());
  for (const auto& [tensor, shard] : index->weight_map) expected[shard].push_back(tensor);
  std::map<std::string, std::string> holder;  // tensor name -> the first shard found holding it
  for (uint32_t s = 0; s < index->shards.size(); ++s) {
    const std::string& shard = index->shards[s];
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(index->folder / shard, ec))) {
      report.problems.push_back({"index", index_name, 0, "shard " + shard + " is missing"});
      continue;
    }
    std::vector<std::string> held;
    const VerifyReport r = VerifyCheckpoint((index->folder / shard).string(), options, [&](const Checkpoint& ckpt) {
      Result<std::vector<NamedTensor>> names = ckpt.StateDict();
      if (names) {
        for (NamedTensor& t : *names) held.push_back(std::move(t.path));
      }
    });
    for (const VerifyProblem& p : r.problems) {
      report.problems.push_back({p.kind, p.entry.empty() ? shard : shard + ":" + p.entry, p.offset, p.detail});
    }
    report.num_tensors += r.num_tensors;
    report.tensor_bytes += r.tensor_bytes;
    if (!r.ok()) continue;  // its contents are not known: nothing more to compare
    std::sort(held.begin(), held.end());
    held.erase(std::unique(held.begin(), held.end()), held.end());
    std::sort(expected[s].begin(), expected[s].end());
    for (const std::string& name : held) {
      auto [it, first] = holder.emplace(name, shard);
      if (!first) {
        report.problems.push_back(
            {"index", index_name, 0, "tensor \"" + name + "\" is in two shards: " + it->second + " and " + shard});
      }
      if (!std::binary_search(expected[s].begin(), expected[s].end(), name)) {
        report.problems.push_back({"index", index_name, 0,
                                   "shard " + shard + " holds tensor \"" + name + "\", which the index does not map to it"});
      }
    }
    for (const std::string& name : expected[s]) {
      if (!std::binary_search(held.begin(), held.end(), name)) {
        report.problems.push_back(
            {"index", index_name, 0, "tensor \"" + name + "\" is mapped to " + shard + ", which does not hold it"});
      }
    }
  }
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
  if (!index.escaping.empty()) {
    return IndexError(ErrorCode::kInvalidArgument, index_file,
                      "shard \"" + index.escaping.front() + "\" leaves the index's folder: not read");
  }
  if (!index.not_strings.empty()) {
    return IndexError(ErrorCode::kMalformed, index_file,
                      "the shard of tensor \"" + index.not_strings.front() + "\" is not a string");
  }
  // Tensor name -> (shard, tensor index), over every shard.
  std::map<std::string, std::pair<uint32_t, uint32_t>, std::less<>> held;
  out.shards_.reserve(index.shards.size());
  for (uint32_t s = 0; s < index.shards.size(); ++s) {
    const std::string& shard = index.shards[s];
    std::error_code ec;
    if (!fs::exists(fs::symlink_status(index.folder / shard, ec))) {
      return IndexError(ErrorCode::kIo, index_file, "shard " + shard + " is missing");
    }
    Result<Checkpoint> ckpt = LoadCheckpoint((index.folder / shard).string(), options);
    if (!ckpt) {
      Error e = std::move(ckpt).error();
      e.where = e.where.empty() || e.where == (index.folder / shard).string() ? shard : shard + ":" + e.where;
      return std::unexpected(std::move(e));
    }
    CKG_ASSIGN_OR_RETURN(std::vector<NamedTensor> names, ckpt->StateDict());
    for (NamedTensor& t : names) {
      auto [it, first] = held.emplace(t.path, std::pair<uint32_t, uint32_t>{s, t.tensor});
      if (!first && it->second.first == s && it->second.second != t.tensor) {
        return IndexError(ErrorCode::kMalformed, index_file,
                          "shard " + shard + " holds two tensors named \"" + t.path + "\" (keys with dots)");
      }
      if (!first && it->second.first != s) {
        return IndexError(ErrorCode::kMalformed, index_file,
                          "tensor \"" + t.path + "\" is in two shards: " + index.shards[it->second.first] + " and " +
                              shard);
      }
    }
    out.shards_.push_back(std::move(*ckpt));
  }
  std::set<std::string_view> mapped;
  out.tensors_.reserve(index.weight_map.size());
  for (const auto& [name, shard] : index.weight_map) {
    const auto it = held.find(name);
    if (it == held.end() || it->second.first != shard) {
      return IndexError(ErrorCode::kMalformed, index_file,
                        "tensor \"" + name + "\" is mapped to " + index.shards[shard] + ", which does not hold it");
    }
    mapped.insert(name);
    out.tensors_.push_back({name, shard, it->second.second});
  }
  for (const auto& [name, where] : held) {
    if (!mapped.contains(name)) {
      return IndexError(ErrorCode::kMalformed, index_file,
                        "shard " + index.shards[where.first] + " holds tensor \"" + name +
                            "\", which the index does not map to it");
    }
  }
  return out;
}

}  // namespace ckptguard
