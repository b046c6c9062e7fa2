// LoadCheckpoint on real files: every benign corpus file is read bit-exactly
// as its .expect.json says (made by torch 1.13 and numpy), every hostile file
// is refused naming its global, and nothing ever runs.
#define BOOST_TEST_MODULE checkpoint_test
#include <algorithm>
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>

#include "ckptguard/checkpoint.h"
#include "expect_util.h"
#include "print_types.h"
#include "test_util.h"
#include "zip_builder.h"

namespace ckptguard {

namespace {

namespace bdata = boost::unit_test::data;
using nlohmann::json;
using testing::CorpusDir;

using testing::CompareWithExpect;
using testing::Why;

std::string Path(const char* sub, const std::string& name) { return (CorpusDir() / sub / name).string(); }

bool NoPwnedMarkers() {
  for (const auto& entry : std::filesystem::directory_iterator("/tmp")) {
    if (entry.path().filename().string().starts_with("ckptguard-pwned-")) return false;
  }
  return true;
}

std::vector<std::string> BenignWithExpectations() {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(CorpusDir() / "benign")) {
    const std::string name = entry.path().filename().string();
    if (name.ends_with(".expect.json")) out.push_back(name.substr(0, name.size() - 12));
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Files that are not plain weights: refused with a precise error, never a
// wrong value.
bool Refused(const std::string& name) { return name == "whole_module.pt"; }

BOOST_DATA_TEST_CASE(benign_corpus_is_bit_exact, bdata::make(BenignWithExpectations()), name) {
  const json expect = json::parse(testing::ReadFile(Path("benign", name + ".expect.json")));
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("benign", name));
  if (Refused(name)) {
    BOOST_REQUIRE(!ckpt.has_value());
    return;
  }
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), name << ": " << Why(ckpt));
  Result<std::string> described = ckpt->DescribeJson();
  BOOST_REQUIRE_MESSAGE(described.has_value(), Why(described));
  const json got = json::parse(*described);
  if (expect.contains("kind") && expect.at("kind") != "torch-zip-module") {
    BOOST_TEST(got.at("kind") == expect.at("kind"), name);
  }
  CompareWithExpect(got, expect, name);
  BOOST_TEST(ckpt->anomalies().empty());
}

std::string TensorsPath(const std::string& name) { return (testing::DataDir() / "tensors" / name).string(); }

// The tensors of `ckpt` by path.
std::map<std::string, uint32_t> ByPath(const Checkpoint& ckpt) {
  std::map<std::string, uint32_t> out;
  Result<std::vector<NamedTensor>> named = ckpt.NamedTensors();
  BOOST_REQUIRE_MESSAGE(named.has_value(), Why(named));
  for (const NamedTensor& nt : *named) out[nt.path] = nt.tensor;
  return out;
}

BOOST_AUTO_TEST_CASE(exotic_quantized_and_sparse_tensors_load) {
  // The quantized tensor "q" and the sparse COO tensor "sparse" (its layout
  // written as torch.serialization._get_layout("torch.sparse_coo")) load; the
  // sparse one is its components, and has no bytes of its own to digest.
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("benign", "exotic_quantized_sparse.pt"));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  const std::map<std::string, uint32_t> by_path = ByPath(*ckpt);
  BOOST_REQUIRE(by_path.count("sparse") == 1u);
  const uint32_t index = by_path.at("sparse");
  const Tensor& t = ckpt->tensors()[index];
  BOOST_TEST((t.layout == TensorLayout::kSparseCoo));
  BOOST_TEST(t.shape == (std::vector<int64_t>{4, 4}), boost::test_tools::per_element());
  const Tensor& indices = ckpt->tensors()[t.sparse->indices];
  const Tensor& values = ckpt->tensors()[t.sparse->values];
  BOOST_TEST((indices.dtype == DType::kInt64));
  BOOST_TEST(indices.shape.size() == 2u);
  BOOST_TEST(indices.shape[0] == 2);
  BOOST_TEST(values.shape.size() == 1u);
  BOOST_TEST(indices.shape[1] == values.shape[0]);
  BOOST_TEST(ckpt->Sha256Hex(t.sparse->values).has_value());
  Result<std::string> digest = ckpt->Sha256Hex(index);
  BOOST_REQUIRE(!digest.has_value());
  BOOST_TEST(digest.error().code == ErrorCode::kUnsupportedFormat);
  BOOST_TEST(digest.error().detail.find("is a sparse_coo tensor: its data are its component tensors") !=
                 std::string::npos,
             digest.error().detail);
  BOOST_TEST(!ckpt->ContiguousBytes(index).has_value());
  BOOST_TEST(ckpt->StorageBytes(index).empty());
}

BOOST_AUTO_TEST_CASE(dequantize_matches_torch) {
  // quantized_dequantized.pt holds torch 1.13's dequantize() of every tensor
  // of the three quantized files (tests/data/tensors/make_tensors.py),
  // packed quint4x2 and quint2x4 values included.
  Result<Checkpoint> want = LoadCheckpoint(TensorsPath("quantized_dequantized.pt"));
  BOOST_REQUIRE_MESSAGE(want.has_value(), Why(want));
  const std::map<std::string, uint32_t> want_by_path = ByPath(*want);
  size_t compared = 0;
  for (const std::string group : {"per_tensor", "per_channel", "packed"}) {
    Result<Checkpoint> ckpt = LoadCheckpoint(TensorsPath("quantized_" + group + ".pt"));
    BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
    for (const auto& [path, index] : ByPath(*ckpt)) {
      BOOST_TEST_CONTEXT(group << "." << path) {
        BOOST_TEST((ckpt->tensors()[index].quant->scheme != QScheme::kNone));
        Result<std::vector<float>> got = ckpt->Dequantize(index);
        BOOST_REQUIRE_MESSAGE(got.has_value(), Why(got));
        Result<std::vector<uint8_t>> bytes = want->ContiguousBytes(want_by_path.at(group + "." + path));
        BOOST_REQUIRE_MESSAGE(bytes.has_value(), Why(bytes));
        BOOST_REQUIRE(bytes->size() == got->size() * 4);
        std::vector<float> torch_values(got->size());
        if (!torch_values.empty()) std::memcpy(torch_values.data(), bytes->data(), bytes->size());
        float largest = 0;
        for (float w : torch_values) largest = std::max(largest, std::fabs(w));
        for (size_t i = 0; i < got->size(); ++i) {
          // torch's vectorised kernel computes scale * q + (-zero_point *
          // scale) with a fused multiply-add, its scalar tail (q -
          // zero_point) * scale: they differ by a rounding of the product.
          BOOST_TEST(std::fabs((*got)[i] - torch_values[i]) <= 1e-6f * largest,
                     i << ": " << (*got)[i] << " != " << torch_values[i]);
        }
        ++compared;
      }
    }
  }
  BOOST_TEST(compared == 14u);
}

BOOST_AUTO_TEST_CASE(conj_and_neg_bits_are_applied) {
  // torch 2.x's metadata argument (tests/data/tensors/make_tensors.py):
  // conj flips the sign of each imaginary part, neg of every part.
  Result<Checkpoint> ckpt = LoadCheckpoint(TensorsPath("tensor_metadata_v2.pt"));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  const std::map<std::string, uint32_t> by_path = ByPath(*ckpt);
  auto bytes = [&](const char* path) {
    Result<std::vector<uint8_t>> b = ckpt->ContiguousBytes(by_path.at(path));
    BOOST_REQUIRE_MESSAGE(b.has_value(), Why(b));
    return *b;
  };
  const std::vector<uint8_t> plain = bytes("plain");
  BOOST_REQUIRE(plain.size() == 12u * 8u);
  const struct {
    const char* path;
    bool real, imag;
  } cases[] = {{"conj", false, true}, {"neg", true, true}, {"conj_neg", true, false}};
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.path) {
      std::vector<uint8_t> want = plain;
      for (size_t at = 0; at < want.size(); at += 8) {
        if (c.real) want[at + 3] ^= 0x80;
        if (c.imag) want[at + 7] ^= 0x80;
      }
      BOOST_TEST(bytes(c.path) == want, boost::test_tools::per_element());
    }
  }
  BOOST_TEST(ckpt->tensors()[by_path.at("conj")].conj);
  BOOST_TEST(!ckpt->tensors()[by_path.at("empty")].conj);
  BOOST_TEST(ckpt->tensors()[by_path.at("neg_real")].neg);
}

BOOST_AUTO_TEST_CASE(quantize_dynamic_state_dict_loads) {
  Result<Checkpoint> ckpt = LoadCheckpoint(TensorsPath("quantize_dynamic_linear.pt"));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  const std::map<std::string, uint32_t> by_path = ByPath(*ckpt);
  const Tensor& w = ckpt->tensors()[by_path.at("0._packed_params._packed_params.0")];
  BOOST_TEST(std::string(DTypeName(w.dtype)) == "qint8");
  BOOST_TEST((w.quant->scheme == QScheme::kPerTensorAffine));
  BOOST_TEST(w.shape == (std::vector<int64_t>{5, 6}), boost::test_tools::per_element());
  BOOST_TEST(ckpt->tensors()[by_path.at("0._packed_params._packed_params.1")].parameter);
  // A plain tensor is not quantized and Dequantize says so.
  Result<std::vector<float>> plain = ckpt->Dequantize(by_path.at("0.scale"));
  BOOST_REQUIRE(!plain.has_value());
  BOOST_TEST(plain.error().code == ErrorCode::kInvalidArgument);
}

BOOST_AUTO_TEST_CASE(whole_module_is_refused_naming_its_classes) {
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("benign", "whole_module.pt"));
  BOOST_REQUIRE(!ckpt.has_value());
  const Error& e = ckpt.error();
  BOOST_TEST(e.code == ErrorCode::kForbiddenGlobal);
  BOOST_TEST(e.detail.find("'__main__.MLP'") != std::string::npos, e.detail);
  BOOST_TEST(e.detail.find("torch.nn.modules.linear.Linear") != std::string::npos, e.detail);
  // Allowlisted names are not listed as offenders.
  BOOST_TEST(e.detail.find("collections.OrderedDict") == std::string::npos, e.detail);
  BOOST_TEST(e.offset > 0u);
}

struct HostileCase {
  std::string file;
  std::vector<std::string> globals;
  std::string verdict;  // the manifest's: "dangerous" (code runs) or "suspicious" (data, not weights-only)
};
std::ostream& operator<<(std::ostream& os, const HostileCase& c) { return os << c.file; }

std::vector<HostileCase> Manifest() {
  std::vector<HostileCase> out;
  std::istringstream lines(testing::ReadFile(CorpusDir() / "malicious" / "manifest.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const json m = json::parse(line);
    out.push_back({m.at("file"), m.at("globals").get<std::vector<std::string>>(), m.at("verdict")});
  }
  return out;
}

// Weights-only (records off), every hostile file is refused naming its
// global; with declared records (the default) too, except the one that is
// data (a Namespace: "suspicious", no code runs), which loads as a record.
BOOST_DATA_TEST_CASE(hostile_corpus_is_refused_naming_its_global, bdata::make(Manifest()), c) {
  LoadOptions with_records;
  Result<Checkpoint> loaded = LoadCheckpoint(Path("malicious", c.file), with_records);
  BOOST_TEST(NoPwnedMarkers());
  if (c.verdict == "dangerous") {
    BOOST_TEST(!loaded.has_value(), c.file << " loaded with records on");
  } else {
    BOOST_TEST(loaded.has_value(), c.file << ": " << (loaded ? std::string() : loaded.error().ToString()));
  }
  LoadOptions weights_only;
  weights_only.records = false;
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("malicious", c.file), weights_only);
  BOOST_REQUIRE_MESSAGE(!ckpt.has_value(), c.file << " loaded");
  const Error& e = ckpt.error();
  BOOST_TEST(e.code == ErrorCode::kForbiddenGlobal, e.ToString());
  bool named = false;
  for (const std::string& g : c.globals) {
    // __builtin__ and builtins name the same module.
    std::string alt = g.starts_with("builtins.") ? "__builtin__." + g.substr(9) : g;
    named = named || e.detail.find(g) != std::string::npos || e.detail.find(alt) != std::string::npos;
  }
  BOOST_TEST(named, e.ToString());
  BOOST_TEST(e.offset < std::filesystem::file_size(Path("malicious", c.file)));
  BOOST_TEST(NoPwnedMarkers());
}

BOOST_AUTO_TEST_CASE(full_checkpoint_api) {
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("benign", "mlp_full_checkpoint.pt"));
  BOOST_REQUIRE(ckpt.has_value());
  BOOST_TEST(ckpt->format() == ContainerFormat::kTorchZip);
  BOOST_TEST((ckpt->GetInt("epoch") == std::optional<int64_t>(3)));
  BOOST_TEST(!ckpt->GetInt("model").has_value());
  BOOST_TEST(!ckpt->GetInt("nope").has_value());
  BOOST_TEST((ckpt->GetFloat("optimizer.param_groups.0.lr") == std::optional<double>(0.001)));
  BOOST_TEST((ckpt->GetFloat("epoch") == std::optional<double>(3.0)));
  BOOST_TEST(!ckpt->GetString("epoch").has_value());

  Result<std::vector<NamedTensor>> model = ckpt->StateDict("model");
  BOOST_REQUIRE(model.has_value());
  std::vector<std::string> keys;
  for (const NamedTensor& t : *model) keys.push_back(t.path);
  BOOST_TEST((keys == std::vector<std::string>{"hidden.weight", "hidden.bias", "output.weight", "output.bias"}));
  BOOST_TEST(ckpt->StateDict("model.").has_value());  // a trailing dot is accepted
  Result<std::vector<NamedTensor>> missing = ckpt->StateDict("modle");
  BOOST_REQUIRE(!missing.has_value());
  BOOST_TEST(missing.error().code == ErrorCode::kInvalidArgument);
  BOOST_TEST(missing.error().detail.find("modle") != std::string::npos);

  // Find resolves keys that contain dots and nested int keys.
  BOOST_TEST(ckpt->Find("model.hidden.weight").has_value());
  BOOST_TEST(ckpt->Find("optimizer.state.0.exp_avg").has_value());
  BOOST_TEST(!ckpt->Find("optimizer.state.9").has_value());

  // Zero-copy: a stored record's tensor views the mapped file.
  const Tensor& w = ckpt->tensors()[(*model)[0].tensor];
  BOOST_TEST((w.shape == std::vector<int64_t>{256, 20}));
  const Storage& st = ckpt->storages()[w.storage];
  BOOST_TEST(!st.inflated);
  BOOST_TEST(st.file_offset > 0u);
  BOOST_TEST(ckpt->StorageBytes((*model)[0].tensor).size() == 256u * 20u * 4u);
  Result<std::vector<uint8_t>> bytes = ckpt->ContiguousBytes((*model)[0].tensor);
  BOOST_REQUIRE(bytes.has_value());
  BOOST_TEST(bytes->size() == 256u * 20u * 4u);
  BOOST_TEST(std::memcmp(bytes->data(), st.bytes.data(), bytes->size()) == 0);
}

BOOST_AUTO_TEST_CASE(shared_storages_stay_shared_and_views_copy_in_c_order) {
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("benign", "views_and_sharing.pt"));
  BOOST_REQUIRE(ckpt.has_value());
  Result<std::vector<NamedTensor>> named = ckpt->NamedTensors();
  BOOST_REQUIRE(named.has_value());
  std::map<std::string, uint32_t> by_path;
  for (const NamedTensor& t : *named) by_path[t.path] = t.tensor;
  const Tensor& base = ckpt->tensors()[by_path.at("base")];
  const Tensor& transposed = ckpt->tensors()[by_path.at("transposed")];
  const Tensor& col = ckpt->tensors()[by_path.at("col_view")];
  BOOST_TEST(base.storage == transposed.storage);
  BOOST_TEST(base.storage == col.storage);
  BOOST_TEST(ckpt->storages().size() < named->size());
  // col_view = base[:, 3]: copying it gathers every 8th float from offset 3.
  Result<std::vector<uint8_t>> col_bytes = ckpt->ContiguousBytes(by_path.at("col_view"));
  BOOST_REQUIRE(col_bytes.has_value());
  BOOST_REQUIRE(col_bytes->size() == 6u * 4u);
  const uint8_t* data = ckpt->storages()[base.storage].bytes.data();
  for (int i = 0; i < 6; ++i) BOOST_TEST(std::memcmp(col_bytes->data() + 4 * i, data + 4 * (3 + 8 * i), 4) == 0);
}

BOOST_AUTO_TEST_CASE(big_endian_records_are_swapped_on_copy) {
  Result<Checkpoint> little = LoadCheckpoint(Path("benign", "dtypes.pt"));
  Result<Checkpoint> big = LoadCheckpoint(Path("benign", "torch2_bigendian_dtypes.pt"));
  BOOST_REQUIRE(little.has_value());
  BOOST_REQUIRE(big.has_value());
  const std::vector<NamedTensor> a = *little->NamedTensors();
  const std::vector<NamedTensor> b = *big->NamedTensors();
  BOOST_REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    BOOST_TEST_CONTEXT(a[i].path) {
      BOOST_TEST((*little->ContiguousBytes(a[i].tensor) == *big->ContiguousBytes(b[i].tensor)));
      BOOST_TEST(big->storages()[big->tensors()[b[i].tensor].storage].big_endian);
    }
  }
}

BOOST_AUTO_TEST_CASE(scalars_of_every_kind) {
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("benign", "containers.pt"));
  BOOST_REQUIRE(ckpt.has_value());
  BOOST_TEST((ckpt->GetInt("int_neg") == std::optional<int64_t>(-123456)));
  BOOST_TEST(!ckpt->GetInt("int_big").has_value());  // beyond int64: see the value tree
  BOOST_TEST((ckpt->GetString("text") == std::optional<std::string>("h\u00e9llo w\u00f6rld \u2713")));
  BOOST_TEST(std::isnan(*ckpt->GetFloat("nan")));
  BOOST_TEST((ckpt->GetInt("int_keys.1").has_value() == false));  // a str value
  BOOST_TEST((ckpt->GetString("int_keys.1") == std::optional<std::string>("one")));
}

BOOST_AUTO_TEST_CASE(torchscript_weights_are_read_and_the_code_is_not_run) {
  Result<Checkpoint> ckpt = LoadCheckpoint(Path("benign", "mlp_torchscript.pt"));
  BOOST_REQUIRE(ckpt.has_value());
  BOOST_TEST(ckpt->format() == ContainerFormat::kTorchScript);
  BOOST_REQUIRE(ckpt->notes().size() == 1u);
  BOOST_TEST(ckpt->notes()[0].find("was not run") != std::string::npos);
}

// Hostile containers built byte by byte: the loader fails closed.
BOOST_AUTO_TEST_CASE(record_size_must_match_the_persistent_id) {
  testing::ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].data = std::string(4, '\x01');  // data.pkl declares 2 floats
  const std::string bytes = zip.Build();
  // The VM checks the record it resolves: a short record never becomes a view.
  Result<Checkpoint> loaded = LoadCheckpointBytes(AsBytes(bytes));
  BOOST_REQUIRE(!loaded.has_value());
  BOOST_TEST(loaded.error().code == ErrorCode::kMalformed);
  BOOST_TEST(loaded.error().where == "archive/data.pkl");
  BOOST_TEST(loaded.error().detail.find("record archive/data/0 holds 4 bytes; data.pkl declares 2 x 4") !=
                 std::string::npos,
             Why(loaded));
  // With the container's full checks the same file fails on the anomaly.
  LoadOptions full;
  full.container = ContainerLimits{};
  Result<Checkpoint> checked = LoadCheckpointBytes(AsBytes(bytes), full);
  BOOST_REQUIRE(!checked.has_value());
  BOOST_TEST(checked.error().detail.find("torch.record_size_mismatch") != std::string::npos, Why(checked));
}

BOOST_AUTO_TEST_CASE(anomalies_fail_the_load_unless_allowed) {
  testing::ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[0].local_name = "archive/data.txt";
  const std::string bytes = zip.Build();
  Result<Checkpoint> strict = LoadCheckpointBytes(AsBytes(bytes));
  BOOST_REQUIRE(!strict.has_value());
  BOOST_TEST(strict.error().detail.find("zip.local_name_mismatch") != std::string::npos, Why(strict));
  BOOST_TEST(strict.error().where == "archive/data.pkl");
  BOOST_TEST(strict.error().offset == 0u);
  LoadOptions lax;
  lax.allow_anomalies = true;
  Result<Checkpoint> loaded = LoadCheckpointBytes(AsBytes(bytes), lax);
  BOOST_REQUIRE_MESSAGE(loaded.has_value(), Why(loaded));
  BOOST_TEST(loaded->anomalies().size() == 1u);
  BOOST_TEST(loaded->tensors().size() == 1u);
}

// --- data.pkl run beside the container (LoadOptions::threads) ---------------

LoadOptions Beside(LoadOptions options = {}) {
  options.threads = 2;
  options.run_beside_container = true;
  options.parallel_min_bytes = 0;  // every zip, however small
  return options;
}

// Ahead: the default way for a large zip, for every zip: data.pkl's memo
// reads scanned on another thread while the container opens.
LoadOptions Ahead(LoadOptions options = {}) {
  options.threads = 2;
  options.run_beside_container = false;
  options.parallel_min_bytes = 0;
  return options;
}

LoadOptions Alone(LoadOptions options = {}) {
  options.threads = 1;
  return options;
}

// Outcome: what a load gives, as text: its error, or every value, tensor
// and digest.
std::string Outcome(const Result<Checkpoint>& ckpt) {
  if (!ckpt) return "error: " + ckpt.error().ToString();
  Result<std::string> json = ckpt->DescribeJson("", true);
  return json ? *json : "describe error: " + json.error().ToString();
}

BOOST_AUTO_TEST_CASE(a_load_beside_the_container_gives_the_same_checkpoint) {
  std::vector<std::filesystem::path> files = testing::CorpusModelFiles();
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(CKPTGUARD_SOURCE_DIR) / "examples")) files.push_back(entry.path());
  size_t beside = 0;
  size_t ahead = 0;
  for (const auto& file : files) {
    Result<Checkpoint> alone = LoadCheckpoint(file.string(), Alone());
    Result<Checkpoint> both = LoadCheckpoint(file.string(), Beside());
    Result<Checkpoint> scanned = LoadCheckpoint(file.string(), Ahead());
    BOOST_TEST(Outcome(alone) == Outcome(both), file.filename().string());
    BOOST_TEST(Outcome(alone) == Outcome(scanned), file.filename().string());
    BOOST_TEST(!(alone && (alone->ran_beside_container() || alone->scanned_ahead())));
    BOOST_TEST(!(scanned && scanned->ran_beside_container()));
    if (both && both->ran_beside_container()) ++beside;
    if (scanned && scanned->scanned_ahead()) ++ahead;
    // A plain torch.save archive always keeps the run made beside.
    if (both && both->format() == ContainerFormat::kTorchZip && both->anomalies().empty() &&
        file.parent_path().filename() == "benign") {
      const bool stored = std::all_of(both->container().entries.begin(), both->container().entries.end(),
                                      [](const ContainerEntry& e) { return e.zip.method == kZipMethodStored; });
      BOOST_TEST(both->ran_beside_container() == stored, file.filename().string());
      BOOST_REQUIRE(scanned.has_value());
      BOOST_TEST(scanned->scanned_ahead() == stored, file.filename().string());
    }
  }
  BOOST_TEST(beside >= 10u);
  BOOST_TEST(ahead >= 10u);
}

BOOST_AUTO_TEST_CASE(a_run_beside_is_dropped_when_the_container_reads_otherwise) {
  // The local header names another entry: an anomaly the directory alone
  // does not see. Allowed, the load reads what torch reads, run again.
  testing::ZipBuilder renamed{testing::MinimalTorchZip()};
  renamed.items[0].local_name = "archive/data.txt";
  LoadOptions lax;
  lax.allow_anomalies = true;
  const std::string bytes = renamed.Build();
  Result<Checkpoint> alone = LoadCheckpointBytes(AsBytes(bytes), Alone(lax));
  Result<Checkpoint> both = LoadCheckpointBytes(AsBytes(bytes), Beside(lax));
  BOOST_REQUIRE_MESSAGE(both.has_value(), Why(both));
  BOOST_TEST(!both->ran_beside_container());
  BOOST_TEST(Outcome(alone) == Outcome(both));
  // Not allowed, the anomaly fails it as before.
  Result<Checkpoint> strict = LoadCheckpointBytes(AsBytes(bytes), Beside());
  BOOST_REQUIRE(!strict.has_value());
  BOOST_TEST(strict.error().detail.find("zip.local_name_mismatch") != std::string::npos, Why(strict));

  // The same archive, plain: kept.
  const std::string plain = testing::ZipBuilder{testing::MinimalTorchZip()}.Build();
  Result<Checkpoint> kept = LoadCheckpointBytes(AsBytes(plain), Beside());
  BOOST_REQUIRE_MESSAGE(kept.has_value(), Why(kept));
  BOOST_TEST(kept->ran_beside_container());
  BOOST_TEST(Outcome(kept) == Outcome(LoadCheckpointBytes(AsBytes(plain), Alone())));

  // data.pkl twice in the directory: torch reads the later one, and so
  // does the run (whichever way it is made).
  testing::ZipBuilder twice{testing::MinimalTorchZip()};
  twice.items.push_back(twice.items[0]);
  const std::string doubled = twice.Build();
  BOOST_TEST(Outcome(LoadCheckpointBytes(AsBytes(doubled), Beside(lax))) ==
             Outcome(LoadCheckpointBytes(AsBytes(doubled), Alone(lax))));
}

BOOST_AUTO_TEST_CASE(zipfile_reading_made_ahead_loads_as_one_made_alone) {
  // The second thread compares Python's zipfile's reading with torch's
  // reader's for the container (ContainerAhead): where they part (a name
  // zipfile cuts at its NUL, bytes prepended), the load is refused, and
  // allowed it reads, exactly as a load that made the reading itself.
  testing::ZipBuilder cut{testing::MinimalTorchZip()};
  cut.items[2].name = std::string("archive/version\0x", 17);
  testing::ZipBuilder leading{testing::MinimalTorchZip()};
  leading.leading = "JUNKJUNK";
  for (const std::string& bytes : {cut.Build(), leading.Build(), testing::ZipBuilder{testing::MinimalTorchZip()}.Build()}) {
    LoadOptions lax;
    lax.allow_anomalies = true;
    for (const LoadOptions& base : {LoadOptions{}, lax}) {
      const std::string alone = Outcome(LoadCheckpointBytes(AsBytes(bytes), Alone(base)));
      BOOST_TEST(Outcome(LoadCheckpointBytes(AsBytes(bytes), Ahead(base))) == alone);
      BOOST_TEST(Outcome(LoadCheckpointBytes(AsBytes(bytes), Beside(base))) == alone);
    }
  }
  Result<Checkpoint> refused = LoadCheckpointBytes(AsBytes(cut.Build()), Ahead());
  BOOST_REQUIRE(!refused.has_value());
  BOOST_TEST(refused.error().detail.find("and 1 more") != std::string::npos, Why(refused));  // zip.zipfile_view
}

BOOST_AUTO_TEST_CASE(budgets_end_a_load_beside_the_container_as_they_end_one_alone) {
  // Both stages charge one budget: with the run beside, its charges are
  // added to the container's afterwards, and a total past a limit makes the
  // load run again alone, to fail where it fails alone.
  for (const char* name : {"convnet_sgd.ckpt", "mlp_full_checkpoint.pt"}) {
    const std::string path = Path("benign", name);
    Result<Checkpoint> full = LoadCheckpoint(path, Alone());
    BOOST_REQUIRE_MESSAGE(full.has_value(), Why(full));
    for (BudgetKind kind : {BudgetKind::kReadBytes, BudgetKind::kOpcodes, BudgetKind::kValues, BudgetKind::kMemoSlots,
                            BudgetKind::kNesting}) {
      const uint64_t used = full->BudgetUsed(kind);
      for (uint64_t limit : {used / 3, used / 2, used - 1, used, used + 1, 2 * used}) {
        LoadOptions options;
        options.budget.Set(kind, limit);
        const std::string a = Outcome(LoadCheckpoint(path, Alone(options)));
        const std::string b = Outcome(LoadCheckpoint(path, Beside(options)));
        const std::string c = Outcome(LoadCheckpoint(path, Ahead(options)));
        BOOST_TEST(a == b, name << " " << BudgetLimitName(kind) << " " << limit);
        BOOST_TEST(a == c, name << " " << BudgetLimitName(kind) << " " << limit << " (scanned ahead)");
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(crcs_are_left_to_verify_unless_asked) {
  testing::ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].crc = 0x12345678;
  const std::string bytes = zip.Build();
  // Like torch, a load does not read records to check their CRCs...
  Result<Checkpoint> fast = LoadCheckpointBytes(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(fast.has_value(), Why(fast));
  BOOST_TEST(!fast->container().entries[1].crc_ok.has_value());
  // ...and with full container checks the mismatch is an anomaly.
  LoadOptions full;
  full.container = ContainerLimits{};
  Result<Checkpoint> checked = LoadCheckpointBytes(AsBytes(bytes), full);
  BOOST_REQUIRE(!checked.has_value());
  BOOST_TEST(checked.error().detail.find("zip.crc_mismatch") != std::string::npos, Why(checked));
  BOOST_TEST(checked.error().where == "archive/data/0");
}

BOOST_AUTO_TEST_CASE(missing_record_is_named) {
  testing::ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items.erase(zip.items.begin() + 1);
  const std::string bytes = zip.Build();
  LoadOptions lax;
  lax.allow_anomalies = true;
  Result<Checkpoint> loaded = LoadCheckpointBytes(AsBytes(bytes), lax);
  BOOST_REQUIRE(!loaded.has_value());
  BOOST_TEST(loaded.error().detail.find("archive/data/0") != std::string::npos, Why(loaded));
  BOOST_TEST(loaded.error().where == "archive/data.pkl");
}

BOOST_AUTO_TEST_CASE(deflated_records_are_inflated_once_and_owned) {
  testing::ZipBuilder zip{testing::MinimalTorchZip()};
  for (auto& item : zip.items) item.deflate = true;
  const std::string bytes = zip.Build();
  Result<Checkpoint> ckpt = LoadCheckpointBytes(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(ckpt.has_value(), Why(ckpt));
  BOOST_REQUIRE(ckpt->storages().size() == 1u);
  BOOST_TEST(ckpt->storages()[0].inflated);
  // The record was inflated once, by the container layer, and the view is of
  // that buffer.
  const ContainerEntry& record = ckpt->container().entries[1];
  BOOST_REQUIRE(record.inflated.has_value());
  BOOST_TEST((record.inflated->data() == ckpt->storages()[0].bytes.data()));
  BOOST_TEST(!record.crc_ok.has_value());  // the loader computes no CRCs
  BOOST_TEST((*ckpt->ContiguousBytes(0) == std::vector<uint8_t>(8, 1)));
}

BOOST_AUTO_TEST_CASE(unreadable_inputs_fail_with_the_reason) {
  Result<Checkpoint> missing = LoadCheckpoint("/nonexistent/model.pt");
  BOOST_REQUIRE(!missing.has_value());
  BOOST_TEST(missing.error().code == ErrorCode::kIo);
  const std::string text = "just some text, not a model";
  Result<Checkpoint> unknown = LoadCheckpointBytes(AsBytes(text));
  BOOST_REQUIRE(!unknown.has_value());
  BOOST_TEST(unknown.error().code == ErrorCode::kUnsupportedFormat);
  BOOST_TEST(unknown.error().detail.find("not a model file") != std::string::npos, Why(unknown));
}

// ManyTensorZip: a torch zip of a state dict of `n` one-element float
// tensors t0, t1, ..., written as torch.save writes them (protocol 2).
std::string ManyTensorZip(size_t n) {
  auto unicode = [](const std::string& text) {
    std::string out = "X";
    for (int i = 0; i < 4; ++i) out += static_cast<char>((text.size() >> (8 * i)) & 0xff);
    return out + text;
  };
  std::string pkl = "\x80\x02}(";  // PROTO 2, EMPTY_DICT, MARK
  std::vector<testing::ZipItem> items;
  for (size_t i = 0; i < n; ++i) {
    const std::string key = std::to_string(i);
    using namespace std::string_literals;
    pkl += unicode("t" + key) + "ctorch._utils\n_rebuild_tensor_v2\n((" + unicode("storage") + "ctorch\nFloatStorage\n" +
           unicode(key) + unicode("cpu") + "K\x01" "tQ" "K\x00" "K\x01\x85" "K\x01\x85" "\x89"s +
           "ccollections\nOrderedDict\n)RtR";
    items.push_back(testing::ZipItem{"archive/data/" + key, std::string(4, '\0')});
  }
  pkl += "u.";
  items.insert(items.begin(), testing::ZipItem{"archive/data.pkl", pkl});
  items.push_back(testing::ZipItem{"archive/version", "3\n"});
  return testing::BuildZip(items);
}

BOOST_AUTO_TEST_CASE(a_dropped_checkpoints_arrays_serve_the_next_load_and_no_longer) {
  // BulkReuse: the large arrays of a checkpoint, when it is dropped, are
  // kept for the next load, which takes what it can and gives back the rest
  // when it returns; the loads are the same either way.
  const std::string bytes = ManyTensorZip(12'000);
  TrimBulkCache();
  Result<Checkpoint> first = LoadCheckpointBytes(AsBytes(bytes));
  BOOST_REQUIRE_MESSAGE(first.has_value(), Why(first));
  BOOST_TEST(first->tensors().size() == 12'000u);
  BOOST_TEST(BulkCacheBytes() == 0u);
  const std::string outcome = Outcome(first);
  first = std::unexpected(Error{});  // drops the checkpoint
  if (BulkBlocksAreMapped()) BOOST_TEST(BulkCacheBytes() >= kBulkMinBytes);  // its tensor table at least
  Result<Checkpoint> second = LoadCheckpointBytes(AsBytes(bytes));
  BOOST_TEST(Outcome(second) == outcome);
  BOOST_TEST(BulkCacheBytes() == 0u);
}

BOOST_AUTO_TEST_CASE(no_payload_ever_ran) { BOOST_TEST(NoPwnedMarkers()); }

}  // namespace
}  // namespace ckptguard
