#include "ckptguard/pickle_locator.h"

#include <string_view>

namespace ckptguard {
namespace {

constexpr std::string_view kNpyMagic = "\x93NUMPY";
// numpy itself refuses headers over 10,000 bytes unless told otherwise.
constexpr uint64_t kMaxNpyHeaderLen = 100'000;

bool LooksLikeNpy(Bytes data) { return AsStringView(data).starts_with(kNpyMagic); }

bool LooksLikeSafetensors(Bytes data) {
  if (data.size() < 9) return false;
  ByteCursor c(data);
  uint64_t header_len = *c.ReadU64LE();
  return header_len <= data.size() - 8 && data[8] == '{';
}

bool EndsWith(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

}  // namespace

Result<std::optional<uint64_t>> NpyPickleOffset(Bytes npy) {
  ByteCursor c(npy);
  CKG_ASSIGN_OR_RETURN(Bytes magic, c.ReadBytes(kNpyMagic.size()));
  if (AsStringView(magic) != kNpyMagic) return MakeError(ErrorCode::kMalformed, 0, "not a .npy file");
  CKG_ASSIGN_OR_RETURN(uint8_t major, c.ReadU8());
  CKG_TRY(c.Skip(1));  // minor
  uint64_t header_len;
  if (major == 1) {
    CKG_ASSIGN_OR_RETURN(uint16_t n, c.ReadU16LE());
    header_len = n;
  } else if (major == 2 || major == 3) {
    CKG_ASSIGN_OR_RETURN(uint32_t n, c.ReadU32LE());
    header_len = n;
  } else {
    return MakeError(ErrorCode::kUnsupportedFormat, 6, "unknown .npy format version " + std::to_string(major));
  }
  if (header_len > kMaxNpyHeaderLen) {
    return MakeError(ErrorCode::kLimitExceeded, 8, ".npy header longer than 100000 bytes");
  }
  CKG_ASSIGN_OR_RETURN(Bytes header, c.ReadBytes(header_len));
  // The header is a Python dict literal; an object array says 'descr': '|O'.
  // (Issue 3's numpy reader parses it fully.)
  if (AsStringView(header).find("'descr': '|O'") == std::string_view::npos) return std::nullopt;
  return c.Position();
}

Result<LocatedPickles> LocatePickles(Bytes file, const ZipLimits& zip_limits) {
  LocatedPickles out;
  if (LooksLikeZip(file)) {
    out.container = "zip";
    CKG_ASSIGN_OR_RETURN(ZipArchive zip, ZipArchive::Open(file, zip_limits));
    for (const ZipEntry& entry : zip.entries()) {
      PickleSource source;
      source.entry = entry.name;
      if (entry.method == kZipMethodStored) {
        Result<Bytes> data = zip.StoredData(entry);
        if (!data) {
          out.entry_errors.push_back(std::move(data).error());
          continue;
        }
        source.data = *data;
        source.file_offset = static_cast<uint64_t>(data->data() - file.data());
      } else {
        // Deflated entries are inflated (bounded by zip_limits) to look at
        // their content: a pickle's name may lie.
        Result<std::string> inflated = zip.ReadEntry(entry);
        if (!inflated) {
          out.entry_errors.push_back(std::move(inflated).error());
          continue;
        }
        out.buffers.push_back(std::make_unique<std::string>(std::move(*inflated)));
        source.data = AsBytes(*out.buffers.back());
        source.deflated = true;
      }
      if (LooksLikeNpy(source.data)) {
        Result<std::optional<uint64_t>> at = NpyPickleOffset(source.data);
        if (!at) {
          Error error = std::move(at).error();
          error.where = entry.name;
          out.entry_errors.push_back(std::move(error));
          continue;
        }
        if (!at->has_value()) {
          if (source.deflated) out.buffers.pop_back();
          continue;
        }
        source.start = **at;
      } else {
        const bool proto_start = source.data.size() >= 2 && source.data[0] == 0x80 &&
                                 source.data[1] >= 2 && source.data[1] <= 5;
        if (!EndsWith(entry.name, ".pkl") && !proto_start) {
          if (source.deflated) out.buffers.pop_back();
          continue;
        }
      }
      out.sources.push_back(std::move(source));
    }
    return out;
  }
  if (LooksLikeNpy(file)) {
    out.container = "npy";
    CKG_ASSIGN_OR_RETURN(std::optional<uint64_t> at, NpyPickleOffset(file));
    if (!at) {
      out.notes.push_back("numpy array without object dtype: holds no pickle");
      return out;
    }
    out.sources.push_back(PickleSource{"", file, *at, 0, false});
    return out;
  }
  if (LooksLikeSafetensors(file)) {
    out.container = "safetensors";
    out.notes.push_back("safetensors file: holds no pickle");
    return out;
  }
  out.container = "pickle";
  out.sources.push_back(PickleSource{"", file, 0, 0, false});
  return out;
}

}  // namespace ckptguard
