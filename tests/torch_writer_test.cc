// The torch zip writer: what it writes reads back through our own loader with
// the same tensors and skeleton, real torch 1.13 loads it with the same
// digests, and re-saving the corpus's torch files keeps every tensor.
#define BOOST_TEST_MODULE torch_writer_test
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "ckptguard/atomic_file.h"
#include "ckptguard/checkpoint.h"
#include "ckptguard/torch_writer.h"
#include "print_types.h"
#include "expect_util.h"
#include "test_util.h"

namespace ckptguard {

namespace {

namespace bdata = boost::unit_test::data;
using nlohmann::json;
using testing::CorpusDir;
using testing::ShellQuote;

using testing::CompareWithExpect;
using testing::Why;

// Written is a tree's file with what our loader makes of it.
struct Written {
  std::string bytes;
  json described;
};

Written WriteAndLoad(const SaveTree& tree, const std::string& archive = "archive") {
  Written w;
  Result<std::string> bytes = TorchZipBytes(tree, archive);
  BOOST_REQUIRE_MESSAGE(bytes.has_value(), Why(bytes));
  w.bytes = std::move(*bytes);
  Status verified = VerifyTorchZip(AsBytes(w.bytes), tree);
  BOOST_TEST(verified.has_value(), Why(verified));
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(w.bytes));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  BOOST_TEST(ckpt->format() == ContainerFormat::kTorchZip);
  BOOST_TEST(ckpt->anomalies().empty());
  // torch's layout: every entry under the prefix, data 64-byte aligned, stored.
  BOOST_TEST(ckpt->container().prefix == archive);
  for (const ContainerEntry& e : ckpt->container().entries) {
    BOOST_TEST(e.zip.name.starts_with(archive + "/"), e.zip.name);
    BOOST_REQUIRE(e.data_offset.has_value());
    BOOST_TEST(*e.data_offset % 64 == 0u, e.zip.name);
    BOOST_TEST(e.zip.method == 0u);
  }
  Result<std::string> described = ckpt->DescribeJson();
  BOOST_REQUIRE_MESSAGE(described.has_value(), Why(described));
  w.described = json::parse(*described);
  return w;
}

// TorchDescribe runs tests/interop/describe_with_torch.py on `path`.
json TorchDescribe(const std::string& path, bool restricted) {
  const std::string script = std::string(CKPTGUARD_SOURCE_DIR) + "/tests/interop/describe_with_torch.py";
  const testing::CommandResult r = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " + ShellQuote(script) + " " +
                                                ShellQuote(path) + (restricted ? " --loader restricted" : ""));
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "torch refused " << path << " (see the log for its message)");
  return json::parse(r.out);
}

// CheckWithTorch writes `bytes` to a file and compares torch's reading with ours.
void CheckWithTorch(const Written& w, const std::string& name, bool restricted) {
  testing::TempDir dir;
  const std::string path = dir.Write(name, w.bytes);
  const json torch = TorchDescribe(path, restricted);
  CompareWithExpect(w.described, torch, name + " (torch)");
}

std::string RandomBytes(std::mt19937_64& rng, size_t n, DType dtype) {
  std::string out(n, '\0');
  for (char& c : out) c = static_cast<char>(rng() & 0xff);
  if (dtype == DType::kBool) {
    for (char& c : out) c = static_cast<char>(c & 1);
  }
  if (dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32 || dtype == DType::kFloat64 ||
      dtype == DType::kComplex64 || dtype == DType::kComplex128) {
    // Random bit patterns include NaNs with payloads; torch keeps them, but
    // keep the top exponent bit clear in half of them to mix in normals.
    const size_t unit = DTypeSwapUnit(dtype);
    for (size_t i = 0; i + unit <= n; i += 2 * unit) out[i + unit - 1] = static_cast<char>(out[i + unit - 1] & 0x3f);
  }
  return out;
}

const DType kLegacyDTypes[] = {DType::kFloat64, DType::kFloat32, DType::kFloat16, DType::kBFloat16,
                               DType::kInt64,   DType::kInt32,   DType::kInt16,   DType::kInt8,
                               DType::kUInt8,   DType::kBool,    DType::kComplex64, DType::kComplex128};

// Tensor adds a contiguous tensor with its own storage of random data.
SaveId AddTensor(SaveTree& tree, std::mt19937_64& rng, DType dtype, std::vector<int64_t> shape, bool parameter = false,
                 bool requires_grad = false) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  std::vector<int64_t> stride(shape.size());
  int64_t step = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    stride[i] = step;
    step *= shape[i];
  }
  const uint32_t storage =
      tree.AddOwnedStorage(dtype, RandomBytes(rng, static_cast<size_t>(numel) * DTypeSize(dtype), dtype));
  return tree.Tensor({dtype, std::move(shape), std::move(stride), 0, storage, parameter, requires_grad});
}

std::pair<SaveId, SaveId> Item(SaveTree& t, const std::string& key, SaveId value) { return {t.Str(key), value}; }

// ---------------------------------------------------------------------------
// Trees used by several tests.

SaveTree DTypesTree() {
  std::mt19937_64 rng(1);
  SaveTree t;
  std::vector<std::pair<SaveId, SaveId>> items;
  for (DType d : kLegacyDTypes) {
    items.push_back(Item(t, std::string(DTypeName(d)), AddTensor(t, rng, d, {3, 5})));
  }
  items.push_back(Item(t, "scalar", AddTensor(t, rng, DType::kFloat32, {})));
  items.push_back(Item(t, "empty", AddTensor(t, rng, DType::kInt64, {0, 4})));
  items.push_back(Item(t, "four_d", AddTensor(t, rng, DType::kFloat16, {2, 1, 3, 2})));
  t.root = t.Dict(items);
  return t;
}

SaveTree ViewsTree() {
  std::mt19937_64 rng(2);
  SaveTree t;
  const uint32_t s = t.AddOwnedStorage(DType::kFloat32, RandomBytes(rng, 48 * 4, DType::kFloat32));
  const SaveId base = t.Tensor({DType::kFloat32, {6, 8}, {8, 1}, 0, s, false, false});
  const SaveId transposed = t.Tensor({DType::kFloat32, {8, 6}, {1, 8}, 0, s, false, false});
  const SaveId col = t.Tensor({DType::kFloat32, {6}, {8}, 3, s, false, false});
  const SaveId narrow = t.Tensor({DType::kFloat32, {2, 8}, {8, 1}, 16, s, false, false});
  const SaveId steps = t.Tensor({DType::kFloat32, {3, 4}, {16, 2}, 1, s, false, false});
  const SaveId expanded = t.Tensor({DType::kFloat32, {4, 8}, {0, 1}, 8, s, false, false});
  const uint32_t s2 = t.AddOwnedStorage(DType::kInt16, RandomBytes(rng, 10 * 2, DType::kInt16));
  const SaveId tail = t.Tensor({DType::kInt16, {3}, {1}, 7, s2, false, false});
  t.root = t.Dict({Item(t, "base", base), Item(t, "transposed", transposed), Item(t, "col_view", col),
                   Item(t, "narrow", narrow), Item(t, "steps", steps), Item(t, "expanded", expanded),
                   Item(t, "alias", base), Item(t, "tail", tail)});
  return t;
}

SaveTree ParametersTree() {
  std::mt19937_64 rng(3);
  SaveTree t;
  t.root = t.OrderedDict({Item(t, "w", AddTensor(t, rng, DType::kFloat32, {4, 3}, true, true)),
                          Item(t, "frozen", AddTensor(t, rng, DType::kFloat64, {2}, true, false)),
                          Item(t, "grad", AddTensor(t, rng, DType::kFloat32, {2}, false, true)),
                          Item(t, "plain", AddTensor(t, rng, DType::kBFloat16, {5}, false, false))});
  return t;
}

// No floats or bytes: torch 1.13's weights_only loader reads it.
SaveTree IntsAndContainersTree() {
  std::mt19937_64 rng(4);
  SaveTree t;
  std::vector<SaveId> ints;
  for (int64_t v : {int64_t{0}, int64_t{1}, int64_t{255}, int64_t{256}, int64_t{65535}, int64_t{65536}, int64_t{-1},
                    int64_t{-128}, int64_t{-129}, int64_t{INT32_MIN}, int64_t{INT32_MAX}, int64_t{INT32_MAX} + 1,
                    int64_t{1} << 53, -(int64_t{1} << 53), std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max()}) {
    ints.push_back(t.Int(v));
  }
  for (const char* big : {"1180591620717411303424", "-36893488147419103232", "9223372036854775808",
                          "-9223372036854775809", "340282366920938463463374607431768211456", "-255", "+17"}) {
    ints.push_back(t.BigInt(big));
  }
  const SaveId shared = t.List({t.Str("shared"), AddTensor(t, rng, DType::kInt8, {2})});
  std::vector<SaveId> tuples;
  for (int n = 0; n <= 5; ++n) {
    std::vector<SaveId> items;
    for (int i = 0; i < n; ++i) items.push_back(t.Int(i));
    tuples.push_back(t.Tuple(items));
  }
  std::vector<SaveId> many;  // more than one APPENDS batch, more than 256 memo entries
  for (int i = 0; i < 2500; ++i) many.push_back(i % 2 ? t.Int(i) : t.List({t.Int(i)}));
  std::vector<std::pair<SaveId, SaveId>> wide;
  for (int i = 0; i < 1001; ++i) wide.push_back({t.Int(i), t.Tuple({t.Int(-i)})});
  t.root = t.Dict({
      Item(t, "ints", t.List(ints)),
      Item(t, "text", t.Str("h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80")),
      Item(t, "empty_str", t.Str("")),
      Item(t, "none", t.None()),
      Item(t, "yes", t.Bool(true)),
      Item(t, "no", t.Bool(false)),
      Item(t, "tuples", t.Tuple(tuples)),
      Item(t, "nested", t.Dict({{t.Int(0), t.Dict({{t.Int(-7), t.List({t.List({}), t.Dict({})})}})},
                                 Item(t, "odict", t.OrderedDict({Item(t, "x", t.None())}))})),
      Item(t, "shared_a", shared),
      Item(t, "shared_b", shared),
      Item(t, "many", t.List(many)),
      Item(t, "wide", t.Dict(wide)),
      Item(t, "single", t.List({t.Int(1)})),
      Item(t, "single_dict", t.Dict({Item(t, "k", t.Int(2))})),
  });
  return t;
}

SaveTree FloatsAndBytesTree() {
  SaveTree t;
  std::vector<SaveId> floats;
  for (double v : {0.1, -0.0, 1e300, 5e-324, std::numeric_limits<double>::quiet_NaN(),
                   std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity()}) {
    floats.push_back(t.Float(v));
  }
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<char>(i));
  t.root = t.Dict({Item(t, "floats", t.List(floats)), Item(t, "bytes", t.ByteString(std::string("\x00\x01\xff", 3))),
                   Item(t, "all_bytes", t.ByteString(all_bytes)), Item(t, "empty_bytes", t.ByteString("")),
                   Item(t, "tuple_of_floats", t.Tuple({t.Float(2.5), t.Float(-1.0)}))});
  return t;
}

// A training checkpoint as a script would torch.save it.
SaveTree TrainingTree() {
  std::mt19937_64 rng(5);
  SaveTree t;
  const SaveId hidden_w = AddTensor(t, rng, DType::kFloat32, {16, 4});
  const SaveId hidden_b = AddTensor(t, rng, DType::kFloat32, {16});
  const SaveId out_w = AddTensor(t, rng, DType::kFloat32, {2, 16});
  const SaveId out_b = AddTensor(t, rng, DType::kFloat32, {2});
  const SaveId model = t.OrderedDict(
      {Item(t, "hidden.weight", hidden_w), Item(t, "hidden.bias", hidden_b), Item(t, "output.weight", out_w),
       Item(t, "output.bias", out_b)});
  // state_dict()._metadata, set by BUILD.
  const SaveId version = t.Dict({Item(t, "version", t.Int(1))});
  const SaveId metadata = t.OrderedDict({Item(t, "", version), Item(t, "hidden", version), Item(t, "output", version)});
  const SaveId meta_key = t.Str("_metadata");
  t.values[model].attrs = {meta_key, metadata};
  std::vector<std::pair<SaveId, SaveId>> state;
  std::vector<SaveId> params;
  const std::vector<std::vector<int64_t>> shapes = {{16, 4}, {16}, {2, 16}, {2}};
  for (int i = 0; i < 4; ++i) {
    state.push_back({t.Int(i), t.Dict({Item(t, "step", AddTensor(t, rng, DType::kFloat32, {})),
                                       Item(t, "exp_avg", AddTensor(t, rng, DType::kFloat32, shapes[static_cast<size_t>(i)])),
                                       Item(t, "exp_avg_sq",
                                            AddTensor(t, rng, DType::kFloat32, shapes[static_cast<size_t>(i)]))})});
    params.push_back(t.Int(i));
  }
  const SaveId group = t.Dict({Item(t, "lr", t.Float(0.001)), Item(t, "betas", t.Tuple({t.Float(0.9), t.Float(0.999)})),
                               Item(t, "eps", t.Float(1e-08)), Item(t, "weight_decay", t.Int(0)),
                               Item(t, "amsgrad", t.Bool(false)), Item(t, "maximize", t.Bool(false)),
                               Item(t, "foreach", t.None()), Item(t, "capturable", t.Bool(false)),
                               Item(t, "params", t.List(params))});
  const SaveId optimizer = t.Dict({Item(t, "state", t.Dict(state)), Item(t, "param_groups", t.List({group}))});
  t.root = t.Dict({Item(t, "model", model), Item(t, "optimizer", optimizer), Item(t, "epoch", t.Int(3))});
  return t;
}

// ---------------------------------------------------------------------------
// Round trips through our own loader.

void CheckTensorsAsBuilt(const SaveTree& tree, const json& described) {
  // Every described tensor has the dtype/shape/stride/offset it was built with
  // (paths are dict keys of the root here).
  const SaveValue& root = tree.values[tree.root];
  for (size_t i = 0; i + 1 < root.items.size(); i += 2) {
    const SaveValue& v = tree.values[root.items[i + 1]];
    if (v.kind != SaveKind::kTensor) continue;
    const std::string key = tree.values[root.items[i]].text;
    const SaveTensor& want = tree.tensors[v.index];
    BOOST_TEST_CONTEXT("tensor " << key) {
      BOOST_REQUIRE(described.at("tensors").contains(key));
      const json& have = described.at("tensors").at(key);
      BOOST_TEST(have.at("dtype") == std::string(DTypeName(want.dtype)));
      BOOST_TEST(have.at("shape") == json(want.shape));
      BOOST_TEST(have.at("stride") == json(want.stride));
      BOOST_TEST(have.at("storage_offset") == want.storage_offset);
      BOOST_TEST(have.at("parameter") == want.parameter);
    }
  }
}

BOOST_AUTO_TEST_CASE(every_dtype_round_trips) {
  const SaveTree tree = DTypesTree();
  const Written w = WriteAndLoad(tree);
  BOOST_TEST(w.described.at("tensors").size() == 15u);
  CheckTensorsAsBuilt(tree, w.described);
}

BOOST_AUTO_TEST_CASE(views_share_one_record) {
  const SaveTree tree = ViewsTree();
  const Written w = WriteAndLoad(tree);
  CheckTensorsAsBuilt(tree, w.described);
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(w.bytes));
  BOOST_REQUIRE(ckpt.has_value());
  BOOST_TEST(ckpt->storages().size() == 2u);
  // The alias is the same tensor object: one rebuild, then the memo.
  BOOST_TEST(ckpt->tensors().size() == 7u);
  // Contents: col_view gathers every 8th float from offset 3.
  std::optional<ValueId> col = ckpt->Find("col_view");
  BOOST_REQUIRE(col.has_value());
  Result<std::vector<uint8_t>> bytes = ckpt->ContiguousBytes(ckpt->values().Get(*col).index);
  BOOST_REQUIRE(bytes.has_value());
  const std::string& data = tree.owned.front();
  for (int i = 0; i < 6; ++i) BOOST_TEST(std::memcmp(bytes->data() + 4 * i, data.data() + 4 * (3 + 8 * i), 4) == 0);
}

BOOST_AUTO_TEST_CASE(parameters_keep_requires_grad) {
  const SaveTree tree = ParametersTree();
  const Written w = WriteAndLoad(tree);
  CheckTensorsAsBuilt(tree, w.described);
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(w.bytes));
  BOOST_REQUIRE(ckpt.has_value());
  auto tensor = [&](const char* path) { return ckpt->tensors()[ckpt->values().Get(*ckpt->Find(path)).index]; };
  BOOST_TEST(tensor("w").parameter);
  BOOST_TEST(tensor("w").requires_grad);
  BOOST_TEST(tensor("frozen").parameter);
  BOOST_TEST(!tensor("frozen").requires_grad);
  BOOST_TEST(!tensor("grad").parameter);
  BOOST_TEST(tensor("grad").requires_grad);
}

BOOST_AUTO_TEST_CASE(scalars_and_containers_round_trip) {
  const SaveTree tree = IntsAndContainersTree();
  const Written w = WriteAndLoad(tree);
  const json& sk = w.described.at("skeleton").at("__dict__");
  const json ints = sk.at(0).at(1).at("__list__");
  BOOST_TEST(ints.at(0) == 0);
  BOOST_TEST(ints.at(9) == INT32_MIN);
  BOOST_TEST(ints.at(12) == json({{"__bigint__", "9007199254740992"}}));
  BOOST_TEST(ints.at(14) == json({{"__bigint__", "-9223372036854775808"}}));
  BOOST_TEST(ints.at(16) == json({{"__bigint__", "1180591620717411303424"}}));
  BOOST_TEST(ints.at(17) == json({{"__bigint__", "-36893488147419103232"}}));
  BOOST_TEST(ints.at(18) == json({{"__bigint__", "9223372036854775808"}}));
  BOOST_TEST(ints.at(19) == json({{"__bigint__", "-9223372036854775809"}}));
  BOOST_TEST(ints.at(20) == json({{"__bigint__", "340282366920938463463374607431768211456"}}));
  BOOST_TEST(ints.at(21) == -255);
  BOOST_TEST(ints.at(22) == 17);
  BOOST_TEST(sk.at(1).at(1) == "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\x98\x80");
  BOOST_TEST(sk.at(6).at(1).dump() ==
             R"({"__tuple__":[{"__tuple__":[]},{"__tuple__":[0]},{"__tuple__":[0,1]},{"__tuple__":[0,1,2]},)"
             R"({"__tuple__":[0,1,2,3]},{"__tuple__":[0,1,2,3,4]}]})");
  BOOST_TEST(sk.at(7).at(1).dump() ==
             R"({"__dict__":[[0,{"__dict__":[[-7,{"__list__":[{"__list__":[]},{"__dict__":[]}]}]]}],)"
             R"(["odict",{"__dict__":[["x",null]]}]]})");
  BOOST_TEST(sk.at(8).at(1) == sk.at(9).at(1));
  BOOST_TEST(sk.at(10).at(1).at("__list__").size() == 2500u);
  BOOST_TEST(sk.at(10).at(1).at("__list__").at(2498) == json::parse(R"({"__list__":[2498]})"));
  BOOST_TEST(sk.at(11).at(1).at("__dict__").size() == 1001u);
  BOOST_TEST(sk.at(11).at(1).at("__dict__").at(1000).dump() == R"([1000,{"__tuple__":[-1000]}])");
  BOOST_TEST(w.described.at("tensors").contains("shared_a.1"));
  BOOST_TEST(w.described.at("tensors").contains("shared_b.1"));
}

BOOST_AUTO_TEST_CASE(floats_and_bytes_round_trip) {
  const Written w = WriteAndLoad(FloatsAndBytesTree());
  const json& sk = w.described.at("skeleton").at("__dict__");
  BOOST_TEST(sk.at(0).at(1).dump() ==
             R"({"__list__":[0.1,-0.0,1e+300,5e-324,{"__float__":"nan"},{"__float__":"inf"},{"__float__":"-inf"}]})");
  BOOST_TEST(sk.at(1).at(1).dump() == R"({"__bytes__":"0001ff"})");
  BOOST_TEST(sk.at(2).at(1).at("__bytes__").get<std::string>().size() == 512u);
  BOOST_TEST(sk.at(3).at(1).dump() == R"({"__bytes__":""})");
}

BOOST_AUTO_TEST_CASE(self_containing_list_is_written_with_the_memo) {
  SaveTree t;
  t.root = t.List({});
  t.values[t.root].items = {t.Int(1), t.root};
  Result<std::string> bytes = TorchZipBytes(t);
  BOOST_REQUIRE_MESSAGE(bytes.has_value(), Why(bytes));
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(*bytes));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  const Value& root = ckpt->values().Get(ckpt->root());
  BOOST_REQUIRE(root.items.size() == 2u);
  BOOST_TEST(root.items[1] == ckpt->root());
}

BOOST_AUTO_TEST_CASE(verify_catches_a_file_that_does_not_hold_the_tree) {
  const SaveTree tree = DTypesTree();
  Result<std::string> bytes = TorchZipBytes(tree);
  BOOST_REQUIRE(bytes.has_value());
  SaveTree changed = DTypesTree();
  changed.owned[3][5] = static_cast<char>(changed.owned[3][5] ^ 1);
  Status s = VerifyTorchZip(AsBytes(*bytes), changed);
  BOOST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().code == ErrorCode::kInternal);
  BOOST_TEST(s.error().detail.find("sha256") != std::string::npos, s.error().detail);
  changed = DTypesTree();
  changed.tensors[0].stride = {1, 3};
  changed.tensors[0].shape = {5, 3};
  s = VerifyTorchZip(AsBytes(*bytes), changed);
  BOOST_REQUIRE(!s.has_value());
  BOOST_TEST(s.error().detail.find("shape") != std::string::npos, s.error().detail);
  BOOST_TEST(VerifyTorchZip(AsBytes(*bytes), tree).has_value());
}

// ---------------------------------------------------------------------------
// Refusals.

BOOST_AUTO_TEST_CASE(bad_trees_are_refused) {
  std::mt19937_64 rng(6);
  {
    SaveTree t;
    const SaveId w = AddTensor(t, rng, DType::kUInt16, {2});
    t.root = t.Dict({Item(t, "model", t.Dict({Item(t, "w", w)}))});
    Result<std::string> r = TorchZipBytes(t);
    BOOST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().code == ErrorCode::kUnsupportedFormat);
    BOOST_TEST(r.error().detail.find("'model.w'") != std::string::npos, r.error().detail);
    BOOST_TEST(r.error().detail.find("uint16") != std::string::npos, r.error().detail);
  }
  {
    SaveTree t;
    const uint32_t s = t.AddOwnedStorage(DType::kFloat32, std::string(16, '\0'));
    t.root = t.List({t.Tensor({DType::kFloat32, {2, 2}, {2, 1}, 1, s, false, false})});
    Result<std::string> r = TorchZipBytes(t);
    BOOST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().code == ErrorCode::kInvalidArgument);
    BOOST_TEST(r.error().detail.find("'0'") != std::string::npos, r.error().detail);
  }
  {
    SaveTree t;
    const uint32_t s = t.AddOwnedStorage(DType::kFloat32, std::string(16, '\0'));
    t.root = t.List({t.Tensor({DType::kInt32, {4}, {1}, 0, s, false, false})});
    BOOST_TEST(TorchZipBytes(t).error().code == ErrorCode::kInvalidArgument);
    t.tensors[0].dtype = DType::kFloat32;
    t.tensors[0].storage = 7;
    BOOST_TEST(TorchZipBytes(t).error().code == ErrorCode::kInvalidArgument);
  }
  {
    SaveTree t;
    t.root = t.Tuple({t.Int(1)});
    t.values[t.root].items.push_back(t.root);
    Result<std::string> r = TorchZipBytes(t);
    BOOST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().code == ErrorCode::kInvalidArgument);
    BOOST_TEST(r.error().detail.find("tuple") != std::string::npos, r.error().detail);
  }
  {
    SaveTree t;
    t.root = t.Dict({{t.List({}), t.Int(1)}});
    BOOST_TEST(TorchZipBytes(t).error().code == ErrorCode::kInvalidArgument);
    t.root = t.BigInt("12x");
    BOOST_TEST(TorchZipBytes(t).error().code == ErrorCode::kInvalidArgument);
    t.root = 999;
    BOOST_TEST(TorchZipBytes(t).error().code == ErrorCode::kInvalidArgument);
    t.root = t.None();
    BOOST_TEST(TorchZipBytes(t, "a/b").error().code == ErrorCode::kInvalidArgument);
    BOOST_TEST(TorchZipBytes(t, "").error().code == ErrorCode::kInvalidArgument);
  }
  {
    // Depth is bounded: a 5,000-deep list is refused, not a stack overflow.
    SaveTree t;
    SaveId at = t.None();
    for (int i = 0; i < 5000; ++i) at = t.List({at});
    t.root = at;
    Result<std::string> r = TorchZipBytes(t);
    BOOST_REQUIRE(!r.has_value());
    BOOST_TEST(r.error().code == ErrorCode::kLimitExceeded);
  }
}

// ---------------------------------------------------------------------------
// Real torch reads what we write.

BOOST_AUTO_TEST_CASE(torch_loads_every_dtype) { CheckWithTorch(WriteAndLoad(DTypesTree()), "dtypes.pt", false); }
BOOST_AUTO_TEST_CASE(torch_loads_views) { CheckWithTorch(WriteAndLoad(ViewsTree()), "views.pt", false); }
BOOST_AUTO_TEST_CASE(torch_loads_parameters) { CheckWithTorch(WriteAndLoad(ParametersTree()), "params.pt", false); }
BOOST_AUTO_TEST_CASE(torch_loads_ints_and_containers) {
  CheckWithTorch(WriteAndLoad(IntsAndContainersTree()), "containers.pt", false);
}
BOOST_AUTO_TEST_CASE(torch_loads_floats_and_bytes) {
  CheckWithTorch(WriteAndLoad(FloatsAndBytesTree()), "floats.pt", true);
}
BOOST_AUTO_TEST_CASE(torch_loads_a_training_checkpoint) {
  const Written w = WriteAndLoad(TrainingTree(), "mlp_full_checkpoint");
  CheckWithTorch(w, "training.pt", true);
  // And the model state_dict loads into a module with its _metadata.
  testing::TempDir dir;
  const std::string path = dir.Write("training.pt", w.bytes);
  const std::string script =
      "import sys, torch\n"
      "sys.path.insert(0, sys.argv[2])\n"
      "from restricted_load import restricted_load\n"
      "ck = restricted_load(sys.argv[1])\n"
      "m = torch.nn.Sequential()\n"
      "m.add_module('hidden', torch.nn.Linear(4, 16))\n"
      "m.add_module('output', torch.nn.Linear(16, 2))\n"
      "m.load_state_dict(ck['model'])\n"
      "assert ck['model']._metadata['hidden'] == {'version': 1}, ck['model']._metadata\n"
      "assert ck['epoch'] == 3 and ck['optimizer']['param_groups'][0]['lr'] == 0.001\n"
      "opt = torch.optim.Adam(m.parameters())\n"
      "opt.load_state_dict(ck['optimizer'])\n"
      "print('ok')\n";
  const std::string py = dir.Write("check.py", script);
  const testing::CommandResult r =
      testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " + ShellQuote(py) + " " + ShellQuote(path) + " " +
                   ShellQuote(std::string(CKPTGUARD_SOURCE_DIR) + "/tests/interop"));
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out == "ok\n");
}

// torch.load reads the archive whatever its prefix.
BOOST_AUTO_TEST_CASE(torch_loads_other_prefixes) {
  CheckWithTorch(WriteAndLoad(ParametersTree(), "model_v2"), "prefix.pt", false);
}

BOOST_AUTO_TEST_CASE(write_torch_zip_replaces_the_file_only_when_it_reads_back) {
  testing::TempDir dir;
  const std::string path = (dir.path / "ckpt.pt").string();
  const SaveTree tree = TrainingTree();
  Status s = WriteTorchZip(path, tree, "ckpt");
  BOOST_REQUIRE_MESSAGE(s.has_value(), Why(s));
  Result<Checkpoint> ckpt = LoadCheckpoint(path);
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  BOOST_TEST(ckpt->container().prefix == "ckpt");
  Result<std::string> described = ckpt->DescribeJson();
  BOOST_REQUIRE(described.has_value());
  CompareWithExpect(json::parse(*described), TorchDescribe(path, true), "WriteTorchZip (torch)");
  const std::string before = testing::ReadFile(path);
  // A tree the writer refuses leaves the old file as it was, and no temporary.
  SaveTree bad;
  bad.root = bad.List({});
  bad.values[bad.root].items = {12345};
  Status refused = WriteTorchZip(path, bad, "ckpt");
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().code == ErrorCode::kInvalidArgument);
  BOOST_TEST(testing::ReadFile(path) == before);
  // A failing rename (injected) leaves the old file too.
  SetAtomicFileFailureForTesting(AtomicFileStep::kRename, EIO);
  Status failed = WriteTorchZip(path, ParametersTree(), "ckpt");
  SetAtomicFileFailureForTesting(AtomicFileStep::kNone, 0);
  BOOST_REQUIRE(!failed.has_value());
  BOOST_TEST(failed.error().code == ErrorCode::kIo);
  BOOST_TEST(testing::ReadFile(path) == before);
  // A folder that does not exist is an I/O error.
  Status missing = WriteTorchZip((dir.path / "no" / "such.pt").string(), tree, "such");
  BOOST_REQUIRE(!missing.has_value());
  BOOST_TEST(missing.error().code == ErrorCode::kIo);
  size_t files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir.path)) ++files;
  BOOST_TEST(files == 1u);
}

// Python's zipfile, an independent reader, checks every CRC-32 and size.
BOOST_AUTO_TEST_CASE(python_zipfile_checks_the_archive) {
  const Written w = WriteAndLoad(TrainingTree());
  testing::TempDir dir;
  const std::string path = dir.Write("training.pt", w.bytes);
  const testing::CommandResult r = testing::Run(
      ShellQuote(CKPTGUARD_PYTHON) + " -c " +
      ShellQuote("import sys, zipfile\n"
                 "z = zipfile.ZipFile(sys.argv[1])\n"
                 "assert z.testzip() is None\n"
                 "print(' '.join(i.filename for i in z.infolist()))\n") +
      " " + ShellQuote(path));
  BOOST_TEST(r.exit_code == 0);
  std::string want = "archive/data.pkl archive/byteorder";
  std::vector<std::string> keys;
  for (int i = 0; i < 16; ++i) keys.push_back(std::to_string(i));
  std::sort(keys.begin(), keys.end());  // torch writes records in string order
  for (const std::string& k : keys) want += " archive/data/" + k;
  BOOST_TEST(r.out == want + " archive/version\n");
}

// 65,535 entries and more: the zip64 end records are written, and both our
// loader and torch read them (checked lightly: 65,533 tensors).
BOOST_AUTO_TEST_CASE(zip64_records_when_entries_overflow) {
  constexpr int kTensors = 0xffff - 2;  // + data.pkl, byteorder, version = 65,536 entries
  SaveTree t;
  std::vector<SaveId> items;
  std::string data;
  uint64_t sum = 0;
  for (int i = 0; i < kTensors; ++i) {
    data.push_back(static_cast<char>(i * 7));
    sum += static_cast<uint8_t>(data.back());
  }
  for (int i = 0; i < kTensors; ++i) {
    const uint32_t s = t.AddStorage({DType::kUInt8, AsBytes(std::string_view(data).substr(static_cast<size_t>(i), 1))});
    items.push_back(t.Tensor({DType::kUInt8, {}, {}, 0, s, false, false}));
  }
  t.root = t.List(items);
  Result<std::string> bytes = TorchZipBytes(t);
  BOOST_REQUIRE_MESSAGE(bytes.has_value(), Why(bytes));
  BOOST_TEST(bytes->find(std::string("PK\x06\x06", 4)) != std::string::npos);
  BOOST_TEST(bytes->find(std::string("PK\x06\x07", 4)) != std::string::npos);
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(*bytes));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  BOOST_TEST(ckpt->anomalies().empty());
  BOOST_TEST(ckpt->container().entries.size() == 65'536u);
  BOOST_TEST(ckpt->tensors().size() == static_cast<size_t>(kTensors));
  testing::TempDir dir;
  const std::string path = dir.Write("many.pt", *bytes);
  const testing::CommandResult r = testing::Run(
      ShellQuote(CKPTGUARD_PYTHON) + " -c " +
      ShellQuote("import sys, torch\n"
                 "x = torch.load(sys.argv[1], weights_only=True)\n"
                 "print(len(x), sum(int(t) for t in x))\n") +
      " " + ShellQuote(path));
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out == std::to_string(kTensors) + " " + std::to_string(sum) + "\n");
}

// ---------------------------------------------------------------------------
// Re-saving the corpus.

// The brief's list, plus every other loadable kind the corpus has: torch 2.x
// untyped storages, legacy files, safetensors.
const char* const kResaved[] = {"mlp.params",       "mlp_full_checkpoint.pt", "dtypes.pt",
                                "views_and_sharing.pt", "parameters.pt",      "containers.pt",
                                "torch2_bigendian_dtypes.pt", "torch2_layout_checkpoint.pt", "mlp_legacy.pt",
                                "mlp_full_legacy.pth", "convnet_sgd.ckpt",   "mlp.safetensors"};

BOOST_DATA_TEST_CASE(corpus_files_resave_bit_exactly, bdata::make(kResaved), name_cstr) {
  const std::string name = name_cstr;
  const std::string path = (CorpusDir() / "benign" / name).string();
  const json expect = json::parse(testing::ReadFile(path + ".expect.json"));
  Result<Checkpoint> ckpt = LoadCheckpoint(path);
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  Result<SaveTree> tree = SaveTreeFromCheckpoint(*ckpt);
  BOOST_REQUIRE_MESSAGE(tree.has_value(), Why(tree));
  const Written w = WriteAndLoad(*tree);
  CompareWithExpect(w.described, expect, name + " re-saved");
  // Storages stay shared: no more records than the original had.
  Result<Checkpoint> again = LoadCheckpointBytes(AsBytes(w.bytes));
  BOOST_REQUIRE(again.has_value());
  BOOST_TEST(again->storages().size() <= ckpt->storages().size());
  // torch 1.13's weights_only refuses floats and bytes; the restricted
  // loader is the same allowlist plus those.
  testing::TempDir dir;
  const std::string out = dir.Write(name, w.bytes);
  const json torch = TorchDescribe(out, true);
  CompareWithExpect(w.described, torch, name + " re-saved (torch)");
}

}  // namespace

}  // namespace ckptguard

namespace ckptguard {
namespace {

// What the writer cannot express is refused naming where it is.
BOOST_AUTO_TEST_CASE(unwritable_values_are_refused_by_path) {
  {
    // A TorchScript archive's data.pkl holds module objects.
    Result<Checkpoint> ckpt = LoadCheckpoint((CorpusDir() / "benign" / "mlp_torchscript.pt").string());
    BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
    Result<SaveTree> tree = SaveTreeFromCheckpoint(*ckpt);
    BOOST_REQUIRE(!tree.has_value());
    BOOST_TEST(tree.error().code == ErrorCode::kUnsupportedFormat);
    BOOST_TEST(tree.error().detail.find("object") != std::string::npos, tree.error().detail);
  }
  {
    // torch.save of a set and a complex, then our loader reads them.
    testing::TempDir dir;
    const std::string path = (dir.path / "set.pt").string();
    const testing::CommandResult r = testing::Run(
        ShellQuote(CKPTGUARD_PYTHON) + " -c " +
        ShellQuote("import sys, torch\ntorch.save({'ok': 1, 'nested': {'s': {1, 2}}}, sys.argv[1])\n") + " " +
        ShellQuote(path));
    BOOST_REQUIRE(r.exit_code == 0);
    Result<Checkpoint> ckpt = LoadCheckpoint(path);
    BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
    Result<SaveTree> tree = SaveTreeFromCheckpoint(*ckpt);
    BOOST_REQUIRE(!tree.has_value());
    BOOST_TEST(tree.error().code == ErrorCode::kUnsupportedFormat);
    BOOST_TEST(tree.error().detail.find("set at 'nested.s'") != std::string::npos, tree.error().detail);
  }
}

}  // namespace
}  // namespace ckptguard
