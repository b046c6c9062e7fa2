// verify and latest: whole files pass, every way of being torn fails with
// the reason, and `latest` picks the checkpoint a resumed run should load.
#define BOOST_TEST_MODULE verify_test
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

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
  BOOST_TEST((full.progress == std::optional<int64_t>(3)));
  BOOST_TEST(full.progress_key == "epoch");
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
  std::set<std::string> skipped;
  for (const LatestCandidate& c : r->skipped) {
    skipped.insert(c.path.filename().string());
    BOOST_TEST(!c.report.ok());
  }
  BOOST_TEST(skipped.contains("epoch_0012.pt"));  // the flipped byte: CRC
  BOOST_TEST(!skipped.contains("weights_old.pt")); // after the chosen one in the order, never read
  BOOST_TEST(r->not_models.size() == 1u);          // notes.txt
  BOOST_TEST(r->not_models[0].filename() == "notes.txt");

  // The CLI prints the chosen path on its last line.
  const auto cli = testing::Run(ShellQuote(CKPTGUARD_CLI) + " latest " + ShellQuote(dir.path.string()));
  BOOST_TEST(cli.exit_code == 0);
  BOOST_TEST(cli.out.ends_with(chosen.string() + "\n"), cli.out);
  BOOST_TEST(cli.out.find("skipped epoch_") == std::string::npos);  // lines begin with the full path
  BOOST_TEST(cli.out.find("BROKEN") != std::string::npos, cli.out);
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
  std::istringstream lines(r.out);
  std::string first, second;
  std::getline(lines, first);
  std::getline(lines, second);
  BOOST_TEST(nlohmann::json::parse(first).at("ok") == true);
  BOOST_TEST(nlohmann::json::parse(second).at("ok") == false);
  BOOST_TEST(!nlohmann::json::parse(second).at("problems").empty());
  BOOST_TEST(testing::Run(ShellQuote(CKPTGUARD_CLI) + " verify /nonexistent.pt").exit_code == 2);
}

}  // namespace
}  // namespace ckptguard
