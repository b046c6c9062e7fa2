#include "ckptguard/safetensors_reader.h"

#include <algorithm>
#include <array>
#include <numeric>
#include <string>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "py_text.h"

namespace ckptguard {
namespace {

constexpr uint64_t kLengthFieldLen = 8;
constexpr uint64_t kMaxHeaderLenCeiling = 100'000'000;  // the reference's MAX_HEADER_SIZE
constexpr std::string_view kMetadataKey = "__metadata__";

std::string Num(uint64_t v) { return std::to_string(v); }

// Shortened cuts `s` to at most `max_len` bytes plus "...", at a UTF-8
// character boundary, so that a hostile 100 MB key or token does not become a
// 100 MB message and the message stays valid UTF-8 (JSON output needs that).
std::string Shortened(std::string_view s, size_t max_len) {
  if (s.size() <= max_len) return std::string(s);
  size_t cut = max_len;
  while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80) --cut;
  return std::string(s.substr(0, cut)) + "...";
}

std::string Quoted(std::string_view s) {
  std::string out = "\"";
  out += Shortened(s, 64);
  out += '"';
  return out;
}

struct DtypeBits {
  std::string_view name;
  uint32_t bits;
};

// The reference's Dtype enum and Dtype::bitsize() (safetensors 0.6).
constexpr std::array<DtypeBits, 20> kDtypes = {{
    {"BOOL", 8},     {"F4", 4},       {"F6_E2M3", 6},  {"F6_E3M2", 6},  {"U8", 8},
    {"I8", 8},       {"F8_E5M2", 8},  {"F8_E4M3", 8},  {"F8_E8M0", 8},  {"I16", 16},
    {"U16", 16},     {"F16", 16},     {"BF16", 16},    {"I32", 32},     {"U32", 32},
    {"F32", 32},     {"C64", 64},     {"F64", 64},     {"I64", 64},     {"U64", 64},
}};

// RootKeyOffsets returns the offset (in `text`) of the opening quote of each
// key of the root object, in order, at most `cap` of them. `text` starts with
// '{'. It is a lexical scan, exact for valid JSON; for invalid JSON the SAX
// parse fails and these offsets are not used past the failure point.
std::vector<uint64_t> RootKeyOffsets(std::string_view text, uint64_t cap) {
  std::vector<uint64_t> out;
  uint64_t depth = 0;
  bool expect_key = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '"') {
      if (depth == 1 && expect_key) {
        if (out.size() >= cap) return out;
        out.push_back(i);
        expect_key = false;
      }
      for (++i; i < text.size() && text[i] != '"'; ++i) {
        if (text[i] == '\\') ++i;
      }
      continue;
    }
    if (c == '{' || c == '[') {
      ++depth;
      if (depth == 1) expect_key = c == '{';
    } else if (c == '}' || c == ']') {
      if (depth <= 1) return out;  // the root closed
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_key = true;
    }
  }
  return out;
}

enum class Ctx : uint8_t { kRoot, kTensor, kMetadata, kShape, kOffsets };
enum class Field : uint8_t { kNone, kDtype, kShape, kDataOffsets };
constexpr uint8_t kSeenDtype = 1, kSeenShape = 2, kSeenOffsets = 4;

// HeaderHandler receives nlohmann's SAX events for the header, checks the
// schema, depth, counts and duplicates as they arrive, and fills `out`. It
// stops the parse (returns false) at the first problem, kept in `error`.
class HeaderHandler {
 public:
  using json = nlohmann::json;

  HeaderHandler(const SafetensorsLimits& limits, uint64_t header_start, uint64_t header_len,
                std::vector<uint64_t> key_offsets, SafetensorsFile& out)
      : limits_(limits),
        header_start_(header_start),
        header_len_(header_len),
        key_offsets_(std::move(key_offsets)),
        out_(out) {}

  std::optional<Error> error;

  bool null() { return Scalar("null"); }
  bool boolean(bool) { return Scalar("a boolean"); }
  bool number_integer(json::number_integer_t) {
    if (InArray()) return FailEntry(ErrorCode::kMalformed, ArrayName() + " holds a negative number (or -0)");
    return Scalar("a number");
  }
  bool number_unsigned(json::number_unsigned_t value) {
    if (stack_.empty() || !InArray()) return Scalar("a number");
    if (stack_.back() == Ctx::kShape) {
      if (tensor_.shape.size() >= limits_.max_rank) {
        return FailEntry(ErrorCode::kLimitExceeded,
                         "max_rank (" + Num(limits_.max_rank) + ") exceeded by the shape");
      }
      tensor_.shape.push_back(value);
      return true;
    }
    if (num_offsets_ >= 2) return FailEntry(ErrorCode::kMalformed, "data_offsets has more than two entries");
    offsets_[num_offsets_++] = value;
    return true;
  }
  bool number_float(json::number_float_t, const json::string_t& text) {
    if (InArray()) {
      return FailEntry(ErrorCode::kMalformed, ArrayName() + " holds " + Quoted(text) +
                                                  ", not an integer that fits in 64 bits");
    }
    return Scalar("a number");
  }
  bool binary(json::binary_t&) { return Scalar("binary data"); }

  bool string(json::string_t& value) {
    if (stack_.empty()) return Scalar("a string");
    switch (stack_.back()) {
      case Ctx::kTensor:
        if (field_ != Field::kDtype) return Scalar("a string");
        if (std::optional<uint32_t> bits = SafetensorsDtypeBits(value)) {
          tensor_.elem_bits = *bits;
          tensor_.dtype = std::move(value);
          return true;
        }
        return FailEntry(ErrorCode::kMalformed, "unknown dtype " + Quoted(value));
      case Ctx::kMetadata:
        out_.metadata.emplace_back(std::move(meta_key_), std::move(value));
        return true;
      default:
        return Scalar("a string");
    }
  }

  bool start_object(std::size_t) {
    if (stack_.empty()) {
      stack_.push_back(Ctx::kRoot);
      return true;
    }
    if (stack_.back() == Ctx::kRoot) {
      if (entry_is_metadata_) {
        stack_.push_back(Ctx::kMetadata);
        return true;
      }
      stack_.push_back(Ctx::kTensor);
      field_ = Field::kNone;
      seen_ = 0;
      num_offsets_ = 0;
      return true;
    }
    return Scalar("an object");
  }

  bool start_array(std::size_t) {
    if (!stack_.empty() && stack_.back() == Ctx::kTensor &&
        (field_ == Field::kShape || field_ == Field::kDataOffsets)) {
      stack_.push_back(field_ == Field::kShape ? Ctx::kShape : Ctx::kOffsets);
      return true;
    }
    return Scalar("an array");
  }

  bool key(json::string_t& name) {
    switch (stack_.back()) {
      case Ctx::kRoot: return RootKey(name);
      case Ctx::kTensor: return TensorKey(name);
      case Ctx::kMetadata:
        if (meta_keys_.size() >= limits_.max_metadata_entries) {
          return FailEntry(ErrorCode::kLimitExceeded,
                           "max_metadata_entries (" + Num(limits_.max_metadata_entries) + ") exceeded");
        }
        if (!meta_keys_.insert(name).second) {
          return FailEntry(ErrorCode::kMalformed, "duplicate metadata key " + Quoted(name));
        }
        meta_key_ = std::move(name);
        return true;
      default:
        return FailEntry(ErrorCode::kMalformed, "unexpected key");  // not reachable: arrays have no keys
    }
  }

  bool end_object() {
    if (stack_.back() == Ctx::kTensor) {
      for (auto [bit, field] : {std::pair{kSeenDtype, "dtype"}, std::pair{kSeenShape, "shape"},
                                std::pair{kSeenOffsets, "data_offsets"}}) {
        if ((seen_ & bit) == 0) return FailEntry(ErrorCode::kMalformed, std::string("missing field ") + field);
      }
      tensor_.begin = offsets_[0];
      tensor_.end = offsets_[1];
      out_.tensors.push_back(std::move(tensor_));
      tensor_ = SafetensorsTensor{};
    }
    stack_.pop_back();
    return true;
  }

  bool end_array() {
    if (stack_.back() == Ctx::kOffsets && num_offsets_ != 2) {
      return FailEntry(ErrorCode::kMalformed,
                       "data_offsets has " + Num(num_offsets_) + " entries, not [begin, end]");
    }
    stack_.pop_back();
    return true;
  }

  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& ex) {
    // `position` counts the characters the lexer read, the failing one (or
    // the end of input) included.
    const uint64_t at = std::min<uint64_t>(position > 0 ? position - 1 : 0, header_len_ - 1);
    std::string what = ex.what();
    // nlohmann's text is "[json.exception.parse_error.101] parse error at line 1, column 7: ...".
    if (const size_t colon = what.find(": "); colon != std::string::npos) what = what.substr(colon + 2);
    // The message quotes the last token, which a hostile header can make
    // 100 MB long.
    what = Shortened(what, 200);
    error = Error{ErrorCode::kMalformed, header_start_ + at, {}, "invalid JSON: " + what};
    return false;
  }

 private:
  bool InArray() const {
    return !stack_.empty() && (stack_.back() == Ctx::kShape || stack_.back() == Ctx::kOffsets);
  }
  std::string ArrayName() const { return stack_.back() == Ctx::kShape ? "shape" : "data_offsets"; }

  uint64_t KeyOffset(uint64_t index) const {
    return header_start_ + (index < key_offsets_.size() ? key_offsets_[index] : 0);
  }

  bool Fail(ErrorCode code, uint64_t offset, std::string detail, std::string where) {
    error = Error{code, offset, std::move(where), std::move(detail)};
    return false;
  }
  // FailEntry reports a problem with the current root entry (tensor or
  // metadata), at its key.
  bool FailEntry(ErrorCode code, std::string detail) {
    return Fail(code, entry_offset_, std::move(detail), entry_name_);
  }

  // Scalar handles a value that is only valid in a few places; `what` names
  // its JSON type for the message.
  bool Scalar(const std::string& what) {
    if (stack_.empty()) return Fail(ErrorCode::kMalformed, header_start_, "the header is not a JSON object", {});
    switch (stack_.back()) {
      case Ctx::kRoot:
        if (entry_is_metadata_ && what == "null") {
          out_.anomalies.push_back({"safetensors.null_metadata", entry_offset_, std::string(kMetadataKey),
                                    "\"__metadata__\" is null; the reference reads it as no metadata"});
          return true;
        }
        return FailEntry(ErrorCode::kMalformed,
                         entry_is_metadata_ ? "__metadata__ is " + what + ", not an object of strings"
                                            : "the tensor entry is " + what + ", not an object");
      case Ctx::kTensor:
        switch (field_) {
          case Field::kDtype: return FailEntry(ErrorCode::kMalformed, "dtype is " + what + ", not a string");
          case Field::kShape: return FailEntry(ErrorCode::kMalformed, "shape is " + what + ", not an array");
          default: return FailEntry(ErrorCode::kMalformed, "data_offsets is " + what + ", not an array");
        }
      case Ctx::kMetadata:
        return FailEntry(ErrorCode::kMalformed,
                         "the value of metadata key " + Quoted(meta_key_) + " is " + what + ", not a string");
      case Ctx::kShape:
      case Ctx::kOffsets:
        return FailEntry(ErrorCode::kMalformed,
                         ArrayName() + " holds " + what + ", not a non-negative integer");
    }
    return false;
  }

  bool RootKey(json::string_t& name) {
    const uint64_t index = num_root_keys_++;
    entry_offset_ = KeyOffset(index);
    entry_name_ = name;
    if (name == kMetadataKey) {
      entry_is_metadata_ = true;
      if (metadata_seen_) return FailEntry(ErrorCode::kMalformed, "duplicate key \"__metadata__\"");
      metadata_seen_ = true;
      return true;
    }
    entry_is_metadata_ = false;
    if (names_.size() >= limits_.max_tensors) {
      return FailEntry(ErrorCode::kLimitExceeded, "max_tensors (" + Num(limits_.max_tensors) +
                                                      ") exceeded: the header lists more tensors");
    }
    if (!names_.insert(name).second) return FailEntry(ErrorCode::kMalformed, "duplicate tensor name");
    tensor_ = SafetensorsTensor{};
    tensor_.name = std::move(name);
    tensor_.header_offset = entry_offset_;
    return true;
  }

  bool TensorKey(const json::string_t& name) {
    uint8_t bit = 0;
    if (name == "dtype") {
      field_ = Field::kDtype;
      bit = kSeenDtype;
    } else if (name == "shape") {
      field_ = Field::kShape;
      bit = kSeenShape;
    } else if (name == "data_offsets") {
      field_ = Field::kDataOffsets;
      bit = kSeenOffsets;
    } else {
      return FailEntry(ErrorCode::kMalformed, "unknown field " + Quoted(name) +
                                                  " (a tensor entry has dtype, shape and data_offsets)");
    }
    if ((seen_ & bit) != 0) return FailEntry(ErrorCode::kMalformed, "duplicate field " + Quoted(name));
    seen_ = static_cast<uint8_t>(seen_ | bit);
    return true;
  }

  const SafetensorsLimits& limits_;
  const uint64_t header_start_;
  const uint64_t header_len_;
  const std::vector<uint64_t> key_offsets_;
  SafetensorsFile& out_;

  std::vector<Ctx> stack_;  // at most 3 deep: every deeper start is refused
  uint64_t num_root_keys_ = 0;
  std::string entry_name_;
  uint64_t entry_offset_ = 0;
  bool entry_is_metadata_ = false;
  bool metadata_seen_ = false;
  std::unordered_set<std::string> names_;
  std::unordered_set<std::string> meta_keys_;
  std::string meta_key_;
  SafetensorsTensor tensor_;
  Field field_ = Field::kNone;
  uint8_t seen_ = 0;
  std::array<uint64_t, 2> offsets_{};
  uint64_t num_offsets_ = 0;
};

// CheckedMul sets `out` to a * b and returns false on overflow.
bool CheckedMul(uint64_t a, uint64_t b, uint64_t& out) { return !__builtin_mul_overflow(a, b, &out); }

// ValidateLayout applies Metadata::validate in the reference's order (tensors
// sorted by (begin, end)) and then checks that the data ends at the end of
// the file.
Status ValidateLayout(SafetensorsFile& file, uint64_t file_len) {
  std::vector<size_t> order(file.tensors.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const SafetensorsTensor& x = file.tensors[a];
    const SafetensorsTensor& y = file.tensors[b];
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i] != i) {
      const SafetensorsTensor& t = file.tensors[order[i]];
      file.anomalies.push_back({"safetensors.unordered_tensors", t.header_offset, t.name,
                                "the header does not list tensors in data-offset order (the reference "
                                "writer does; its reader sorts them)"});
      break;
    }
  }

  uint64_t expected_begin = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const SafetensorsTensor& t = file.tensors[order[i]];
    auto offsets = [&t] {
      std::string out = "data_offsets [";
      out += Num(t.begin);
      out += ", ";
      out += Num(t.end);
      out += "]";
      return out;
    };
    if (t.end < t.begin) {
      return MakeError(ErrorCode::kMalformed, t.header_offset, offsets() + " end before they begin", t.name);
    }
    if (t.begin != expected_begin) {
      std::string detail = i == 0 ? "the first tensor's " : t.begin > expected_begin ? "gap: " : "overlap: ";
      detail += offsets();
      if (i == 0) {
        detail += " do not begin at 0";
      } else {
        detail += t.begin > expected_begin ? " begin after" : " begin before";
        detail += " the previous tensor's end (" + Num(expected_begin) + ")";
      }
      return MakeError(ErrorCode::kMalformed, t.header_offset, std::move(detail), t.name);
    }
    expected_begin = t.end;

    uint64_t num_elements = 1;
    for (uint64_t dim : t.shape) {
      if (!CheckedMul(num_elements, dim, num_elements)) {
        return MakeError(ErrorCode::kMalformed, t.header_offset, "the product of the shape overflows 64 bits",
                         t.name);
      }
    }
    uint64_t num_bits = 0;
    if (!CheckedMul(num_elements, t.elem_bits, num_bits)) {
      return MakeError(ErrorCode::kMalformed, t.header_offset,
                       Num(num_elements) + " elements of " + t.dtype + " overflow 64 bits", t.name);
    }
    if (num_bits % 8 != 0) {
      return MakeError(ErrorCode::kMalformed, t.header_offset,
                       Num(num_elements) + " elements of " + Num(t.elem_bits) +
                           " bits are not a whole number of bytes",
                       t.name);
    }
    if (t.end - t.begin != num_bits / 8) {
      return MakeError(ErrorCode::kMalformed, t.header_offset,
                       offsets() + " hold " + Num(t.end - t.begin) + " bytes, but " +
                           Num(num_elements) + " elements of " + t.dtype + " take " + Num(num_bits / 8),
                       t.name);
    }
  }

  const uint64_t data_available = file_len - file.data_offset;
  if (expected_begin > data_available) {
    // The first tensor (in data order) that does not fit.
    for (size_t i : order) {
      const SafetensorsTensor& t = file.tensors[i];
      if (t.end > data_available) {
        return MakeError(ErrorCode::kTruncated, file.data_offset + std::min(t.begin, data_available),
                         "tensor data [" + Num(t.begin) + ", " + Num(t.end) + ") runs past the end of the file (" +
                             Num(data_available) + " data bytes)",
                         t.name);
      }
    }
  }
  if (expected_begin < data_available) {
    return MakeError(ErrorCode::kMalformed, file.data_offset + expected_begin,
                     "trailing data: " + Num(data_available - expected_begin) +
                         " bytes after the end of the tensor data (the reference refuses the file)");
  }
  for (SafetensorsTensor& t : file.tensors) t.file_offset = file.data_offset + t.begin;
  return OkStatus();
}

}  // namespace

SafetensorsLimits SafetensorsLimits::Clamped() const {
  SafetensorsLimits out = *this;
  out.max_header_len = std::min<uint64_t>(max_header_len, kMaxHeaderLenCeiling);
  out.max_tensors = std::min<uint64_t>(max_tensors, uint64_t{1} << 24);
  out.max_rank = std::min<uint64_t>(max_rank, 1024);
  out.max_metadata_entries = std::min<uint64_t>(max_metadata_entries, uint64_t{1} << 24);
  return out;
}

std::optional<uint32_t> SafetensorsDtypeBits(std::string_view dtype) {
  for (const DtypeBits& d : kDtypes) {
    if (d.name == dtype) return d.bits;
  }
  return std::nullopt;
}

Result<SafetensorsFile> ParseSafetensors(Bytes file, const SafetensorsLimits& limits_in) {
  const SafetensorsLimits limits = limits_in.Clamped();
  ByteCursor cursor(file);
  SafetensorsFile out;
  CKG_ASSIGN_OR_RETURN(out.header_len, cursor.ReadU64LE());
  if (out.header_len > limits.max_header_len) {
    return MakeError(ErrorCode::kLimitExceeded, 0,
                     "max_header_len (" + Num(limits.max_header_len) + ") exceeded: the header declares " +
                         Num(out.header_len) + " bytes");
  }
  Result<Bytes> header_bytes = cursor.ReadBytes(out.header_len);
  if (!header_bytes) {
    return MakeError(ErrorCode::kTruncated, kLengthFieldLen,
                     "the header (" + Num(out.header_len) + " bytes) runs past the end of the file (" +
                         Num(file.size()) + " bytes)");
  }
  out.data_offset = cursor.Offset();
  const std::string_view header = AsStringView(*header_bytes);

  if (std::optional<size_t> bad = py::Utf8Error(header, /*allow_surrogates=*/false)) {
    return MakeError(ErrorCode::kMalformed, kLengthFieldLen + *bad, "the header is not valid UTF-8");
  }
  if (header.empty() || header.front() != '{') {
    return MakeError(ErrorCode::kMalformed, kLengthFieldLen, "the header does not start with '{'");
  }
  // A NUL byte is never valid JSON (not as padding, not raw inside a string),
  // but nlohmann's lexer takes it for the end of the input: "{}\0junk" would
  // parse. Refuse it here, as serde_json does.
  if (const size_t nul = header.find('\0'); nul != std::string_view::npos) {
    return MakeError(ErrorCode::kMalformed, kLengthFieldLen + nul, "NUL byte in the header");
  }

  HeaderHandler handler(limits, kLengthFieldLen, out.header_len,
                        RootKeyOffsets(header, limits.max_tensors + 2), out);
  bool parsed = false;
  try {
    parsed = nlohmann::json::sax_parse(header.data(), header.data() + header.size(), &handler);
  } catch (const nlohmann::json::exception& e) {
    return MakeError(ErrorCode::kInternal, kLengthFieldLen, std::string("JSON parser threw: ") + e.what());
  }
  if (!parsed) {
    if (handler.error) return std::unexpected(std::move(*handler.error));
    return MakeError(ErrorCode::kInternal, kLengthFieldLen, "JSON parse stopped without an error");
  }

  if (out.data_offset % 8 != 0) {
    out.anomalies.push_back({"safetensors.unaligned_data", out.data_offset, "",
                             "the data starts at offset " + Num(out.data_offset) +
                                 ", not a multiple of 8 (the reference writer pads the header to align it)"});
  }
  CKG_TRY(ValidateLayout(out, file.size()));
  return out;
}

}  // namespace ckptguard
