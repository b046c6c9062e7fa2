#include "archive_reader.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <memory>

namespace ckptguard {
namespace {

constexpr size_t kChunk = size_t{1} << 16;
constexpr uint64_t kRatioFloor = uint64_t{1} << 16;

std::string Num(uint64_t v) { return std::to_string(v); }

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// TarChecksumOk is tarfile's test of a header block: the checksum field
// (octal, NUL/space padded) equals the sum of the block's bytes with that
// field read as spaces, unsigned or signed.
bool TarChecksumOk(Bytes block) {
  std::string_view field = AsStringView(block.subspan(148, 8));
  while (!field.empty() && (field.back() == '\0' || field.back() == ' ')) field.remove_suffix(1);
  while (!field.empty() && (field.front() == ' ' || field.front() == '\0')) field.remove_prefix(1);
  if (field.empty()) return false;
  int64_t want = 0;
  for (char ch : field) {
    if (ch < '0' || ch > '7') return false;
    want = want * 8 + (ch - '0');
  }
  int64_t unsigned_sum = 8 * ' ', signed_sum = 8 * ' ';
  for (size_t i = 0; i < 512; ++i) {
    if (i >= 148 && i < 156) continue;
    unsigned_sum += block[i];
    signed_sum += static_cast<int8_t>(block[i]);
  }
  return want == unsigned_sum || want == signed_sum;
}

}  // namespace

std::optional<ArchiveKind> DetectArchive(Bytes data) {
  static constexpr uint8_t k7z[] = {'7', 'z', 0xbc, 0xaf, 0x27, 0x1c};
  if (data.size() >= 6 && std::equal(std::begin(k7z), std::end(k7z), data.begin())) return ArchiveKind::kSevenZip;
  if (data.size() >= 512 && TarChecksumOk(data.first(512))) return ArchiveKind::kTar;
  return std::nullopt;
}

Result<ArchiveContents> ReadArchive(Bytes data, ArchiveKind kind, uint64_t max_members, uint64_t max_member_len,
                                    uint64_t max_ratio, Budget& budget) {
  const std::string_view name = kind == ArchiveKind::kTar ? "tar" : "7z";
  std::unique_ptr<struct archive, ArchiveDeleter> a(archive_read_new());
  if (!a) return MakeError(ErrorCode::kInternal, 0, "archive_read_new failed");
  if (kind == ArchiveKind::kTar) {
    archive_read_support_format_tar(a.get());
  } else {
    archive_read_support_format_7zip(a.get());
  }
  ArchiveContents out;
  auto fail = [&](uint64_t at) {
    const char* why = archive_error_string(a.get());
    out.error = Error{ErrorCode::kMalformed, at, std::string(name), std::string(name) + ": " + (why ? why : "corrupt archive")};
  };
  if (archive_read_open_memory(a.get(), data.data(), data.size()) != ARCHIVE_OK) {
    fail(0);
    return out;
  }
  std::vector<char> buf(kChunk);
  uint64_t total = 0;
  while (true) {
    struct archive_entry* entry = nullptr;
    const int rc = archive_read_next_header(a.get(), &entry);
    if (rc == ARCHIVE_EOF) break;
    const uint64_t at = static_cast<uint64_t>(std::max<la_int64_t>(archive_read_header_position(a.get()), 0));
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
      fail(at);
      break;
    }
    if (archive_entry_filetype(entry) != AE_IFREG) continue;
    if (out.members.size() >= max_members) {
      return MakeError(ErrorCode::kLimitExceeded, at, "max_entries (" + Num(max_members) + ") exceeded by a " +
                                                          std::string(name) + " archive");
    }
    ArchiveMember member;
    const char* path = archive_entry_pathname(entry);
    member.name = path != nullptr ? path : "";
    bool broken = false;
    while (true) {
      const la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) {
        broken = true;
        break;
      }
      const uint64_t got = static_cast<uint64_t>(n);
      total += got;
      CKG_TRY(budget.Charge(BudgetKind::kInflatedBytes, got, at, member.name, std::string(name) + " member"));
      if (member.data.size() + got > max_member_len) {
        return MakeError(ErrorCode::kLimitExceeded, at,
                         "max_unwrapped_len (" + Num(max_member_len) + ") exceeded by member '" + member.name + "'",
                         std::string(name));
      }
      if (total > kRatioFloor && total / std::max<uint64_t>(data.size(), 1) > max_ratio) {
        return MakeError(ErrorCode::kLimitExceeded, at,
                         "max_ratio (" + Num(max_ratio) + ") exceeded: " + Num(data.size()) + " " + std::string(name) +
                             " bytes read out as more than " + Num(total),
                         std::string(name));
      }
      member.data.append(buf.data(), static_cast<size_t>(got));
    }
    out.members.push_back(std::move(member));  // what was read of it, even when it broke
    if (broken) {
      fail(at);
      break;
    }
  }
  return out;
}

}  // namespace ckptguard
