#include "ckptguard/pickle_semantics.h"

namespace ckptguard {
namespace {

std::unexpected<Error> Fail(ErrorCode code, std::string detail) {
  return std::unexpected<Error>(Error{code, 0, "", std::move(detail)});
}

}  // namespace

Result<GlobalName> StackGlobalName(const StrOperand& module, const StrOperand& name) {
  if (!module.is_str || !name.is_str) {
    return Fail(ErrorCode::kForbiddenGlobal, "STACK_GLOBAL: module and name must be str");
  }
  if (!module.complete || !name.complete) {
    return Fail(ErrorCode::kUnsupportedFormat, "STACK_GLOBAL: an operand is too long to resolve");
  }
  return GlobalName{module.text, name.text};
}

Result<StoragePid> ParseStoragePid(std::span<const PidItem> items) {
  if (items.size() < 5 || items.size() > 6) {
    return Fail(ErrorCode::kMalformed,
                "persistent id must be ('storage', type, key, location, numel[, view]), not a tuple of " +
                    std::to_string(items.size()));
  }
  const PidItem& tag = items[0];
  if (tag.kind != PidItem::kStr || tag.text != "storage") {
    return Fail(ErrorCode::kUnsupportedFormat, "persistent id of kind other than 'storage'");
  }
  const PidItem& type = items[1];
  if (type.kind != PidItem::kGlobal || !type.storage_type) {
    return Fail(ErrorCode::kMalformed, "persistent id: second element must be a storage type global");
  }
  const PidItem& key = items[2];
  if (key.kind != PidItem::kStr || key.text.empty() || key.text.size() > 256) {
    return Fail(ErrorCode::kMalformed, "persistent id: storage key must be a short non-empty str");
  }
  const PidItem& location = items[3];
  if (location.kind != PidItem::kStr || location.text.size() > 64) {
    return Fail(ErrorCode::kMalformed, "persistent id: location must be a short str");
  }
  const PidItem& numel = items[4];
  if (numel.kind != PidItem::kInt || numel.number < 0) {
    return Fail(ErrorCode::kMalformed, "persistent id: element count must be a non-negative int");
  }
  StoragePid out{type.module, type.name, key.text, location.text, numel.number, false};
  out.view_metadata = items.size() == 6 && items[5].kind != PidItem::kNone;
  return out;
}

bool IsLatin1Encoding(std::string_view e) {
  return e == "latin1" || e == "latin-1" || e == "latin_1" || e == "iso-8859-1" || e == "iso8859-1";
}

Result<std::string> CodecsEncodeLatin1(std::string_view text, std::optional<std::string_view> encoding) {
  if (!encoding) return Fail(ErrorCode::kUnsupportedFormat, "only encode(text, 'latin1') is supported");
  if (!IsLatin1Encoding(*encoding)) return Fail(ErrorCode::kUnsupportedFormat, "only the latin1 encoding is supported");
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const uint8_t c = static_cast<uint8_t>(text[i]);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      i += 1;
      continue;
    }
    // U+0080..U+00FF are C2 80 .. C3 BF: one continuation byte.
    if ((c == 0xc2 || c == 0xc3) && i + 1 < text.size() && (static_cast<uint8_t>(text[i + 1]) & 0xc0) == 0x80) {
      out.push_back(static_cast<char>(((c & 0x1f) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3f)));
      i += 2;
      continue;
    }
    return Fail(ErrorCode::kMalformed, "character outside latin1 in the text");
  }
  return out;
}

}  // namespace ckptguard
