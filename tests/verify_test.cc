// verify and latest: whole files pass, every way of being torn fails with
// the reason, and `latest` picks the checkpoint a resumed run should load.
#define BOOST_TEST_MODULE verify_test
#include <sys/stat.h>

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "ckptguard/latest.h"
#include "ckptguard/sharded.h"
#include "ckptguard/verify.h"
#include "test_util.h"
#include "zip_builder.h"

namespace ckptguard {
namespace {

using testing::CorpusDir;
using testing::ShellQuote;
using testing::TempDir;
namespace fs = std::filesystem;

std::string Problems(const VerifyReport& r) {
  std::string out;
  for (const VerifyProblem& p : r.problems) out += "[" + p.kind + "] " + p.detail + "; ";
  return out;
}

BOOST_AUTO_TEST_CASE(every_benign_weights_file_verifies) {
  for (const char* name : {"mlp.params", "mlp_full_checkpoint.pt", "mlp_legacy.pt", "mlp_full_legacy.pth",
                           "convnet_sgd.ckpt", "dtypes.pt", "views_and_sharing.pt", "parameters.pt", "containers.pt",
                           "torch2_layout_checkpoint.pt", "torch2_bigendian_dtypes.pt", "mlp.safetensors",
                           "arrays.npz", "arrays_compressed.npz", "array_f32.npy", "mlp_torchscript.pt"}) {
    const VerifyReport r = VerifyCheckpoint((CorpusDir() / "benign" / name).string());
    BOOST_TEST(r.ok(), name << ": " << Problems(r));
    BOOST_TEST(r.num_tensors > 0u, name);
  }
  const VerifyReport full = VerifyCheckpoint((CorpusDir() / "benign" / "mlp_full_checkpoint.pt").string());
  BOOST_TEST(!full.progress.step.has_value());
  BOOST_TEST((full.progress.epoch == std::optional<double>(3)));
  BOOST_TEST(full.progress.epoch_from == "epoch");
}

BOOST_AUTO_TEST_CASE(every_truncation_of_a_checkpoint_is_caught) {
  const std::string bytes = testing::ReadFile(CorpusDir() / "benign" / "mlp_full_checkpoint.pt");
  TempDir dir;
  // Cut at many points, from the first bytes to one byte short.
  size_t checked = 0;
  for (size_t cut = 1; cut < bytes.size(); cut += std::max<size_t>(1, bytes.size() / 97)) {
    const std::string path = dir.Write("cut.pt", bytes.substr(0, cut));
    const VerifyReport r = VerifyCheckpoint(path);
    BOOST_TEST(!r.ok(), "cut at " << cut << " verified");
    ++checked;
  }
  BOOST_TEST(!VerifyCheckpoint(dir.Write("cut.pt", bytes.substr(0, bytes.size() - 1))).ok());
  BOOST_TEST(checked > 90u);
}

BOOST_AUTO_TEST_CASE(flipped_bytes_in_a_record_fail_the_crc) {
  std::string bytes = testing::ReadFile(CorpusDir() / "benign" / "mlp.params");
  TempDir dir;
  // A byte in the middle of the first record (tensor data: torch would load it silently).
  bytes[2000] = static_cast<char>(bytes[2000] ^ 0x40);
  const VerifyReport r = VerifyCheckpoint(dir.Write("flip.pt", bytes));
  BOOST_REQUIRE(!r.ok());
  BOOST_TEST(r.problems[0].kind == "zip.crc_mismatch", Problems(r));
  BOOST_TEST(r.problems[0].entry == "mlp/data/0");
}

BOOST_AUTO_TEST_CASE(legacy_and_safetensors_truncations) {
  TempDir dir;
  for (const char* name : {"mlp_legacy.pt", "mlp.safetensors"}) {
    const std::string bytes = testing::ReadFile(CorpusDir() / "benign" / name);
    for (size_t cut : {size_t{10}, bytes.size() / 2, bytes.size() - 4}) {
      BOOST_TEST(!VerifyCheckpoint(dir.Write("x", bytes.substr(0, cut))).ok(), name << " cut at " << cut);
    }
  }
}

BOOST_AUTO_TEST_CASE(hostile_and_unreadable_files_fail_with_the_reason) {
  const VerifyReport hostile = VerifyCheckpoint((CorpusDir() / "malicious" / "torch_zip_injected.pt").string());
  BOOST_REQUIRE(!hostile.ok());
  BOOST_TEST(Problems(hostile).find("os.system") != std::string::npos, Problems(hostile));
  const VerifyReport missing = VerifyCheckpoint("/nonexistent/x.pt");
  BOOST_REQUIRE(!missing.ok());
  BOOST_TEST(missing.problems[0].kind == "io");
}

// SetMtime makes `path` look written `seconds_ago` seconds ago.
void SetMtime(const fs::path& path, int seconds_ago) {
  fs::last_write_time(path, fs::file_time_type::clock::now() - std::chrono::seconds(seconds_ago));
}

BOOST_AUTO_TEST_CASE(latest_skips_torn_partial_and_hostile_files) {
  TempDir dir;
  const std::string good = testing::ReadFile(CorpusDir() / "benign" / "mlp_full_checkpoint.pt");  // epoch 3
  const std::string older = testing::ReadFile(CorpusDir() / "benign" / "mlp.params");            // no epoch
  // The newest files are all broken: a torn write, a partial temp file, a
  // hostile file, a file with a flipped byte; then the good one; then older.
  const fs::path torn = dir.Write("epoch_0009.pt", good.substr(0, good.size() / 2));
  const fs::path partial = dir.Write(".epoch_0010.pt.tmp-abc123", good.substr(0, 1000));
  const fs::path hostile = dir.Write("epoch_0011.pt", testing::ReadFile(CorpusDir() / "malicious" / "torch_zip_injected.pt"));
  std::string flipped = good;
  flipped[good.size() / 3] = static_cast<char>(flipped[good.size() / 3] ^ 1);
  const fs::path corrupt = dir.Write("epoch_0012.pt", flipped);
  const fs::path chosen = dir.Write("epoch_0003.pt", good);
  const fs::path old = dir.Write("weights_old.pt", older);
  const fs::path notes = dir.Write("notes.txt", "lr 1e-3\n");
  SetMtime(torn, 10);
  SetMtime(partial, 5);
  SetMtime(hostile, 20);
  SetMtime(corrupt, 30);
  SetMtime(chosen, 100);
  SetMtime(old, 50);  // newer than the chosen one, but has no progress value

  Result<LatestResult> r = FindLatest(dir.path);
  BOOST_REQUIRE(r.has_value());
  BOOST_REQUIRE(r->chosen.has_value());
  BOOST_TEST(r->chosen->path.filename() == "epoch_0003.pt");
  BOOST_TEST(r->order == "epoch");
  std::set<std::string> skipped;
  for (const LatestCandidate& c : r->skipped) {
    skipped.insert(c.path.filename().string());
    BOOST_TEST(!c.report.ok());
  }
  // Every broken file is listed, the torn one too although its progress
  // could not be read (it ranks below the chosen one).
  BOOST_TEST(skipped == (std::set<std::string>{"epoch_0009.pt", ".epoch_0010.pt.tmp-abc123", "epoch_0011.pt",
                                               "epoch_0012.pt"}));
  // After the chosen one in the order: not read whole, listed as older.
  BOOST_REQUIRE(r->older.size() == 1u);
  BOOST_TEST(r->older[0].path.filename() == "weights_old.pt");
  BOOST_TEST(r->older[0].report.problems.empty());
  BOOST_TEST(r->not_models.size() == 1u);  // notes.txt
  BOOST_TEST(r->not_models[0].filename() == "notes.txt");

  // The CLI prints the chosen path alone on stdout; the reasons go to stderr.
  const auto cli = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest " + ShellQuote(dir.path.string()) + " 2>/dev/null");
  BOOST_TEST(cli.exit_code == 0);
  BOOST_TEST(cli.out == chosen.string() + "\n");
  const auto both = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest " + ShellQuote(dir.path.string()) + " 2>&1");
  BOOST_TEST(both.out.find("BROKEN") != std::string::npos, both.out);
  BOOST_TEST(both.out.find("skipped " + corrupt.string()) != std::string::npos, both.out);
  BOOST_TEST(both.out.find("skipped " + torn.string()) != std::string::npos, both.out);
  BOOST_TEST(both.out.find("1 older candidate not verified") != std::string::npos, both.out);
  // -0 ends the path with NUL; --json is one document.
  const auto nul = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest -0 " + ShellQuote(dir.path.string()) + " 2>/dev/null");
  BOOST_TEST(nul.out == chosen.string() + std::string(1, '\0'));
  const auto js = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest --json " + ShellQuote(dir.path.string()) + " 2>/dev/null");
  const nlohmann::json doc = nlohmann::json::parse(js.out);
  BOOST_TEST(doc.at("chosen").at("path") == chosen.string());
  BOOST_TEST(doc.at("chosen").at("progress").at("epoch") == 3);
  BOOST_TEST(doc.at("skipped").size() == 4u);
  BOOST_TEST(doc.at("older").size() == 1u);
  BOOST_TEST(doc.at("order") == "epoch");
}

// MakeTrainerFolder writes a Hugging Face Trainer checkpoint folder: weights,
// optimizer state, RNG state, trainer_state.json, training_args.bin.
fs::path MakeTrainerFolder(const fs::path& parent, int step, double epoch) {
  const fs::path folder = parent / ("checkpoint-" + std::to_string(step));
  fs::create_directories(folder);
  fs::copy_file(CorpusDir() / "benign" / "mlp.params", folder / "pytorch_model.bin");
  fs::copy_file(CorpusDir() / "benign" / "mlp_full_checkpoint.pt", folder / "optimizer.pt");
  fs::copy_file(CorpusDir() / "benign" / "containers.pt", folder / "rng_state.pth");
  // The Trainer's pickled arguments (a class the loader refuses): for the
  // record only, never loaded on resume, so never a reason to skip.
  fs::copy_file(CorpusDir() / "malicious" / "torch_zip_injected.pt", folder / "training_args.bin");
  std::ofstream(folder / "trainer_state.json")
      << nlohmann::json{{"global_step", step}, {"epoch", epoch}, {"log_history", nlohmann::json::array()}}.dump();
  return folder;
}

BOOST_AUTO_TEST_CASE(latest_takes_trainer_folders_as_one_checkpoint) {
  TempDir dir;
  const fs::path f500 = MakeTrainerFolder(dir.path, 500, 1.0);
  const fs::path f1000 = MakeTrainerFolder(dir.path, 1000, 2.0);
  const fs::path f1500 = MakeTrainerFolder(dir.path, 1500, 2.5);
  // The newest folder's optimizer state is torn (the run died mid-save): the
  // whole folder is skipped, although its weights are fine.
  const std::string opt = testing::ReadFile(f1500 / "optimizer.pt");
  std::ofstream(f1500 / "optimizer.pt", std::ios::binary | std::ios::trunc) << opt.substr(0, opt.size() / 2);
  fs::create_directories(dir.path / "runs");  // TensorBoard's folder: no checkpoint
  Result<LatestResult> r = FindLatest(dir.path);
  BOOST_REQUIRE(r.has_value());
  BOOST_REQUIRE(r->chosen.has_value());
  BOOST_TEST(r->chosen->path == f1000);
  BOOST_TEST(r->chosen->folder);
  BOOST_TEST(r->order == "step");
  BOOST_TEST((r->chosen->progress.step == std::optional<int64_t>(1000)));
  BOOST_TEST(r->chosen->progress.step_from == "trainer_state.json");
  BOOST_TEST((r->chosen->progress.epoch == std::optional<double>(2.0)));
  BOOST_TEST((r->chosen->files == std::vector<std::string>{"optimizer.pt", "pytorch_model.bin", "rng_state.pth"}));
  BOOST_TEST(r->chosen->report.num_tensors > 4u);
  BOOST_REQUIRE(r->chosen->notes.size() == 1u);
  BOOST_TEST(r->chosen->notes[0].starts_with("training_args.bin"));
  BOOST_REQUIRE(r->skipped.size() == 1u);
  BOOST_TEST(r->skipped[0].path == f1500);
  BOOST_REQUIRE(!r->skipped[0].report.problems.empty());
  BOOST_TEST(r->skipped[0].report.problems[0].entry.starts_with("optimizer.pt"));
  BOOST_REQUIRE(r->older.size() == 1u);
  BOOST_TEST(r->older[0].path == f500);
  BOOST_REQUIRE(r->not_models.size() == 1u);
  BOOST_TEST(r->not_models[0].filename() == "runs");
  const auto cli = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest " + ShellQuote(dir.path.string()) + " 2>/dev/null");
  BOOST_TEST(cli.exit_code == 0);
  BOOST_TEST(cli.out == f1000.string() + "\n");
}

BOOST_AUTO_TEST_CASE(latest_checks_what_a_trainer_folder_needs) {
  TempDir dir;
  // Each folder has one fault; the oldest one is whole.
  const fs::path whole = MakeTrainerFolder(dir.path, 100, 1.0);
  const fs::path no_weights = MakeTrainerFolder(dir.path, 200, 2.0);
  fs::remove(no_weights / "pytorch_model.bin");
  const fs::path bad_state = MakeTrainerFolder(dir.path, 300, 3.0);
  std::ofstream(bad_state / "trainer_state.json", std::ios::trunc) << "{\"global_step\": 300, ";
  const fs::path missing_shard = MakeTrainerFolder(dir.path, 400, 4.0);
  std::ofstream(missing_shard / "pytorch_model.bin.index.json")
      << R"({"metadata": {}, "weight_map": {"a": "pytorch_model-00001-of-00002.bin", "b": "pytorch_model.bin"}})";
  const fs::path escaping_shard = MakeTrainerFolder(dir.path, 500, 5.0);
  std::ofstream(escaping_shard / "model.safetensors.index.json")
      << R"({"weight_map": {"a": "../checkpoint-100/pytorch_model.bin"}})";
  // A FIFO where trainer_state.json should be: never opened, never blocks.
  const fs::path fifo_state = MakeTrainerFolder(dir.path, 600, 6.0);
  fs::remove(fifo_state / "trainer_state.json");
  BOOST_REQUIRE(::mkfifo((fifo_state / "trainer_state.json").c_str(), 0600) == 0);
  Result<LatestResult> r = FindLatest(dir.path);
  BOOST_REQUIRE(r.has_value());
  BOOST_REQUIRE(r->chosen.has_value());
  BOOST_TEST(r->chosen->path == whole);
  std::map<std::string, std::string> why;
  for (const LatestCandidate& c : r->skipped) {
    std::string all;
    for (const VerifyProblem& p : c.report.problems) all += "[" + p.kind + "] " + p.entry + ": " + p.detail + "; ";
    why[c.path.filename().string()] = all;
  }
  BOOST_REQUIRE(why.size() == 5u);
  BOOST_TEST(why["checkpoint-600"].find("not a regular file") != std::string::npos, why["checkpoint-600"]);
  BOOST_TEST(why["checkpoint-200"].find("no model weights") != std::string::npos, why["checkpoint-200"]);
  BOOST_TEST(why["checkpoint-300"].find("trainer_state.json") != std::string::npos, why["checkpoint-300"]);
  BOOST_TEST(why["checkpoint-300"].find("not valid JSON") != std::string::npos, why["checkpoint-300"]);
  BOOST_TEST(why["checkpoint-400"].find("shard pytorch_model-00001-of-00002.bin is missing") != std::string::npos,
             why["checkpoint-400"]);
  BOOST_TEST(why["checkpoint-400"].find("tensor \"b\" is mapped to pytorch_model.bin, which does not hold it") !=
                 std::string::npos,
             why["checkpoint-400"]);
  BOOST_TEST(why["checkpoint-500"].find("leaves the index's folder") != std::string::npos, why["checkpoint-500"]);
}

BOOST_AUTO_TEST_CASE(latest_reads_lightning_names_and_never_compares_a_step_with_an_epoch) {
  TempDir dir;
  // No progress inside (a bare state dict): the names say it.
  const std::string weights = testing::ReadFile(CorpusDir() / "benign" / "mlp.params");
  dir.Write("epoch=2-step=30.ckpt", weights);
  dir.Write("epoch=10-step=110.ckpt", weights);
  dir.Write("epoch=9-step=100-v1.ckpt", weights);
  Result<LatestResult> r = FindLatest(dir.path);
  BOOST_REQUIRE(r.has_value());
  BOOST_REQUIRE(r->chosen.has_value());
  BOOST_TEST(r->chosen->path.filename() == "epoch=10-step=110.ckpt");  // not by text order
  BOOST_TEST(r->chosen->progress.step_from == "file name");
  BOOST_TEST(r->order == "step");
  BOOST_TEST(r->older.size() == 2u);

  // One file records a step only, the other an epoch only: 50 steps and
  // epoch 3 are not comparable, so the newer file wins.
  TempDir mixed;
  const fs::path steps = mixed.Write("a.ckpt", weights);
  const fs::path epochs = mixed.Write("b.pt", testing::ReadFile(CorpusDir() / "benign" / "mlp_full_checkpoint.pt"));
  fs::rename(steps, mixed.path / "step=50.ckpt");
  SetMtime(mixed.path / "step=50.ckpt", 100);
  SetMtime(epochs, 10);
  Result<LatestResult> m = FindLatest(mixed.path);
  BOOST_REQUIRE(m.has_value());
  BOOST_REQUIRE(m->chosen.has_value());
  BOOST_TEST(m->order == "modification time");
  BOOST_TEST(m->chosen->path.filename() == "b.pt");
  SetMtime(epochs, 1000);
  m = FindLatest(mixed.path);
  BOOST_REQUIRE(m->chosen.has_value());
  BOOST_TEST(m->chosen->path.filename() == "step=50.ckpt");
}

BOOST_AUTO_TEST_CASE(latest_never_prints_a_mangled_path_as_text) {
  TempDir dir;
  const std::string name = "ckpt\nepoch_9\x1b[2J.pt";
  dir.Write(name, testing::ReadFile(CorpusDir() / "benign" / "mlp_full_checkpoint.pt"));
  const auto text = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest " + ShellQuote(dir.path.string()) + " 2>&1");
  BOOST_TEST(text.exit_code == 2);
  BOOST_TEST(text.out.find("use -0 or --json") != std::string::npos, text.out);
  BOOST_TEST(text.out.find('\x1b') == std::string::npos, text.out);
  const auto nul = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest -0 " + ShellQuote(dir.path.string()) + " 2>/dev/null");
  BOOST_TEST(nul.exit_code == 0);
  BOOST_TEST(nul.out == (dir.path / name).string() + std::string(1, '\0'));
  const auto js = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest --json " + ShellQuote(dir.path.string()) + " 2>/dev/null");
  BOOST_TEST(nlohmann::json::parse(js.out).at("chosen").at("path") == (dir.path / name).string());
}

// WriteIndex writes a sharded index mapping every state-dict tensor of each
// given shard (a corpus file copied into `dir`) to it, plus `extra` entries.
fs::path WriteIndex(const TempDir& dir, const std::vector<std::pair<std::string, std::string>>& shards,
                    const nlohmann::json& extra = nlohmann::json::object()) {
  nlohmann::json map = nlohmann::json::object();
  for (const auto& [corpus, name] : shards) {
    fs::copy_file(CorpusDir() / "benign" / corpus, dir.path / name, fs::copy_options::overwrite_existing);
    Result<Checkpoint> ckpt = LoadCheckpoint((dir.path / name).string());
    BOOST_REQUIRE(ckpt.has_value());
    Result<std::vector<NamedTensor>> names = ckpt->StateDict();
    BOOST_REQUIRE(names.has_value());
    for (const NamedTensor& t : *names) map[t.path] = name;
  }
  for (const auto& [k, v] : extra.items()) map[k] = v;
  const fs::path index = dir.path / "model.safetensors.index.json";
  std::ofstream(index, std::ios::trunc) << nlohmann::json{{"metadata", {{"total_size", 1}}}, {"weight_map", map}}.dump();
  return index;
}

BOOST_AUTO_TEST_CASE(a_sharded_state_dict_loads_as_one) {
  TempDir dir;
  const fs::path index = WriteIndex(dir, {{"mlp.params", "model-00001-of-00002.bin"},
                                          {"dtypes.pt", "model-00002-of-00002.bin"}});
  Result<ShardedCheckpoint> sharded = LoadShardedCheckpoint(index.string());
  BOOST_REQUIRE_MESSAGE(sharded.has_value(), (sharded ? "" : sharded.error().ToString()));
  Result<Checkpoint> a = LoadCheckpoint((CorpusDir() / "benign" / "mlp.params").string());
  Result<Checkpoint> b = LoadCheckpoint((CorpusDir() / "benign" / "dtypes.pt").string());
  BOOST_REQUIRE(a && b);
  BOOST_TEST(sharded->tensors().size() == a->StateDict()->size() + b->StateDict()->size());
  BOOST_TEST(sharded->shards().size() == 2u);
  // Every tensor is the shard's own, with the digest a direct load gives.
  for (const ShardedTensor& t : sharded->tensors()) {
    const Checkpoint& direct = t.shard == 0 ? *a : *b;
    std::optional<ValueId> v = direct.Find(t.name);
    BOOST_REQUIRE_MESSAGE(v.has_value(), t.name);
    const Value& value = direct.values().Get(*v);
    BOOST_REQUIRE(value.kind == ValueKind::kTensor);
    BOOST_TEST(*sharded->Sha256Hex(t) == *direct.Sha256Hex(value.index), t.name);
    BOOST_TEST(DTypeName(sharded->TensorOf(t).dtype) == DTypeName(direct.tensors()[value.index].dtype));
  }
  BOOST_TEST(sharded->CheckUnchanged().has_value());
  BOOST_TEST(VerifyShardedCheckpoint(index.string()).ok());
}

BOOST_AUTO_TEST_CASE(a_sharded_state_dict_is_refused_where_transformers_would_load_something_else) {
  auto error = [](const fs::path& index) {
    Result<ShardedCheckpoint> r = LoadShardedCheckpoint(index.string());
    BOOST_REQUIRE_MESSAGE(!r.has_value(), index.string() + " loaded");
    return r.error();
  };
  {
    TempDir dir;  // the same tensors in both shards: the last one read wins in transformers
    const Error e = error(WriteIndex(dir, {{"mlp.params", "a.bin"}, {"mlp.safetensors", "b.safetensors"}},
                                     {{"hidden.bias", "a.bin"}}));
    BOOST_TEST(e.detail.find("is in two shards: a.bin and b.safetensors") != std::string::npos, e.ToString());
    BOOST_TEST(e.where == "model.safetensors.index.json");
  }
  {
    TempDir dir;
    const Error e = error(WriteIndex(dir, {{"mlp.params", "a.bin"}}, {{"lm_head.weight", "a.bin"}}));
    BOOST_TEST(e.detail == "tensor \"lm_head.weight\" is mapped to a.bin, which does not hold it", e.ToString());
  }
  {
    TempDir dir;
    const fs::path index = WriteIndex(dir, {{"mlp.params", "a.bin"}});
    const std::string extra = (dir.path / "b.bin").string();
    fs::copy_file(CorpusDir() / "benign" / "dtypes.pt", extra);
    std::ofstream(index, std::ios::trunc) << R"({"weight_map": {"float32": "b.bin"}})";
    const Error e = error(index);
    BOOST_TEST(e.detail.find("which the index does not map to it") != std::string::npos, e.ToString());
  }
  {
    TempDir dir;
    const Error e = error(WriteIndex(dir, {{"mlp.params", "a.bin"}}, {{"x", "gone.bin"}}));
    BOOST_TEST((e.code == ErrorCode::kIo), e.ToString());
    BOOST_TEST(e.detail == "shard gone.bin is missing");
  }
  {
    TempDir dir;
    const Error e = error(WriteIndex(dir, {{"mlp.params", "a.bin"}}, {{"x", "../../etc/passwd"}}));
    BOOST_TEST((e.code == ErrorCode::kInvalidArgument), e.ToString());
    BOOST_TEST(e.detail.find("../../etc/passwd") != std::string::npos);
  }
  {
    TempDir dir;  // a hostile shard: the loader's refusal, naming the shard
    fs::copy_file(CorpusDir() / "malicious" / "torch_zip_injected.pt", dir.path / "evil.bin");
    std::ofstream(dir.path / "pytorch_model.bin.index.json") << R"({"weight_map": {"w": "evil.bin"}})";
    const Error e = error(dir.path / "pytorch_model.bin.index.json");
    BOOST_TEST((e.code == ErrorCode::kForbiddenGlobal), e.ToString());
    BOOST_TEST(e.where.starts_with("evil.bin"), e.where);
  }
}

BOOST_AUTO_TEST_CASE(latest_without_any_good_file) {
  TempDir dir;
  dir.Write("a.pt", "PK\x03\x04 torn");
  const auto cli = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest " + ShellQuote(dir.path.string()) + " 2>&1");
  BOOST_TEST(cli.exit_code == 1);
  BOOST_TEST(cli.out.find("no checkpoint") != std::string::npos, cli.out);
  BOOST_TEST(testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest /nonexistent/dir 2>/dev/null").exit_code == 2);
}

BOOST_AUTO_TEST_CASE(verify_cli_exit_codes_and_json) {
  TempDir dir;
  const std::string good = (CorpusDir() / "benign" / "mlp.params").string();
  const std::string bytes = testing::ReadFile(good);
  const std::string torn = dir.Write("torn.pt", bytes.substr(0, bytes.size() - 10));
  BOOST_TEST(testing::Run(ShellQuote(CKPTGUARD_CLI) + " verify " + ShellQuote(good)).exit_code == 0);
  const auto r = testing::Run(ShellQuote(CKPTGUARD_CLI) + " verify --json " + ShellQuote(good) + " " + ShellQuote(torn));
  BOOST_TEST(r.exit_code == 1);
  // One document: the envelope, one object per file in order, the summary.
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  BOOST_TEST(doc.at("schema_version") == 1);
  BOOST_TEST(doc.at("tool").at("command") == "verify");
  const nlohmann::json& files = doc.at("files");
  BOOST_REQUIRE(files.size() == 2u);
  BOOST_TEST(files[0].at("path") == good);
  BOOST_TEST(files[0].at("ok") == true);
  BOOST_TEST(files[1].at("path") == torn);
  BOOST_TEST(files[1].at("ok") == false);
  BOOST_TEST(!files[1].at("problems").empty());
  BOOST_TEST(!files[0].contains("schema_version"));  // the envelope's, not each file's
  BOOST_TEST(doc.at("summary") == nlohmann::json::parse(R"({"files": 2, "ok": 1, "failed": 1})"));
  // An unreadable file is in files too (a problem of kind io), exit 2.
  const auto gone = testing::Run(ShellQuote(CKPTGUARD_CLI) + " verify --json " + ShellQuote(good) +
                                 " /nonexistent.pt 2>/dev/null");
  BOOST_TEST(gone.exit_code == 2);
  const nlohmann::json unread = nlohmann::json::parse(gone.out);
  BOOST_REQUIRE(unread.at("files").size() == 2u);
  BOOST_TEST(unread.at("files")[1].at("problems")[0].at("kind") == "io");
  BOOST_TEST(unread.at("summary") == nlohmann::json::parse(R"({"files": 2, "ok": 1, "failed": 1})"));
  BOOST_TEST(testing::Run(ShellQuote(CKPTGUARD_CLI) + " verify /nonexistent.pt").exit_code == 2);
}

}  // namespace
}  // namespace ckptguard
