// Tests of ParseSafetensors: the real file of the corpus (made by the
// safetensors Python package) against its .expect.json, then hostile files
// built byte by byte, one per rule of the reference reader
// (huggingface/safetensors src/tensor.rs: read_metadata, Metadata::validate)
// and per stricter rule of ours, each with its exact ErrorCode and offset or
// anomaly kind.
#define BOOST_TEST_MODULE safetensors_reader_test
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/safetensors_reader.h"
#include "test_util.h"

namespace ckptguard {
namespace {

using namespace std::string_literals;

constexpr uint64_t kLenField = 8;

std::string Le64(uint64_t v) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

// File is a safetensors file: the length of `header`, `header`, `data`.
std::string File(const std::string& header, const std::string& data = "") {
  return Le64(header.size()) + header + data;
}

// Padded pads `header` with spaces to a multiple of 8, as the writers do.
std::string Padded(std::string header) {
  while (header.size() % 8 != 0) header.push_back(' ');
  return header;
}

// At is the absolute offset of the first `needle` in a header.
uint64_t At(const std::string& header, std::string_view needle, size_t from = 0) {
  const size_t pos = header.find(needle, from);
  BOOST_REQUIRE_MESSAGE(pos != std::string::npos, "no " << needle << " in " << header);
  return kLenField + pos;
}

std::string Entry(const std::string& dtype, const std::string& shape, uint64_t begin, uint64_t end) {
  return "{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" + std::to_string(begin) + "," +
         std::to_string(end) + "]}";
}

template <typename T>
std::string ErrorText(const Result<T>& r) {
  return r ? std::string("(no error)") : r.error().ToString();
}

std::vector<std::string> Kinds(const Anomalies& anomalies) {
  std::vector<std::string> out;
  for (const Anomaly& a : anomalies) out.push_back(a.kind);
  return out;
}

// ---------------------------------------------------------------------------
// The real file.

BOOST_AUTO_TEST_CASE(mlp_safetensors_matches_its_expectations) {
  const std::string bytes = testing::ReadFile(testing::CorpusDir() / "benign" / "mlp.safetensors");
  const nlohmann::json expect =
      nlohmann::json::parse(testing::ReadFile(testing::CorpusDir() / "benign" / "mlp.safetensors.expect.json"));
  BOOST_REQUIRE(!bytes.empty());
  Result<SafetensorsFile> file = ParseSafetensors(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));

  BOOST_TEST(file->header_len == 0x150u);
  BOOST_TEST(file->data_offset == 0x158u);
  BOOST_TEST(file->anomalies.empty());
  BOOST_REQUIRE(file->metadata.size() == 1u);
  BOOST_TEST(file->metadata[0].first == "format");
  BOOST_TEST(file->metadata[0].second == "pt");

  // Header order, as the reference writer lists them: by data offset.
  const std::vector<std::string> names = {"hidden.weight", "hidden.bias", "output.weight", "output.bias"};
  BOOST_REQUIRE(file->tensors.size() == names.size());
  BOOST_TEST(expect["tensors"].size() == names.size());
  uint64_t next_begin = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    const SafetensorsTensor& t = file->tensors[i];
    BOOST_TEST_CONTEXT(names[i]) {
      BOOST_TEST(t.name == names[i]);
      const nlohmann::json& e = expect["tensors"][names[i]];
      BOOST_TEST(e["dtype"] == "float32");
      BOOST_TEST(t.dtype == "F32");
      BOOST_TEST(t.elem_bits == 32u);
      const std::vector<uint64_t> shape = e["shape"].get<std::vector<uint64_t>>();
      BOOST_TEST(t.shape == shape, boost::test_tools::per_element());
      uint64_t num_elements = 1;
      for (uint64_t d : shape) num_elements *= d;
      BOOST_TEST(t.begin == next_begin);
      BOOST_TEST(t.end == next_begin + 4 * num_elements);
      BOOST_TEST(t.file_offset == file->data_offset + t.begin);
      BOOST_TEST(t.header_offset == At(bytes.substr(8, 0x150), "\"" + names[i] + "\""));
      next_begin = t.end;
    }
  }
  BOOST_TEST(file->data_offset + next_begin == bytes.size());
  // Spot-check the offsets against the bytes of the header.
  BOOST_TEST(file->tensors[1].begin == 20480u);
  BOOST_TEST(file->tensors[3].end == 31784u);
}

// ---------------------------------------------------------------------------
// Files the reference reads.

BOOST_AUTO_TEST_CASE(empty_header_without_tensors) {
  const std::string header = Padded("{}");
  Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File(header)));
  BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));
  BOOST_TEST(file->tensors.empty());
  BOOST_TEST(file->metadata.empty());
  BOOST_TEST(file->anomalies.empty());
  BOOST_TEST(file->data_offset == 16u);
}

BOOST_AUTO_TEST_CASE(every_reference_dtype) {
  struct Row {
    const char* dtype;
    uint32_t bits;
  };
  const Row rows[] = {{"BOOL", 8},    {"F4", 4},     {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"U8", 8},
                      {"I8", 8},      {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"I16", 16},
                      {"U16", 16},    {"F16", 16},   {"BF16", 16},   {"I32", 32},    {"U32", 32},
                      {"F32", 32},    {"C64", 64},   {"F64", 64},    {"I64", 64},    {"U64", 64}};
  for (const Row& row : rows) {
    BOOST_TEST_CONTEXT(row.dtype) {
      // 8 elements: a whole number of bytes for every width.
      const uint64_t len = row.bits;  // 8 elements x bits / 8
      const std::string header = Padded("{\"t\":" + Entry(row.dtype, "[2,4]", 0, len) + "}");
      Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File(header, std::string(len, '\x01'))));
      BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));
      BOOST_TEST(file->tensors[0].dtype == row.dtype);
      BOOST_TEST(file->tensors[0].elem_bits == row.bits);
      BOOST_TEST(SafetensorsDtypeBits(row.dtype).value_or(0) == row.bits);
    }
  }
  BOOST_TEST(!SafetensorsDtypeBits("f32").has_value());
  BOOST_TEST(!SafetensorsDtypeBits("F8_E4M3FNUZ").has_value());
}

BOOST_AUTO_TEST_CASE(scalars_empty_tensors_escaped_names_and_metadata_order) {
  // A scalar (shape []), two empty tensors at the same offset, a name with an
  // escaped quote and one with a \u escape, metadata in header order, and
  // non-space whitespace after the JSON (then space padding).
  const std::string header = Padded("{\"__metadata__\":{\"z\":\"1\",\"a\":\"2\"},"
                                    "\"s\":" + Entry("F64", "[]", 0, 8) + "," +
                                    "\"a\\\"b\":" + Entry("I8", "[0]", 8, 8) + "," +
                                    "\"\\u00e9\":" + Entry("F4", "[0,3]", 8, 8) + "}\n\t\r ");
  Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File(header, std::string(8, '\0'))));
  BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));
  BOOST_REQUIRE(file->tensors.size() == 3u);
  BOOST_TEST(file->tensors[0].name == "s");
  BOOST_TEST(file->tensors[0].shape.empty());
  BOOST_TEST(file->tensors[1].name == "a\"b");
  BOOST_TEST(file->tensors[1].header_offset == At(header, "\"a\\\"b\""));
  BOOST_TEST(file->tensors[2].name == "\xc3\xa9");
  BOOST_TEST(file->tensors[2].header_offset == At(header, "\"\\u00e9\""));
  BOOST_TEST(file->tensors[2].file_offset == file->data_offset + 8);
  BOOST_REQUIRE(file->metadata.size() == 2u);
  BOOST_TEST(file->metadata[0].first == "z");
  BOOST_TEST(file->metadata[1].first == "a");
  BOOST_TEST(Kinds(file->anomalies).empty());
}

BOOST_AUTO_TEST_CASE(anomalies_the_reference_accepts) {
  {  // Listed out of data order: the reference sorts them.
    const std::string header =
        Padded("{\"b\":" + Entry("F32", "[1]", 4, 8) + ",\"a\":" + Entry("F32", "[1]", 0, 4) + "}");
    Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File(header, std::string(8, '\0'))));
    BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));
    BOOST_TEST(file->tensors[0].name == "b");  // header order is kept
    BOOST_REQUIRE(file->anomalies.size() == 1u);
    BOOST_TEST(file->anomalies[0].kind == "safetensors.unordered_tensors");
    BOOST_TEST(file->anomalies[0].offset == At(header, "\"a\""));
    BOOST_TEST(file->anomalies[0].entry == "a");
  }
  {  // "__metadata__": null
    const std::string header = Padded("{\"__metadata__\":null}");
    Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File(header)));
    BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));
    BOOST_REQUIRE(file->anomalies.size() == 1u);
    BOOST_TEST(file->anomalies[0].kind == "safetensors.null_metadata");
    BOOST_TEST(file->anomalies[0].offset == kLenField + 1);
  }
  {  // No padding: data at offset 8 + 2.
    Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File("{}")));
    BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));
    BOOST_REQUIRE(file->anomalies.size() == 1u);
    BOOST_TEST(file->anomalies[0].kind == "safetensors.unaligned_data");
    BOOST_TEST(file->anomalies[0].offset == 10u);
  }
}

// ---------------------------------------------------------------------------
// Refusals: one row per rule.

struct BadRow {
  std::string name;
  std::string file;
  ErrorCode code;
  uint64_t offset;
  std::string where;
  SafetensorsLimits limits = {};
};

std::vector<BadRow> BadRows() {
  std::vector<BadRow> rows;
  auto add = [&](std::string name, std::string file, ErrorCode code, uint64_t offset, std::string where = "",
                 SafetensorsLimits limits = {}) {
    rows.push_back({std::move(name), std::move(file), code, offset, std::move(where), limits});
  };
  const std::string f4 = std::string(4, '\0');
  const std::string f8 = std::string(8, '\0');

  // Header length.
  add("shorter than the length field", "\x02\x00\x00"s, ErrorCode::kTruncated, 0);
  add("header_len past the end of the file", Le64(100) + "{}      ", ErrorCode::kTruncated, 8);
  add("header_len above the reference cap", Le64(100'000'001) + "{}      ", ErrorCode::kLimitExceeded, 0);
  add("header_len of 2^64-1", Le64(std::numeric_limits<uint64_t>::max()) + "{}", ErrorCode::kLimitExceeded, 0);
  {
    SafetensorsLimits small;
    small.max_header_len = 7;
    add("header_len above a configured cap", File("{}      "), ErrorCode::kLimitExceeded, 0, "", small);
  }
  add("empty header", File(""), ErrorCode::kMalformed, 8);

  // Text and JSON.
  add("invalid UTF-8 in a key", File("{\"a\xff\":1}"), ErrorCode::kMalformed, 8 + 3);
  add("overlong UTF-8 in padding", File("{}  \xc0\x80  "), ErrorCode::kMalformed, 8 + 4);
  add("header starting with a space", File(" {}     "), ErrorCode::kMalformed, 8);
  add("header starting with a BOM", File("\xef\xbb\xbf{}     "), ErrorCode::kMalformed, 8);
  add("root is an array (depth bomb)", File(std::string(5000, '[') + std::string(5000, ']')), ErrorCode::kMalformed,
      8);
  add("JSON syntax error", File("{\"a\":}  "), ErrorCode::kMalformed, 8 + 5);
  add("text after the JSON", File("{} x    "), ErrorCode::kMalformed, 8 + 3);
  add("NUL padding", File("{}\0\0\0\0\0\0"s), ErrorCode::kMalformed, 8 + 2);
  add("unterminated object", File("{\"a\":{\"dtype\":\"F32\""), ErrorCode::kMalformed,
      8 + std::string("{\"a\":{\"dtype\":\"F32\"").size() - 1);

  // Tensor entries.
  add("entry is an array", File("{\"t\":[1]}"), ErrorCode::kMalformed, 9, "t");
  add("entry is a string", File("{\"t\":\"x\"}"), ErrorCode::kMalformed, 9, "t");
  add("missing data_offsets", File("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", f4), ErrorCode::kMalformed, 9, "t");
  add("missing dtype", File("{\"t\":{\"shape\":[1],\"data_offsets\":[0,4]}}", f4), ErrorCode::kMalformed, 9, "t");
  add("unknown field", File("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", f4),
      ErrorCode::kMalformed, 9, "t");
  add("duplicate field", File("{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", f4),
      ErrorCode::kMalformed, 9, "t");
  add("unknown dtype", File("{\"t\":" + Entry("F31", "[1]", 0, 4) + "}", f4), ErrorCode::kMalformed, 9, "t");
  add("lower-case dtype", File("{\"t\":" + Entry("f32", "[1]", 0, 4) + "}", f4), ErrorCode::kMalformed, 9, "t");
  add("dtype is a number", File("{\"t\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", f4),
      ErrorCode::kMalformed, 9, "t");
  add("negative dimension", File("{\"t\":" + Entry("F32", "[-1]", 0, 4) + "}", f4), ErrorCode::kMalformed, 9, "t");
  add("minus zero dimension", File("{\"t\":" + Entry("F32", "[-0]", 0, 0) + "}"), ErrorCode::kMalformed, 9, "t");
  add("float dimension", File("{\"t\":" + Entry("F32", "[1.0]", 0, 4) + "}", f4), ErrorCode::kMalformed, 9, "t");
  add("exponent dimension", File("{\"t\":" + Entry("F32", "[1e0]", 0, 4) + "}", f4), ErrorCode::kMalformed, 9,
      "t");
  add("dimension of 2^64", File("{\"t\":" + Entry("F32", "[18446744073709551616]", 0, 4) + "}", f4),
      ErrorCode::kMalformed, 9, "t");
  add("string dimension", File("{\"t\":" + Entry("F32", "[\"1\"]", 0, 4) + "}", f4), ErrorCode::kMalformed, 9, "t");
  add("shape is an object", File("{\"t\":" + Entry("F32", "{}", 0, 4) + "}", f4), ErrorCode::kMalformed, 9, "t");
  add("depth bomb in a shape",
      File("{\"t\":{\"dtype\":\"F32\",\"shape\":" + std::string(100000, '[') + std::string(100000, ']') + "}}"),
      ErrorCode::kMalformed, 9, "t");
  add("one data offset", File("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", f4),
      ErrorCode::kMalformed, 9, "t");
  add("three data offsets", File("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}}", f4),
      ErrorCode::kMalformed, 9, "t");
  add("negative data offset", File("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", f4),
      ErrorCode::kMalformed, 9, "t");
  {
    const std::string h = "{\"a\":" + Entry("F32", "[1]", 0, 4) + ",\"a\":" + Entry("F32", "[1]", 4, 8) + "}";
    add("duplicate tensor name", File(h, f8), ErrorCode::kMalformed, At(h, "\"a\"", 2), "a");
  }

  // Metadata.
  add("metadata value is a number", File("{\"__metadata__\":{\"k\":1}}"), ErrorCode::kMalformed, 9, "__metadata__");
  add("metadata value is null", File("{\"__metadata__\":{\"k\":null}}"), ErrorCode::kMalformed, 9, "__metadata__");
  add("metadata value is an object", File("{\"__metadata__\":{\"k\":{}}}"), ErrorCode::kMalformed, 9,
      "__metadata__");
  add("metadata is a string", File("{\"__metadata__\":\"x\"}"), ErrorCode::kMalformed, 9, "__metadata__");
  add("duplicate metadata key", File("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}"), ErrorCode::kMalformed, 9,
      "__metadata__");
  {
    const std::string h = "{\"__metadata__\":{},\"__metadata__\":{}}";
    add("duplicate __metadata__", File(h), ErrorCode::kMalformed, At(h, "\"__metadata__\"", 2), "__metadata__");
  }

  // Layout (Metadata::validate, in data-offset order).
  add("first offset not 0", File("{\"t\":" + Entry("F32", "[1]", 4, 8) + "}", f8), ErrorCode::kMalformed, 9, "t");
  {
    const std::string h = "{\"a\":" + Entry("F32", "[1]", 0, 4) + ",\"b\":" + Entry("F32", "[1]", 8, 12) + "}";
    add("gap between tensors", File(h, std::string(12, '\0')), ErrorCode::kMalformed, At(h, "\"b\""), "b");
  }
  {
    const std::string h = "{\"a\":" + Entry("F32", "[2]", 0, 8) + ",\"b\":" + Entry("F32", "[2]", 4, 12) + "}";
    add("overlapping tensors", File(h, std::string(12, '\0')), ErrorCode::kMalformed, At(h, "\"b\""), "b");
  }
  {
    const std::string h = "{\"a\":" + Entry("F32", "[1]", 0, 4) + ",\"b\":" + Entry("F32", "[1]", 0, 4) + "}";
    add("two tensors on the same bytes", File(h, f8), ErrorCode::kMalformed, At(h, "\"b\""), "b");
  }
  add("end before begin", File("{\"t\":" + Entry("F32", "[1]", 8, 4) + "}", f8), ErrorCode::kMalformed, 9, "t");
  add("size mismatch", File("{\"t\":" + Entry("F32", "[2]", 0, 4) + "}", f4), ErrorCode::kMalformed, 9, "t");
  add("shape product overflow",
      File("{\"t\":" + Entry("U8", "[8589934592,8589934592,8589934592]", 0, 0) + "}"), ErrorCode::kMalformed, 9,
      "t");
  add("overflow before a zero dimension",
      File("{\"t\":" + Entry("U8", "[8589934592,8589934592,8589934592,0]", 0, 0) + "}"), ErrorCode::kMalformed, 9,
      "t");
  add("bit count overflow", File("{\"t\":" + Entry("F32", "[4611686018427387904]", 0, 0) + "}"),
      ErrorCode::kMalformed, 9, "t");
  add("sub-byte tensor not a whole number of bytes", File("{\"t\":" + Entry("F4", "[3]", 0, 2) + "}", "\0\0"s),
      ErrorCode::kMalformed, 9, "t");
  {
    const std::string h = Padded("{\"t\":" + Entry("F32", "[1]", 0, 4) + "}");
    add("trailing data", File(h, f4 + "x"), ErrorCode::kMalformed, 8 + h.size() + 4);
    add("data shorter than declared", File(h, "\0\0"s), ErrorCode::kTruncated, 8 + h.size(), "t");
    const std::string h2 = Padded("{\"a\":" + Entry("F32", "[1]", 0, 4) + ",\"b\":" + Entry("F32", "[1]", 4, 8) + "}");
    add("second tensor past the end", File(h2, f4 + "\0"s), ErrorCode::kTruncated, 8 + h2.size() + 4, "b");
    add("no data at all", File(h2), ErrorCode::kTruncated, 8 + h2.size(), "a");
  }

  // Limits.
  {
    SafetensorsLimits two;
    two.max_tensors = 2;
    const std::string h = "{\"a\":" + Entry("U8", "[1]", 0, 1) + ",\"b\":" + Entry("U8", "[1]", 1, 2) +
                          ",\"c\":" + Entry("U8", "[1]", 2, 3) + "}";
    add("max_tensors", File(h, "abc"), ErrorCode::kLimitExceeded, At(h, "\"c\""), "c", two);
  }
  {
    SafetensorsLimits rank2;
    rank2.max_rank = 2;
    add("max_rank", File("{\"t\":" + Entry("U8", "[1,1,1]", 0, 1) + "}", "a"), ErrorCode::kLimitExceeded, 9, "t",
        rank2);
  }
  {
    SafetensorsLimits one;
    one.max_metadata_entries = 1;
    add("max_metadata_entries", File("{\"__metadata__\":{\"a\":\"1\",\"b\":\"2\"}}"), ErrorCode::kLimitExceeded, 9,
        "__metadata__", one);
  }
  return rows;
}

BOOST_AUTO_TEST_CASE(hostile_files_are_refused_with_code_and_offset) {
  for (const BadRow& row : BadRows()) {
    BOOST_TEST_CONTEXT(row.name) {
      Result<SafetensorsFile> file = ParseSafetensors(AsBytes(row.file), row.limits);
      if (file.has_value()) {
        BOOST_ERROR("accepted");
        continue;
      }
      BOOST_TEST_MESSAGE(row.name << ": " << file.error().ToString());
      BOOST_TEST(ErrorCodeName(file.error().code) == ErrorCodeName(row.code));
      BOOST_TEST(file.error().offset == row.offset);
      BOOST_TEST(file.error().where == row.where);
      BOOST_TEST(file.error().offset <= row.file.size());
      BOOST_TEST(!file.error().detail.empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(messages_stay_short_and_valid_utf8) {
  // A 200,000-byte dtype of two-byte characters: the detail quotes 64 bytes at
  // most, cut between characters.
  std::string dtype;
  for (int i = 0; i < 100'000; ++i) dtype += "\xc3\xa9";
  const std::string header = "{\"t\":" + Entry("x" + dtype, "[1]", 0, 1) + "}";
  Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File(header, "a")));
  BOOST_REQUIRE(!file.has_value());
  const std::string& detail = file.error().detail;
  BOOST_TEST(detail.size() < 100u);
  BOOST_TEST(detail.ends_with("...\""));
  const std::string quoted = detail.substr(detail.find('"') + 2);  // after the quote and the 'x'
  BOOST_TEST(quoted.substr(0, quoted.size() - 4).size() % 2 == 0u);
  BOOST_TEST(std::string_view(quoted).substr(0, 2) == "\xc3\xa9");
}

BOOST_AUTO_TEST_CASE(many_tensors_within_the_limit) {
  std::string h = "{";
  const uint64_t n = 5000;
  for (uint64_t i = 0; i < n; ++i) {
    if (i > 0) h += ",";
    h += "\"t" + std::to_string(i) + "\":" + Entry("U8", "[1]", i, i + 1);
  }
  h += "}";
  Result<SafetensorsFile> file = ParseSafetensors(AsBytes(File(Padded(h), std::string(n, 'x'))));
  BOOST_REQUIRE_MESSAGE(file.has_value(), ErrorText(file));
  BOOST_TEST(file->tensors.size() == n);
  BOOST_TEST(file->tensors[4999].header_offset == At(h, "\"t4999\""));

  SafetensorsLimits limits;
  limits.max_tensors = n - 1;
  Result<SafetensorsFile> refused = ParseSafetensors(AsBytes(File(Padded(h), std::string(n, 'x'))), limits);
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(ErrorCodeName(refused.error().code) == "limit_exceeded");
  BOOST_TEST(refused.error().offset == At(h, "\"t4999\""));
}

BOOST_AUTO_TEST_CASE(limits_are_clamped_to_their_ceilings) {
  SafetensorsLimits huge;
  huge.max_header_len = uint64_t{1} << 40;
  huge.max_tensors = uint64_t{1} << 40;
  huge.max_rank = uint64_t{1} << 40;
  huge.max_metadata_entries = uint64_t{1} << 40;
  const SafetensorsLimits c = huge.Clamped();
  BOOST_TEST(c.max_header_len == 100'000'000u);
  BOOST_TEST(c.max_tensors == uint64_t{1} << 24);
  BOOST_TEST(c.max_rank == 1024u);
  BOOST_TEST(c.max_metadata_entries == uint64_t{1} << 24);
  // The reference's cap holds even when a caller asks for more.
  Result<SafetensorsFile> file = ParseSafetensors(AsBytes(Le64(100'000'001) + "{}"), huge);
  BOOST_REQUIRE(!file.has_value());
  BOOST_TEST(ErrorCodeName(file.error().code) == "limit_exceeded");
}

}  // namespace
}  // namespace ckptguard
