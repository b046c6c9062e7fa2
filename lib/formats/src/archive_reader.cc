#include "archive_reader.h"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
#include <memory>
#include <tuple>

namespace ckptguard {
namespace {

constexpr size_t kChunk = size_t{1} << 16;
constexpr uint64_t kRatioFloor = uint64_t{1} << 16;

std::string Num(uint64_t v) { return std::to_string(v); }

struct ArchiveDeleter {
  void operator()(struct archive* a) const { archive_read_free(a); }
};

// PyTarNumber is Python's tarfile.nti: base-256 when the first byte is 0x80
// or 0xff, else the field cut at its first NUL, decoded as ASCII (strict),
// stripped of whitespace and read by int(s, 8), which takes a sign, a 0o
// prefix and single underscores between digits. nullopt: tarfile raises
// (InvalidHeaderError), or the value does not fit in 63 bits.
std::optional<int64_t> PyTarNumber(Bytes field) {
  if (!field.empty() && (field[0] == 0x80 || field[0] == 0xff)) {
    uint64_t n = 0;
    for (size_t i = 1; i < field.size(); ++i) {
      if (n >> 55) return std::nullopt;
      n = (n << 8) | field[i];
    }
    if (n > static_cast<uint64_t>(INT64_MAX)) return std::nullopt;
    if (field[0] == 0x80) return static_cast<int64_t>(n);
    // -(256 ** (len - 1) - n)
    if (field.size() - 1 >= 8) return std::nullopt;
    const uint64_t whole = uint64_t{1} << (8 * (field.size() - 1));
    return -static_cast<int64_t>(whole - n);
  }
  std::string_view text = AsStringView(field);
  text = text.substr(0, text.find('\0'));
  for (char ch : text) {
    if (static_cast<unsigned char>(ch) >= 0x80) return std::nullopt;
  }
  auto space = [](char ch) { return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= '\x1c' && ch <= '\x1f'); };
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  if (text.empty()) return 0;
  bool negative = false;
  if (text.front() == '+' || text.front() == '-') {
    negative = text.front() == '-';
    text.remove_prefix(1);
  }
  bool prefixed = false;
  if (text.size() >= 2 && text[0] == '0' && (text[1] == 'o' || text[1] == 'O')) {
    text.remove_prefix(2);
    prefixed = true;
  }
  // Digits with single underscores between them (after a prefix, one may
  // come first: int('0o_7', 8) is 7).
  uint64_t n = 0;
  bool digits = false;
  bool underscore = prefixed;  // an underscore may follow
  bool last_underscore = false;
  for (char ch : text) {
    if (ch == '_') {
      if (!underscore || last_underscore) return std::nullopt;
      last_underscore = true;
      continue;
    }
    if (ch < '0' || ch > '7') return std::nullopt;
    if (n >> 59) return std::nullopt;
    n = n * 8 + static_cast<uint64_t>(ch - '0');
    digits = true;
    underscore = true;
    last_underscore = false;
  }
  if (!digits || last_underscore) return std::nullopt;
  return negative ? -static_cast<int64_t>(n) : static_cast<int64_t>(n);
}

// StrictTarNumber is how C tar readers (libarchive) read a number field:
// base-256 as above, else blanks skipped, then octal digits up to the first
// other byte.
int64_t StrictTarNumber(Bytes field) {
  if (!field.empty() && (field[0] == 0x80 || field[0] == 0xff)) return PyTarNumber(field).value_or(-1);
  size_t i = 0;
  while (i < field.size() && (field[i] == ' ' || field[i] == '\t')) ++i;
  int64_t n = 0;
  for (; i < field.size() && field[i] >= '0' && field[i] <= '7'; ++i) {
    if (n >> 59) return -1;
    n = n * 8 + (field[i] - '0');
  }
  return n;
}

// TarChecksumOk is tarfile's test of a header block (TarInfo.frombuf): not
// all NUL, and the checksum field (PyTarNumber) equals the sum of the
// block's bytes with that field read as spaces, unsigned or signed.
bool TarChecksumOk(Bytes block) {
  if (block.size() != 512) return false;
  if (std::all_of(block.begin(), block.end(), [](uint8_t b) { return b == 0; })) return false;
  const std::optional<int64_t> want = PyTarNumber(block.subspan(148, 8));
  if (!want) return false;
  int64_t unsigned_sum = 8 * ' ', signed_sum = 8 * ' ';
  for (size_t i = 0; i < 512; ++i) {
    if (i >= 148 && i < 156) continue;
    unsigned_sum += block[i];
    signed_sum += static_cast<int8_t>(block[i]);
  }
  return *want == unsigned_sum || *want == signed_sum;
}

}  // namespace

bool PythonReadsAsTar(Bytes data) { return data.size() >= 512 && TarChecksumOk(data.first(512)); }

std::optional<TarReadingDifference> TarReadingDiffers(Bytes data, uint64_t max_headers) {
  // Python's TarFile.next(): a header per member; the data of regular
  // members and of types it does not know follows (rounded to 512 bytes);
  // links, directories and devices have none. A header that does not check
  // ends the walk. The walk stops at the first header whose reading C tar
  // readers may not share.
  auto number = [](int64_t v) { return v < 0 ? std::string("an error") : std::to_string(v); };
  uint64_t at = 0;
  for (uint64_t n = 0; n < max_headers && data.size() >= 512 && at <= data.size() - 512; ++n) {
    const Bytes block = data.subspan(static_cast<size_t>(at), 512);
    if (!TarChecksumOk(block)) break;
    for (const auto& [field_at, len, what] : {std::tuple<size_t, size_t, const char*>{148, 8, "checksum"},
                                              std::tuple<size_t, size_t, const char*>{124, 12, "size"}}) {
      const Bytes field = block.subspan(field_at, len);
      const std::optional<int64_t> python = PyTarNumber(field);
      const int64_t strict = StrictTarNumber(field);
      if (!python || *python != strict) {
        return TarReadingDifference{at + field_at,
                                    std::string("a tar header's ") + what + " field that Python's tarfile (int(s, 8): '0o', a sign, underscores, blanks) reads as " +
                                        number(python.value_or(-1)) + " and C tar readers as " + number(strict),
                                    false};
      }
    }
    const char type = static_cast<char>(block[156]);
    static constexpr std::string_view kPlain("0123456\x00" "7", 9);
    if (kPlain.find(type) == std::string_view::npos) {
      // pax ('x', 'g'), GNU long names ('L', 'K') and sparse files ('S'),
      // and types tarfile does not know (read as regular files): Python's
      // tarfile and C tar readers differ in how they read each (a record
      // past the header's size, the first of two pax headers, a global
      // size, a path ending in '/', a sparse map's numbers).
      return TarReadingDifference{at + 156,
                                  std::string("a tar header of type '") + (type >= 0x20 && type < 0x7f ? std::string(1, type) : "\\x" + std::to_string(static_cast<uint8_t>(type))) +
                                      "' (pax, GNU or a type Python's tarfile reads as a regular file), which Python's tarfile and C tar readers read differently",
                                  true};
    }
    const int64_t size = *PyTarNumber(block.subspan(124, 12));
    if (size < 0) break;
    uint64_t next = at + 512;
    if (type == '0' || type == '\0' || type == '7') {
      const uint64_t len = static_cast<uint64_t>(size);
      if (len > data.size()) break;
      next += (len + 511) / 512 * 512;
    }
    at = next;
  }
  return std::nullopt;
}

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
