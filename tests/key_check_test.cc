// scanner::LoadSchema and CheckKeys: load_state_dict's verdicts on the corpus
// (torch-made files), edited schemas, wrapper prefixes (hints and
// --strip-prefix, never stripped by themselves), reference checkpoints as
// schemas, and malformed schema files. tests/python/test_check_torch.py holds
// the same against real torch on many more pairs.
#define BOOST_TEST_MODULE key_check_test
#include <boost/test/unit_test.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "ckptguard/scanner/key_check.h"
#include "print_types.h"
#include "expect_util.h"
#include "test_util.h"

namespace ckptguard::scanner {
namespace {

using json = nlohmann::ordered_json;  // keeps the schema file's key order
using testing::CorpusDir;

using testing::Why;

std::string Benign(const std::string& name) { return (CorpusDir() / "benign" / name).string(); }

json MlpSchema() { return json::parse(testing::ReadFile(CorpusDir() / "benign" / "mlp.schema.json")); }

Checkpoint Load(const std::string& path) {
  Result<Checkpoint> ckpt = LoadCheckpoint(path);
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  return std::move(*ckpt);
}

ModelSchema Schema(const std::string& path, const std::string& prefix = "") {
  Result<ModelSchema> schema = LoadSchema(path, prefix);
  BOOST_REQUIRE_MESSAGE(schema.has_value(), Why(schema));
  return std::move(*schema);
}

KeyCheckResult Check(const Checkpoint& ckpt, const ModelSchema& expected, bool strict, const std::string& prefix = "",
                     std::optional<std::string> strip = std::nullopt) {
  Result<KeyCheckResult> r =
      CheckKeys(ckpt, expected, KeyCheckOptions{.strict = strict, .prefix = prefix, .strip_prefix = strip});
  BOOST_REQUIRE_MESSAGE(r.has_value(), Why(r));
  return std::move(*r);
}

using Keys = std::vector<std::string>;

// Safetensors builds a safetensors file of zero-filled float32 tensors, the
// header padded with spaces to `header_len` bytes (default: to align the data).
std::string Safetensors(const std::vector<std::pair<std::string, std::vector<int64_t>>>& tensors,
                        uint64_t header_len = 0) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, shape] : tensors) {
    uint64_t n = 4;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    header[name] = json{{"dtype", "F32"}, {"shape", shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  if (header_len == 0) header_len = (text.size() + 7) / 8 * 8;  // the data 8-byte aligned, as the writer does
  BOOST_REQUIRE(header_len >= text.size());
  text.append(header_len - text.size(), ' ');
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xff));
  return out + text + std::string(offset, '\0');
}

const std::vector<std::pair<std::string, std::vector<int64_t>>> kMlp = {
    {"hidden.weight", {256, 20}}, {"hidden.bias", {256}}, {"output.weight", {10, 256}}, {"output.bias", {10}}};

BOOST_AUTO_TEST_CASE(state_dict_fits_its_schema) {
  const Checkpoint ckpt = Load(Benign("mlp.params"));
  const ModelSchema schema = Schema(Benign("mlp.schema.json"));
  BOOST_REQUIRE(schema.keys.size() == 4u);
  BOOST_TEST(schema.keys[0].key == "hidden.weight");  // the file's order
  BOOST_TEST(schema.keys[0].dtype.value_or("") == "float32");
  BOOST_TEST(schema.keys[0].shape == (std::vector<int64_t>{256, 20}));
  BOOST_TEST(!schema.has_metadata);
  for (bool strict : {true, false}) {
    const KeyCheckResult r = Check(ckpt, schema, strict);
    BOOST_TEST(r.ok);
    BOOST_TEST(r.missing.empty());
    BOOST_TEST(r.unexpected.empty());
    BOOST_TEST(r.mismatched.empty());
    BOOST_TEST(r.loaded.size() == 4u);
    BOOST_TEST(!r.strict.exception.has_value());
    BOOST_TEST(r.hints.empty());
  }
  // The loader keeps state_dict()._metadata, and check shows it.
  const KeyCheckResult r = Check(ckpt, schema, true);
  BOOST_REQUIRE(r.metadata.has_value());
  BOOST_TEST(r.metadata->size() == 3u);
  BOOST_TEST(r.metadata->at(1).first == "hidden");
  BOOST_TEST(r.metadata->at(1).second.value_or(-1) == 1);
  BOOST_TEST(r.state_dict_type == "<class 'collections.OrderedDict'>");
}

BOOST_AUTO_TEST_CASE(full_checkpoint_fits_under_its_prefix) {
  const Checkpoint ckpt = Load(Benign("mlp_full_checkpoint.pt"));
  const ModelSchema schema = Schema(Benign("mlp.schema.json"));
  for (const std::string prefix : {"model", "model."}) {
    const KeyCheckResult r = Check(ckpt, schema, true, prefix);
    BOOST_TEST(r.ok, prefix);
    BOOST_TEST(r.missing.empty());
    BOOST_TEST(r.unexpected.empty());
  }
  // Without the prefix torch sees the training checkpoint's own keys (the
  // nested dicts are values, never dotted keys): every expected key is
  // missing and the four top-level keys are unexpected.
  const KeyCheckResult strict = Check(ckpt, schema, true);
  BOOST_TEST(!strict.ok);
  BOOST_TEST(strict.missing == (Keys{"hidden.weight", "hidden.bias", "output.weight", "output.bias"}));
  BOOST_TEST(strict.unexpected == (Keys{"model", "optimizer", "epoch", "rng_state"}));
  BOOST_REQUIRE(strict.strict.exception.has_value());
  BOOST_TEST(strict.strict.exception->type == "RuntimeError");
  BOOST_TEST(strict.strict.exception->message ==
             "Error(s) in loading state_dict for <model class>:\n\tMissing key(s) in state_dict: \"hidden.weight\", "
             "\"hidden.bias\", \"output.weight\", \"output.bias\". \n\tUnexpected key(s) in state_dict: \"model\", "
             "\"optimizer\", \"epoch\", \"rng_state\". ");
  BOOST_TEST(strict.hints == Keys{"the dict under 'model' would fit: --prefix model"});
  // strict=False passes and loads nothing: the result says so.
  const KeyCheckResult loose = Check(ckpt, schema, false);
  BOOST_TEST(loose.ok);
  BOOST_TEST(loose.loaded.empty());
  BOOST_TEST(loose.num_expected == 4u);

  Result<KeyCheckResult> bad = CheckKeys(ckpt, schema, KeyCheckOptions{.strict = true, .prefix = "modle"});
  BOOST_REQUIRE(!bad.has_value());
  BOOST_TEST(bad.error().code == ErrorCode::kInvalidArgument);
  BOOST_TEST(bad.error().detail.find("'modle'") != std::string::npos, bad.error().detail);
}

// One edit of the schema, and what load_state_dict makes of it in each mode.
struct EditCase {
  const char* name;
  void (*edit)(json&);
  Keys missing;
  Keys unexpected;
  std::string mismatch;  // torch's message for the one mismatch, "" for none
  std::string converted;  // the one dtype conversion, "" for none
  bool strict_ok;
  bool non_strict_ok;
};

const EditCase kEdits[] = {
    {"key removed: unexpected", [](json& s) { s.erase("output.bias"); }, {}, {"output.bias"}, "", "", false, true},
    {"key added: missing",
     [](json& s) { s["extra.weight"] = json{{"dtype", "float32"}, {"shape", {3}}}; },
     {"extra.weight"},
     {},
     "",
     "",
     false,
     true},
    {"shape changed: fails in both modes",
     [](json& s) { s["hidden.weight"]["shape"] = {20, 256}; },
     {},
     {},
     "size mismatch for hidden.weight: copying a param with shape torch.Size([256, 20]) from checkpoint, the shape "
     "in current model is torch.Size([20, 256]).",
     "",
     false,
     false},
    {"dtype changed: converted, not a mismatch",
     [](json& s) { s["output.bias"]["dtype"] = "float16"; },
     {},
     {},
     "",
     "copied from float32 into float16",
     true,
     true},
    {"0-d parameter: a 1-d tensor loads as its first element",
     [](json& s) { s["output.bias"]["shape"] = json::array(); },
     {},
     {},
     "",
     "",
     true,
     true},
    {"lazy parameter: takes the checkpoint's shape",
     [](json& s) { s["hidden.weight"]["shape"] = nullptr; },
     {},
     {},
     "",
     "",
     true,
     true},
    {"torch. spelling and no dtype are accepted",
     [](json& s) {
       s["output.bias"]["dtype"] = "torch.float32";
       s["hidden.bias"].erase("dtype");
       s["output.weight"]["dtype"] = nullptr;
     },
     {},
     {},
     "",
     "",
     true,
     true},
};

BOOST_AUTO_TEST_CASE(schema_edits_follow_load_state_dict) {
  const Checkpoint ckpt = Load(Benign("mlp.params"));
  testing::TempDir dir;
  for (const EditCase& c : kEdits) {
    BOOST_TEST_CONTEXT(c.name) {
      json schema = MlpSchema();
      c.edit(schema);
      const ModelSchema expected = Schema(dir.Write("schema.json", schema.dump()));
      for (bool strict : {true, false}) {
        const KeyCheckResult r = Check(ckpt, expected, strict);
        BOOST_TEST(r.ok == (strict ? c.strict_ok : c.non_strict_ok), "strict=" << strict);
        BOOST_TEST(r.missing == c.missing);
        BOOST_TEST(r.unexpected == c.unexpected);
        if (c.mismatch.empty()) {
          BOOST_TEST(r.mismatched.empty());
        } else {
          BOOST_REQUIRE(r.mismatched.size() == 1u);
          BOOST_TEST(r.mismatched[0].detail == c.mismatch);
          BOOST_TEST(r.mismatched[0].kind == "size");
        }
        if (c.converted.empty()) {
          BOOST_TEST(r.converted.empty());
        } else {
          BOOST_REQUIRE(r.converted.size() == 1u);
          BOOST_TEST(r.converted[0].detail == c.converted);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(data_parallel_prefix_on_the_expected_side_is_a_hint) {
  // The model is wrapped (every key "module."), the checkpoint is not: torch
  // fails strict and strict=False loads nothing. Nothing is stripped; a hint
  // says what would fit.
  const Checkpoint ckpt = Load(Benign("mlp.params"));
  testing::TempDir dir;
  json wrapped = json::object();
  const json plain = MlpSchema();
  for (const auto& [key, entry] : plain.items()) wrapped["module." + key] = entry;
  const ModelSchema schema = Schema(dir.Write("wrapped.json", wrapped.dump()));
  const KeyCheckResult r = Check(ckpt, schema, true);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.missing == (Keys{"module.hidden.weight", "module.hidden.bias", "module.output.weight",
                                "module.output.bias"}));
  BOOST_TEST(r.unexpected == (Keys{"hidden.weight", "hidden.bias", "output.weight", "output.bias"}));
  BOOST_REQUIRE(r.hints.size() == 1u);
  BOOST_TEST(r.hints[0].find("model.module.load_state_dict") != std::string::npos, r.hints[0]);
  const KeyCheckResult loose = Check(ckpt, schema, false);
  BOOST_TEST(loose.ok);
  BOOST_TEST(loose.loaded.empty());
}

BOOST_AUTO_TEST_CASE(data_parallel_prefix_on_the_checkpoint_side_needs_strip_prefix) {
  testing::TempDir dir;
  std::vector<std::pair<std::string, std::vector<int64_t>>> wrapped;
  for (const auto& [key, shape] : kMlp) wrapped.emplace_back("module." + key, shape);
  const Checkpoint ckpt = Load(dir.Write("wrapped.safetensors", Safetensors(wrapped)));
  const ModelSchema schema = Schema(Benign("mlp.schema.json"));
  const KeyCheckResult r = Check(ckpt, schema, true);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.missing.size() == 4u);
  BOOST_TEST(r.unexpected.front() == "module.hidden.weight");
  BOOST_REQUIRE(r.hints.size() == 1u);
  BOOST_TEST(r.hints[0].find("--strip-prefix module.") != std::string::npos, r.hints[0]);

  const KeyCheckResult stripped = Check(ckpt, schema, true, "", "module.");
  BOOST_TEST(stripped.ok);
  BOOST_TEST(stripped.loaded.size() == 4u);

  ModelSchema fewer = schema;
  fewer.keys.pop_back();
  const KeyCheckResult extra = Check(ckpt, fewer, true, "", "module.");
  BOOST_TEST(!extra.ok);
  BOOST_TEST(extra.unexpected == Keys{"output.bias"});
}

BOOST_AUTO_TEST_CASE(strip_prefix_is_consume_prefix_in_state_dict_if_present) {
  // torch 1.13's helper renames matching keys in sorted order: they move to
  // the end of the dict, so torch reports them in that order.
  testing::TempDir dir;
  const Checkpoint ckpt =
      Load(dir.Write("mixed.safetensors", Safetensors({{"module.b", {1}}, {"c", {1}}, {"module.a", {1}}})));
  const ModelSchema schema{.keys = {{"x", std::nullopt, {1}}}};
  const KeyCheckResult r = Check(ckpt, schema, true, "", "module.");
  BOOST_TEST(r.unexpected == (Keys{"c", "a", "b"}));
  BOOST_TEST(r.num_keys == 3u);
}

BOOST_AUTO_TEST_CASE(a_common_prefix_is_never_guessed) {
  // Every expected key starts with "encoder." and no checkpoint key does:
  // all keys are reported as they are, and no hint is invented.
  const Checkpoint ckpt = Load(Benign("mlp.params"));
  const ModelSchema expected{.keys = {{"encoder.layer.weight", "float32", {4, 4}},
                                      {"encoder.layer.bias", "float32", {4}}}};
  const KeyCheckResult r = Check(ckpt, expected, true);
  BOOST_TEST(!r.ok);
  BOOST_TEST(r.missing == (Keys{"encoder.layer.weight", "encoder.layer.bias"}));
  BOOST_TEST(r.unexpected.size() == 4u);
  BOOST_TEST(r.hints.empty());
}

BOOST_AUTO_TEST_CASE(metadata_in_a_json_schema) {
  // "_metadata" names modules (a key naming a parameter-less child is
  // ignored, as torch ignores it) and None children (keys under them too).
  const Checkpoint ckpt = Load(Benign("mlp.params"));
  testing::TempDir dir;
  json schema = MlpSchema();
  schema["_metadata"] = json{{"", {{"version", 1}}}, {"hidden", {{"version", 1}}}, {"act", {{"version", 1}}},
                             {"output", {{"version", 1}}}, {"skip", nullptr}};
  const ModelSchema model = Schema(dir.Write("schema.json", schema.dump()));
  BOOST_TEST(model.has_metadata);
  BOOST_REQUIRE(model.modules.size() == 5u);
  BOOST_TEST(model.modules[4].none);
  const KeyCheckResult r = Check(ckpt, model, true);
  BOOST_TEST(r.ok);
  BOOST_TEST(r.caveats.empty());
}

BOOST_AUTO_TEST_CASE(what_the_reference_cannot_tell_is_said) {
  // A version-2 module without running stats is a BatchNorm or an
  // InstanceNorm that does not track them; torch treats running stats from a
  // checkpoint without a version differently for the two. A module with a
  // version above 2 has a class of its own with its own loading.
  testing::TempDir dir;
  const Checkpoint ckpt = Load(dir.Write(
      "norm.safetensors", Safetensors({{"norm.weight", {3}}, {"norm.bias", {3}}, {"norm.running_mean", {3}}})));
  json schema = {{"norm.weight", {{"dtype", "float32"}, {"shape", {3}}}},
                 {"norm.bias", {{"dtype", "float32"}, {"shape", {3}}}},
                 {"_metadata", {{"", {{"version", 1}}}, {"norm", {{"version", 2}}}}}};
  const KeyCheckResult r = Check(ckpt, Schema(dir.Write("norm.json", schema.dump())), true);
  BOOST_TEST(r.unexpected == Keys{"norm.running_mean"});
  BOOST_REQUIRE(r.caveats.size() == 1u);
  BOOST_TEST(r.caveats[0].find("as an InstanceNorm torch raises 'Unexpected running stats buffer(s)'") !=
                 std::string::npos,
             r.caveats[0]);

  schema["_metadata"]["norm"]["version"] = 3;
  const KeyCheckResult v3 = Check(ckpt, Schema(dir.Write("norm.json", schema.dump())), true);
  BOOST_REQUIRE(v3.caveats.size() == 1u);
  BOOST_TEST(v3.caveats[0].find("module 'norm' has version 3") != std::string::npos, v3.caveats[0]);
}

BOOST_AUTO_TEST_CASE(a_reference_checkpoint_is_a_schema) {
  const Checkpoint ckpt = Load(Benign("mlp.params"));
  const ModelSchema legacy = Schema(Benign("mlp_legacy.pt"));
  BOOST_TEST(legacy.keys.size() == 4u);
  BOOST_TEST(Check(ckpt, legacy, true).ok);
  const ModelSchema full = Schema(Benign("mlp_full_checkpoint.pt"), "model");
  BOOST_TEST(full.keys.size() == 4u);
  BOOST_TEST(Check(ckpt, full, true).ok);
  // A training checkpoint is not a model's state_dict(): its nested dicts
  // are not flattened into keys, and it is refused naming the first one.
  const Result<ModelSchema> training = LoadSchema(Benign("mlp_full_checkpoint.pt"));
  BOOST_REQUIRE(!training.has_value());
  BOOST_TEST(training.error().code == ErrorCode::kInvalidArgument);
  BOOST_TEST(training.error().detail.find("value at 'model' is a dict, not a tensor") != std::string::npos,
             training.error().detail);

  // Decided by content, not name. A safetensors file whose header length
  // starts with '{' (0x17b = 379 bytes) is tried as JSON, then as a
  // checkpoint; the reference writer never makes one (it aligns the data to
  // 8 bytes, so the length is even), and the loader refuses it for that.
  testing::TempDir dir;
  const std::string bytes = Safetensors(kMlp, 0x17b);
  BOOST_REQUIRE(bytes[0] == '{');
  const Result<ModelSchema> sniffed = LoadSchema(dir.Write("schema.json", bytes));
  BOOST_REQUIRE(!sniffed.has_value());
  BOOST_TEST(sniffed.error().detail.find("neither a JSON schema (not valid JSON") != std::string::npos,
             sniffed.error().detail);
  BOOST_TEST(sniffed.error().detail.find("nor a checkpoint (malformed at byte 387: container anomaly "
                                         "safetensors.unaligned_data") != std::string::npos,
             sniffed.error().detail);
  // An aligned safetensors reference (a .json name does not matter).
  const ModelSchema named_json = Schema(dir.Write("other.json", Safetensors(kMlp)));
  BOOST_TEST(named_json.keys.size() == 4u);
  BOOST_TEST(Check(ckpt, named_json, true).ok);

  // A hostile reference is refused as any checkpoint is.
  Result<ModelSchema> hostile =
      LoadSchema((CorpusDir() / "malicious" / "torch_zip_injected.pt").string());
  BOOST_REQUIRE(!hostile.has_value());
  BOOST_TEST(hostile.error().code == ErrorCode::kForbiddenGlobal);
  BOOST_TEST(hostile.error().detail.find("os.system") != std::string::npos, hostile.error().detail);
}

struct BadSchema {
  const char* text;
  ErrorCode code;
  const char* detail;  // a substring of the error's detail
};

const BadSchema kBadSchemas[] = {
    {"[1, 2]", ErrorCode::kMalformed, "must be an object mapping each key to {\"dtype\", \"shape\"}, got a list"},
    {R"({"w": [1, 2]})", ErrorCode::kMalformed, "key 'w': expected an object"},
    {R"({"w": {"dtype": "float32"}})", ErrorCode::kMalformed, "key 'w': no \"shape\""},
    {R"({"w": {"shape": "1,2"}})", ErrorCode::kMalformed, "key 'w': \"shape\" must be a list of non-negative integers, got a string"},
    {R"({"w": {"shape": [1, 2.5]}})", ErrorCode::kMalformed, "key 'w': shape[1] must be a non-negative integer, got a float"},
    {R"({"w": {"shape": [true]}})", ErrorCode::kMalformed, "key 'w': shape[0] must be a non-negative integer, got a boolean"},
    {R"({"ok": {"shape": [1]}, "w": {"shape": [3, -1]}})", ErrorCode::kMalformed, "key 'w': shape[1] is -1; dimensions must be >= 0"},
    {R"({"w": {"shape": [18446744073709551615]}})", ErrorCode::kMalformed, "key 'w': shape[0] is too large"},
    {R"({"w": {"dtype": 5, "shape": [1]}})", ErrorCode::kMalformed, "key 'w': \"dtype\" must be a string"},
    {R"({"w": {"dtype": "float33", "shape": [1]}})", ErrorCode::kMalformed, "key 'w': unknown dtype 'float33'"},
    {R"({"w": {"shape": [1]}, "w": {"shape": [2]}})", ErrorCode::kMalformed, "key 'w' appears twice"},
    {R"({"w": )", ErrorCode::kMalformed, "neither a JSON schema (not valid JSON"},
    {R"({"w": {"tensor": false}})", ErrorCode::kMalformed, "key 'w': only `_extra_state` may be a non-tensor"},
    {R"({"w": {"tensor": 0, "shape": [1]}})", ErrorCode::kMalformed, "key 'w': \"tensor\" must be true or false"},
    {R"({"_metadata": [1]})", ErrorCode::kMalformed, "\"_metadata\": must map each module path"},
    {R"({"_metadata": {"a": {"version": "2"}}})", ErrorCode::kMalformed, "module 'a': \"version\" must be an integer"},
};

BOOST_AUTO_TEST_CASE(malformed_schemas_name_the_key) {
  testing::TempDir dir;
  for (const BadSchema& c : kBadSchemas) {
    BOOST_TEST_CONTEXT(c.text) {
      const Result<ModelSchema> r = LoadSchema(dir.Write("bad.json", c.text));
      BOOST_REQUIRE(!r.has_value());
      BOOST_TEST(r.error().code == c.code);
      BOOST_TEST(r.error().detail.find(c.detail) != std::string::npos, r.error().detail);
    }
  }
  // A syntax error is located.
  const Result<ModelSchema> truncated = LoadSchema(dir.Write("bad.json", R"({"w": )"));
  BOOST_REQUIRE(!truncated.has_value());
  BOOST_TEST(truncated.error().offset == 6u);

  // A prefix only applies to a reference checkpoint.
  const Result<ModelSchema> prefixed = LoadSchema(Benign("mlp.schema.json"), "model");
  BOOST_REQUIRE(!prefixed.has_value());
  BOOST_TEST(prefixed.error().code == ErrorCode::kInvalidArgument);

  const Result<ModelSchema> absent = LoadSchema((dir.path / "absent.json").string());
  BOOST_REQUIRE(!absent.has_value());
  BOOST_TEST(absent.error().code == ErrorCode::kIo);

  // Duplicate expected keys handed to CheckKeys directly.
  const Checkpoint ckpt = Load(Benign("mlp.params"));
  const Result<KeyCheckResult> twice =
      CheckKeys(ckpt, ModelSchema{.keys = {{"a", std::nullopt, {1}}, {"a", std::nullopt, {1}}}});
  BOOST_REQUIRE(!twice.has_value());
  BOOST_TEST(twice.error().code == ErrorCode::kInvalidArgument);
}

BOOST_AUTO_TEST_CASE(a_huge_schema_file_is_refused_before_it_is_read) {
  testing::TempDir dir;
  const std::string path = dir.Write("huge.json", "{\"w\": {\"shape\": [1]}}");
  std::filesystem::resize_file(path, (64u << 20) + 1);  // sparse: nothing is written
  const Result<ModelSchema> r = LoadSchema(path);
  BOOST_REQUIRE(!r.has_value());
  BOOST_TEST(r.error().code == ErrorCode::kLimitExceeded);
  BOOST_TEST(r.error().detail.find("64 MiB") != std::string::npos, r.error().detail);
  // At the limit exactly it is read (and fails on the NUL padding, which
  // nlohmann alone would take for the end of the input).
  std::filesystem::resize_file(path, 64u << 20);
  const Result<ModelSchema> at_limit = LoadSchema(path);
  BOOST_REQUIRE(!at_limit.has_value());
  BOOST_TEST(at_limit.error().code == ErrorCode::kMalformed);
  BOOST_TEST(at_limit.error().detail.find("a NUL byte") != std::string::npos, at_limit.error().detail);
}

}  // namespace
}  // namespace ckptguard::scanner
