// Tests of ParseNpy: the real .npy files of the corpus (made by numpy), the
// members of a real .npz read in place through ZipArchive, the object-array
// payload of the malicious corpus, then hostile headers built byte by byte,
// one per rule of numpy.lib.format (read_magic, _check_version,
// _read_array_header) and per stricter rule of ours, each with its exact
// ErrorCode and offset or anomaly kind.
#define BOOST_TEST_MODULE npy_reader_test
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/byte_cursor.h"
#include "ckptguard/error.h"
#include "ckptguard/npy_reader.h"
#include "ckptguard/zip_reader.h"
#include "test_util.h"

namespace ckptguard {
namespace {

using namespace std::string_literals;

std::string LeBytes(uint64_t v, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

uint64_t HeaderOffset(uint8_t major) { return major == 1 ? 10 : 12; }

// Npy builds a .npy file: magic, version `major`.0, the header length, `dict`
// padded as numpy's writer pads it (spaces and a final newline up to a
// multiple of 64) unless `pad` is false, then `data`.
std::string Npy(std::string dict, const std::string& data = "", uint8_t major = 1, bool pad = true) {
  const uint64_t prefix = HeaderOffset(major);
  if (pad) {
    const uint64_t padlen = 64 - (prefix + dict.size() + 1) % 64;
    dict += std::string(padlen % 64, ' ') + "\n";
  }
  return "\x93NUMPY"s + static_cast<char>(major) + '\0' + LeBytes(dict.size(), major == 1 ? 2 : 4) + dict + data;
}

// At is the absolute offset of `needle` in the header `dict` of a version
// `major` file.
uint64_t At(const std::string& dict, std::string_view needle, uint8_t major = 1) {
  const size_t pos = dict.find(needle);
  BOOST_REQUIRE_MESSAGE(pos != std::string::npos, "no " << needle << " in " << dict);
  return HeaderOffset(major) + pos;
}

std::string Dict(const std::string& descr, const std::string& shape, const std::string& fortran = "False") {
  return "{'descr': " + descr + ", 'fortran_order': " + fortran + ", 'shape': " + shape + ", }";
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
// Real files.

BOOST_AUTO_TEST_CASE(array_f32) {
  const std::string bytes = testing::ReadFile(testing::CorpusDir() / "benign" / "array_f32.npy");
  Result<NpyArray> a = ParseNpy(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
  BOOST_TEST(a->major == 1);
  BOOST_TEST(a->minor == 0);
  BOOST_TEST(a->header_len == 118u);
  BOOST_TEST(a->data_offset == 128u);
  BOOST_TEST(a->descr == "<f4");
  BOOST_TEST(a->byte_order == '<');
  BOOST_TEST(a->kind == 'f');
  BOOST_TEST(a->item_size == 4u);
  BOOST_TEST(!a->fortran_order);
  BOOST_TEST(a->shape == (std::vector<uint64_t>{3, 4}), boost::test_tools::per_element());
  BOOST_TEST(a->num_elements == 12u);
  BOOST_TEST(a->data_len == 48u);
  BOOST_TEST(!a->is_object);
  BOOST_TEST(!a->structured);
  BOOST_TEST(a->anomalies.empty());
  BOOST_TEST(a->data_offset + a->data_len == bytes.size());
}

BOOST_AUTO_TEST_CASE(array_bigendian_i4) {
  const std::string bytes = testing::ReadFile(testing::CorpusDir() / "benign" / "array_bigendian_i4.npy");
  Result<NpyArray> a = ParseNpy(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
  BOOST_TEST(a->descr == ">i4");
  BOOST_TEST(a->byte_order == '>');
  BOOST_TEST(a->kind == 'i');
  BOOST_TEST(a->item_size == 4u);
  BOOST_TEST(a->shape == (std::vector<uint64_t>{6}), boost::test_tools::per_element());
  BOOST_TEST(a->data_len == 24u);
  BOOST_TEST(a->data_offset == 128u);
  BOOST_TEST(a->anomalies.empty());
  // The last element, big-endian 5.
  BOOST_TEST(bytes.substr(a->data_offset + 20) == "\0\0\0\x05"s);
}

BOOST_AUTO_TEST_CASE(npz_members_in_place) {
  const std::string bytes = testing::ReadFile(testing::CorpusDir() / "benign" / "arrays.npz");
  Result<ZipArchive> zip = ZipArchive::Open(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(zip.has_value(), ErrorText(zip));
  BOOST_REQUIRE(zip->entries().size() == 2u);
  struct Expect {
    const char* name;
    uint64_t member_offset;  // where the member's data (the .npy) starts in the .npz
    const char* descr;
    std::vector<uint64_t> shape;
    uint64_t data_len;
  };
  const Expect expects[] = {{"a.npy", 0x37, "<f4", {3, 4}, 48}, {"b.npy", 0x11e, "<f8", {3}, 24}};
  for (size_t i = 0; i < 2; ++i) {
    const Expect& e = expects[i];
    const ZipEntry& entry = zip->entries()[i];
    BOOST_TEST_CONTEXT(e.name) {
      BOOST_TEST(entry.name == e.name);
      Result<uint64_t> offset = zip->DataOffset(entry);
      BOOST_REQUIRE_MESSAGE(offset.has_value(), ErrorText(offset));
      BOOST_TEST(*offset == e.member_offset);
      Result<Bytes> member = zip->StoredData(entry);
      BOOST_REQUIRE_MESSAGE(member.has_value(), ErrorText(member));
      Result<NpyArray> a = ParseNpy(*member, {}, *offset);
      BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
      BOOST_TEST(a->descr == e.descr);
      BOOST_TEST(a->shape == e.shape, boost::test_tools::per_element());
      BOOST_TEST(a->data_len == e.data_len);
      BOOST_TEST(a->data_offset == e.member_offset + 128);  // absolute in the .npz
      BOOST_TEST(a->data_offset + a->data_len == e.member_offset + member->size());
      BOOST_TEST(a->anomalies.empty());
    }
  }
  // b.npy holds three 1.0 doubles.
  BOOST_TEST(bytes.substr(0x11e + 128, 8) == "\0\0\0\0\0\0\xf0\x3f"s);
}

BOOST_AUTO_TEST_CASE(deflated_npz_member) {
  const std::string bytes = testing::ReadFile(testing::CorpusDir() / "benign" / "arrays_compressed.npz");
  Result<ZipArchive> zip = ZipArchive::Open(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(zip.has_value(), ErrorText(zip));
  BOOST_REQUIRE(!zip->entries().empty());
  Result<std::string> member = zip->ReadEntry(zip->entries()[0]);
  BOOST_REQUIRE_MESSAGE(member.has_value(), ErrorText(member));
  Result<NpyArray> a = ParseNpy(AsBytes(*member));
  BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
  BOOST_TEST(a->descr == "<f4");
  BOOST_TEST(a->data_offset == 128u);
  BOOST_TEST(a->data_len == 48u);
}

BOOST_AUTO_TEST_CASE(object_array_carries_a_pickle) {
  const std::string bytes = testing::ReadFile(testing::CorpusDir() / "malicious" / "numpy_object_array.npy");
  Result<NpyArray> a = ParseNpy(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
  BOOST_TEST(a->is_object);
  BOOST_TEST(a->descr == "|O");
  BOOST_TEST(a->kind == 'O');
  BOOST_TEST(a->byte_order == '|');
  BOOST_TEST(a->shape == (std::vector<uint64_t>{1}), boost::test_tools::per_element());
  BOOST_TEST(a->data_len == 0u);
  BOOST_TEST(a->data_offset == 128u);
  BOOST_TEST(a->anomalies.empty());  // callers report the object dtype themselves
  BOOST_TEST(bytes.substr(a->data_offset, 2) == "\x80\x02"s);  // PROTO 2
}

// ---------------------------------------------------------------------------
// Headers numpy reads.

BOOST_AUTO_TEST_CASE(accepted_variations) {
  {  // 0-d array, version 2.0, double quotes, escapes, Fortran order.
    const std::string dict = "{\"descr\": '\\x3cf8', \"fortran_order\": True, \"shape\": ()}";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(dict, std::string(8, '\0'), 2)));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->major == 2);
    BOOST_TEST(a->descr == "<f8");
    BOOST_TEST(a->fortran_order);
    BOOST_TEST(a->shape.empty());
    BOOST_TEST(a->num_elements == 1u);
    BOOST_TEST(a->data_len == 8u);
    BOOST_TEST(a->anomalies.empty());
  }
  {  // Keys in another order, no trailing comma, newlines between tokens, u'' prefix.
    const std::string dict = "  {'shape': (2,\n 3,),\n'descr': u'|u1', 'fortran_order': False}";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(dict, "abcdef")));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->descr == "|u1");
    BOOST_TEST(a->num_elements == 6u);
    BOOST_TEST(a->anomalies.empty());
  }
  {  // Zero elements: no data at all.
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict("'<i8'", "(0, 5)"))));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->num_elements == 0u);
    BOOST_TEST(a->data_len == 0u);
  }
  {  // Strings, unicode, datetimes, booleans, complex, void.
    struct Row {
      const char* descr;
      char kind;
      uint64_t item_size;
    };
    const Row rows[] = {{"|S5", 'S', 5},      {"<U3", 'U', 12},      {"|V16", 'V', 16}, {"|b1", 'b', 1},
                        {"<M8[ns]", 'M', 8},  {"<m8[10s]", 'm', 8},  {"<c16", 'c', 16}, {"<f2", 'f', 2},
                        {">u8", 'u', 8},      {"|a4", 'S', 4},       {"<f16", 'f', 16}, {"|O8", 'O', 8}};
    for (const Row& row : rows) {
      BOOST_TEST_CONTEXT(row.descr) {
        Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict("'"s + row.descr + "'", "(2,)"), std::string(64, 'x'))));
        BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
        BOOST_TEST(a->kind == row.kind);
        BOOST_TEST(a->item_size == row.item_size);
        BOOST_TEST(a->is_object == (row.kind == 'O'));
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(structured_dtypes) {
  {  // Kept as raw text; a field of object dtype makes the data a pickle.
    const std::string descr = "[('a', '<i4'), ('b', [('c', '|O')], (2,))]";
    const std::string bytes = Npy(Dict(descr, "(3,)"), "\x80\x04."s);
    Result<NpyArray> a = ParseNpy(AsBytes(bytes));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->structured);
    BOOST_TEST(a->descr == descr);
    BOOST_TEST(a->kind == 'V');
    BOOST_TEST(a->is_object);
    BOOST_TEST(a->data_len == 0u);
  }
  {  // Plain fields: not an object array; data length not checked here.
    const std::string descr = "[('x', '<f4'), ('y', '<f4'),]";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict(descr, "(3,)"), std::string(24, '\0'))));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->structured);
    BOOST_TEST(!a->is_object);
    BOOST_TEST(a->item_size == 8u);
    BOOST_TEST(a->data_len == 0u);
  }
  {  // The itemsize numpy gives: fields summed (padding fields, titles,
     // nested structs, field shapes), a top-level subarray's format x shape;
     // 0 for what is no sized dtype.
    const std::pair<std::string, uint64_t> kCases[] = {
        {"[('a', '|i1'), ('', '|V3'), ('b', '<i4')]", 8},
        {"[(('title', 'x'), '<f8'), ('y', '<U3')]", 20},
        {"[('p', [('q', '<i2'), ('r', '>c16')], (2, 3))]", 108},
        {"[('v', '<f4', 4), ('w', '<M8[ns]', ())]", 24},
        {"('<f4', (2, 5))", 40},
        {"[('a', 'nonsense')]", 0},
        {"[('a', '<f4', (2, 'x'))]", 0},
        {"[]", 0},
        {"[('a', '|V2147483647'), ('b', '|i1')]", 0},
    };
    for (const auto& [descr, size] : kCases) {
      Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict(descr, "(1,)"))));
      BOOST_REQUIRE_MESSAGE(a.has_value(), descr + ": " + ErrorText(a));
      BOOST_CHECK_MESSAGE(a->item_size == size, descr + ": " + std::to_string(a->item_size));
    }
  }
  {  // A subarray descr (tuple), as numpy 2.3 writes it.
    const std::string descr = "('<f4', (2,))";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict(descr, "(3,)"))));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->structured);
    BOOST_TEST(a->descr == descr);
  }
  {  // Version 3.0: a UTF-8 field name.
    const std::string descr = "[('\xc3\xa9t\xc3\xa9', '<f4')]";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict(descr, "(1,)"), "\0\0\0\0"s, 3)));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->major == 3);
    BOOST_TEST(a->structured);
    BOOST_TEST(a->descr == descr);
  }
  {  // Version 1.0 is latin-1: byte 0xe9 is 'é', returned as UTF-8.
    const std::string descr = "[('\xe9', '<f4')]";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict(descr, "(1,)"), "\0\0\0\0"s, 1)));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->descr == "[('\xc3\xa9', '<f4')]");
  }
}

BOOST_AUTO_TEST_CASE(literal_eval_forms_numpy_reads) {
  const std::string data48(48, '\0');
  {  // A comment, a line continuation, joined strings: literal_eval takes them.
    const std::string d = "{'descr': '<' 'f4', # the dtype\n 'fortran_order': False, \\\n 'shape': (3, 4), } # end";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(d, data48)));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->descr == "<f4");
    BOOST_TEST(a->item_size == 4u);
    BOOST_TEST(!a->is_object);
  }
  {  // A duplicate key: the last one wins (an anomaly).
    const std::string d = "{'descr': '<f4', 'descr': '|O', 'fortran_order': False, 'shape': (1,), }";
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(d, "\x80\x02N."s)));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->is_object);
    BOOST_TEST(!a->object_unsure);
    BOOST_TEST(Kinds(a->anomalies) == (std::vector<std::string>{"npy.duplicate_key"}), boost::test_tools::per_element());
    BOOST_TEST(a->anomalies[0].offset == At(d, "'descr': '|O'"));
  }
  {  // Type names and other spellings numpy reads (np.sctypeDict, comma and repeat strings).
    struct Row {
      const char* descr;
      bool object;
      uint64_t item_size;
      char kind;
    };
    const Row rows[] = {{"'float32'", false, 4, 'f'},  {"'int64'", false, 8, 'i'},   {"'d'", false, 8, 'f'},
                        {"'<q'", false, 8, 'i'},       {"'object'", true, 8, 'O'},   {"'object0'", true, 8, 'O'},
                        {"'O4'", true, 8, 'O'},        {"'2O'", true, 0, 'V'},       {"'i4,O'", true, 0, 'V'},
                        {"'(2,)O'", true, 0, 'V'},     {"'i4,f8'", false, 12, 'V'},  {"'2i4'", false, 8, 'V'},
                        {"('O', 2)", true, 0, 'V'},    {"[('a', 'object0')]", true, 0, 'V'},
                        {"[('a', 'i4,O')]", true, 0, 'V'}, {"['aO']", true, 0, 'V'}};
    for (const Row& row : rows) {
      BOOST_TEST_CONTEXT(row.descr) {
        Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict(row.descr, "(1,)"), std::string(row.object ? 4 : row.item_size, '\x80'))));
        BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
        BOOST_TEST(a->is_object == row.object);
        BOOST_TEST(!a->object_unsure);
        BOOST_TEST(a->item_size == row.item_size);
        BOOST_TEST(a->kind == row.kind);
      }
    }
  }
  {  // Not worked out (numpy refuses most of them): read as possible objects, never as plain data.
    for (const char* descr : {"'<f3'", "'<i16'", "'|b2'", "'<M9'", "'O16'", "''", "5", "None",
                              "[('a', '<f4', (-1,))]", "[('a', 'nonsense')]", "('<f4',)", "'<float64'"}) {
      BOOST_TEST_CONTEXT(descr) {
        Result<NpyArray> a = ParseNpy(AsBytes(Npy(Dict(descr, "(3, 4)"), data48)));
        BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
        BOOST_TEST(a->is_object);
        BOOST_TEST(a->object_unsure);
        BOOST_TEST(Kinds(a->anomalies) == (std::vector<std::string>{"npy.unknown_dtype"}), boost::test_tools::per_element());
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(descr_literals_interpreted_as_numpy_does) {
  struct Row {
    const char* literal;
    NumpyDtype::Holds holds;
    uint64_t item_size;
  };
  using H = NumpyDtype::Holds;
  const Row rows[] = {{"'<f8'", H::kPlain, 8},          {"'float64'", H::kPlain, 8},   {"'|S5'", H::kPlain, 5},
                      {"'<U3'", H::kPlain, 12},         {"'M8[ns]'", H::kPlain, 8},    {"'O'", H::kObjects, 8},
                      {"'i4, (2,)O'", H::kObjects, 8},  {"'(2,3)f8'", H::kPlain, 48},  {"'<i4,>f8'", H::kPlain, 12},
                      {"('S', 5)", H::kPlain, 5},       {"('<i4', [2])", H::kPlain, 8}, {"('<i4', 1)", H::kPlain, 4},
                      {"[('a', '<i4'), ('', '|V4')]", H::kPlain, 8},
                      {"[('a', [('b', [('c', 'O')])])]", H::kObjects, 8},
                      {"'f-8'", H::kUnknown, 0},        {"' O'", H::kUnknown, 0},      {"('<i4', True)", H::kUnknown, 0}};
  for (const Row& row : rows) {
    BOOST_TEST_CONTEXT(row.literal) {
      Result<NumpyDtype> d = ParseDescrLiteral(row.literal);
      BOOST_REQUIRE(d.has_value());
      BOOST_TEST(static_cast<int>(d->holds) == static_cast<int>(row.holds));
      if (row.holds == H::kPlain) BOOST_TEST(d->item_size == row.item_size);
    }
  }
  BOOST_TEST(!ParseDescrLiteral("[('a', 'O')").has_value());
  BOOST_TEST(static_cast<int>(InterpretDescr({}).holds) == static_cast<int>(H::kUnknown));
}

BOOST_AUTO_TEST_CASE(anomalies_numpy_accepts) {
  const std::string f32 = Dict("'<f4'", "(3, 4)");
  {
    const std::string bytes = Npy(f32, std::string(48, '\0') + "xyz");
    Result<NpyArray> a = ParseNpy(AsBytes(bytes));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_REQUIRE(a->anomalies.size() == 1u);
    BOOST_TEST(a->anomalies[0].kind == "npy.trailing_data");
    BOOST_TEST(a->anomalies[0].offset == 128u + 48u);
  }
  {  // No padding, no newline: also not aligned.
    const std::string bytes = Npy(f32, std::string(48, '\0'), 1, /*pad=*/false);
    Result<NpyArray> a = ParseNpy(AsBytes(bytes));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(Kinds(a->anomalies) == (std::vector<std::string>{"npy.header_no_newline", "npy.unaligned_data"}),
               boost::test_tools::per_element());
    BOOST_TEST(a->anomalies[0].offset == 10 + f32.size() - 1);
    BOOST_TEST(a->anomalies[1].offset == 10 + f32.size());
  }
  {
    const std::string dict = Dict("'=f4'", "(1,)");
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(dict, "\0\0\0\0"s)));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_REQUIRE(a->anomalies.size() == 1u);
    BOOST_TEST(a->anomalies[0].kind == "npy.native_byte_order");
    BOOST_TEST(a->anomalies[0].offset == At(dict, "'=f4'"));
    BOOST_TEST(a->byte_order == '=');
  }
  {  // Python 2's long suffix, in 1.0 and 2.0 only.
    const std::string dict = Dict("'<f4'", "(3L, 4L)");
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(dict, std::string(48, '\0'))));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_TEST(a->shape == (std::vector<uint64_t>{3, 4}), boost::test_tools::per_element());
    BOOST_REQUIRE(a->anomalies.size() == 1u);
    BOOST_TEST(a->anomalies[0].kind == "npy.python2_header");
    BOOST_TEST(a->anomalies[0].offset == At(dict, "L"));
    Result<NpyArray> v3 = ParseNpy(AsBytes(Npy(dict, std::string(48, '\0'), 3)));
    BOOST_REQUIRE(!v3.has_value());
    BOOST_TEST(ErrorCodeName(v3.error().code) == "malformed");
    BOOST_TEST(v3.error().offset == At(dict, "3L", 3));
  }
  {  // Longer than numpy's default max_header_size.
    const std::string dict = Dict("'<f4'", "(1,)") + std::string(10'100, ' ');
    Result<NpyArray> a = ParseNpy(AsBytes(Npy(dict, "\0\0\0\0"s, 2)));
    BOOST_REQUIRE_MESSAGE(a.has_value(), ErrorText(a));
    BOOST_REQUIRE(a->anomalies.size() == 1u);
    BOOST_TEST(a->anomalies[0].kind == "npy.large_header");
    BOOST_TEST(a->anomalies[0].offset == 8u);
  }
}

// ---------------------------------------------------------------------------
// Refusals: one row per rule.

struct BadRow {
  std::string name;
  std::string file;
  ErrorCode code;
  uint64_t offset;
  NpyLimits limits = {};
};

std::vector<BadRow> BadRows() {
  std::vector<BadRow> rows;
  auto add = [&](std::string name, std::string file, ErrorCode code, uint64_t offset, NpyLimits limits = {}) {
    rows.push_back({std::move(name), std::move(file), code, offset, limits});
  };
  const std::string f32 = Dict("'<f4'", "(3, 4)");
  const std::string data48(48, '\0');
  const std::string good = Npy(f32, data48);

  // Magic, version, length.
  add("bad magic", "\x93NUMPX"s + good.substr(6), ErrorCode::kMalformed, 0);
  add("shorter than the magic", "\x93NUM", ErrorCode::kTruncated, 0);
  add("no header length", "\x93NUMPY\x01\x00\x76"s, ErrorCode::kTruncated, 8);
  add("version 4.0", "\x93NUMPY\x04"s + good.substr(7), ErrorCode::kUnsupportedFormat, 6);
  add("version 1.1", "\x93NUMPY\x01\x01"s + good.substr(8), ErrorCode::kUnsupportedFormat, 6);
  add("version 0.0", "\x93NUMPY\x00\x00"s + good.substr(8), ErrorCode::kUnsupportedFormat, 6);
  add("header_len past the end of the file", "\x93NUMPY\x01\x00\xc8\x00"s + f32, ErrorCode::kTruncated, 10);
  add("2.0 header_len of 4 GiB", "\x93NUMPY\x02\x00\xff\xff\xff\xff"s + f32, ErrorCode::kLimitExceeded, 8);
  {
    NpyLimits small;
    small.max_header_len = 64;
    add("header_len above a configured cap", good, ErrorCode::kLimitExceeded, 8, small);
  }
  add("empty header", "\x93NUMPY\x01\x00\x00\x00"s, ErrorCode::kMalformed, 10);

  // Text.
  {
    const std::string d = Dict("'<f4'", "(3, 4)") + "\0"s;
    add("NUL in the header", Npy(d, data48), ErrorCode::kMalformed, At(d, "\0"s));
    const std::string u = Dict("'<f4'", "(3, 4)") + " \xff";
    add("invalid UTF-8 in a 3.0 header", Npy(u, data48, 3), ErrorCode::kMalformed, At(u, "\xff", 3));
  }
  {
    const std::string d = "('descr', '<f4')";
    add("header is a tuple", Npy(d, data48), ErrorCode::kMalformed, 10);
    const std::string t = f32 + " {}";
    add("second dict", Npy(t, data48), ErrorCode::kMalformed, At(t, "{}"));
  }

  // Keys.
  {
    const std::string d = "{'descr': '<f4', 'fortran_order': False, }";
    add("missing key", Npy(d, data48), ErrorCode::kMalformed, At(d, "}"));
    const std::string e = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'extra': 1, }";
    add("extra key", Npy(e, data48), ErrorCode::kMalformed, At(e, "'extra'"));
    const std::string bytes_key = "{b'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
    add("bytes key", Npy(bytes_key, data48), ErrorCode::kMalformed, At(bytes_key, "b'"));
    const std::string unterminated = "{'descr': '<f4, 'fortran_order': False, 'shape': (3, 4), }";
    add("string with a bad quote", Npy(unterminated, data48), ErrorCode::kMalformed,
        At(unterminated, "fortran_order"));
  }

  // Shape.
  struct ShapeRow {
    const char* name;
    const char* shape;
    const char* at;
  };
  const ShapeRow shapes[] = {{"shape (3) is an int", "(3)", "(3)"},
                             {"shape is a list", "[3, 4]", "[3, 4]"},
                             {"negative dimension", "(3, -1)", "-1"},
                             {"float dimension", "(3.0,)", "3.0"},
                             {"boolean dimension", "(True,)", "True"},
                             {"hex dimension", "(0x10,)", "0x10"},
                             {"leading zero", "(012,)", "012"},
                             {"underscore", "(1_0,)", "1_0"},
                             {"dimension of 2^64", "(18446744073709551616,)", "18446744073709551616"},
                             {"empty tuple with a comma", "(,)", ",)"},
                             {"missing comma", "(3 4)", "4)"},
                             {"unclosed tuple", "(3, 4", "'fortran"}};
  for (const ShapeRow& s : shapes) {
    // Shape first, so that an unclosed tuple runs into the next key.
    const std::string d = "{'shape': "s + s.shape + ", 'fortran_order': False, 'descr': '<f4', }";
    add(s.name, Npy(d, data48), ErrorCode::kMalformed, At(d, s.at));
  }
  {
    const std::string d = Dict("'<f4'", "(4294967296, 4294967296, 2)");
    add("shape product overflow", Npy(d, data48), ErrorCode::kMalformed, At(d, "(4294967296"));
    const std::string big = Dict("'<f8'", "(4611686018427387904,)");
    add("data length overflow", Npy(big, data48), ErrorCode::kMalformed, At(big, "(4611686018427387904"));
    NpyLimits rank2;
    rank2.max_rank = 2;
    const std::string r = Dict("'<f4'", "(1, 1, 1)");
    add("max_rank", Npy(r, data48), ErrorCode::kLimitExceeded, At(r, "1)"), rank2);
  }

  // fortran_order and descr.
  {
    const std::string d = Dict("'<f4'", "(3, 4)", "0");
    add("fortran_order 0", Npy(d, data48), ErrorCode::kMalformed, At(d, "0,"));
    const std::string t = Dict("'<f4'", "(3, 4)", "Truee");
    add("fortran_order Truee", Npy(t, data48), ErrorCode::kMalformed, At(t, "Truee"));
  }
  {
    const std::string n = Dict("'\\N{LATIN SMALL LETTER A}'", "(3, 4)");
    add("\\N escape", Npy(n, data48), ErrorCode::kMalformed, At(n, "\\N"));
    const std::string q = Dict("'''<f4'''", "(3, 4)");
    add("triple quotes", Npy(q, data48), ErrorCode::kMalformed, At(q, "'''"));
    const std::string s = Dict("[('a', '<f4') ('b', '<f4')]", "(3,)");
    add("structured descr missing a comma", Npy(s, data48), ErrorCode::kMalformed, At(s, "('b'"));
    const std::string m = Dict("[('a', '<f4'))", "(3,)");
    add("structured descr with a mismatched bracket", Npy(m, data48), ErrorCode::kMalformed, At(m, "))") + 1);
    const std::string bomb = Dict(std::string(1000, '['), "(3,)");
    add("structured descr depth bomb", Npy(bomb, data48), ErrorCode::kLimitExceeded, At(bomb, "[") + 32);
  }

  // Data.
  add("short data", Npy(f32, std::string(47, '\0')), ErrorCode::kTruncated, 128);
  add("no data", Npy(f32), ErrorCode::kTruncated, 128);
  add("object array without a pickle", Npy(Dict("'|O'", "(1,)")), ErrorCode::kTruncated, 128);
  return rows;
}

BOOST_AUTO_TEST_CASE(hostile_files_are_refused_with_code_and_offset) {
  for (const BadRow& row : BadRows()) {
    BOOST_TEST_CONTEXT(row.name) {
      Result<NpyArray> a = ParseNpy(AsBytes(row.file), row.limits);
      if (a.has_value()) {
        BOOST_ERROR("accepted");
        continue;
      }
      BOOST_TEST_MESSAGE(row.name << ": " << a.error().ToString());
      BOOST_TEST(ErrorCodeName(a.error().code) == ErrorCodeName(row.code));
      BOOST_TEST(a.error().offset == row.offset);
      BOOST_TEST(a.error().offset <= row.file.size());
      BOOST_TEST(!a.error().detail.empty());
      // Offsets move with base_offset.
      Result<NpyArray> based = ParseNpy(AsBytes(row.file), row.limits, 1000);
      BOOST_REQUIRE(!based.has_value());
      BOOST_TEST(based.error().offset == row.offset + 1000);
    }
  }
}

BOOST_AUTO_TEST_CASE(limits_are_clamped_to_their_ceilings) {
  NpyLimits huge;
  huge.max_header_len = uint64_t{1} << 40;
  huge.max_rank = uint64_t{1} << 40;
  huge.max_descr_depth = uint64_t{1} << 40;
  const NpyLimits c = huge.Clamped();
  BOOST_TEST(c.max_header_len == 1'000'000u);
  BOOST_TEST(c.max_rank == 1024u);
  BOOST_TEST(c.max_descr_depth == 200u);
}

}  // namespace
}  // namespace ckptguard
