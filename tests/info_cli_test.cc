// `ckptguard info` as a user runs it: formats named as the corpus names its
// kinds, entries and anomalies with offsets, exit codes, errors naming the file.
#define BOOST_TEST_MODULE info_cli_test
#include <boost/test/unit_test.hpp>
#include <map>
#include <nlohmann/json.hpp>

#include "test_util.h"
#include "zip_builder.h"

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::CorpusDir;
using testing::ShellQuote;
using testing::TempDir;

testing::CommandResult Info(const std::string& args, bool merge_stderr = false) {
  return testing::Run(ShellQuote(CKPTGUARD_CLI) + " info " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null"));
}

std::string Quoted(const std::filesystem::path& p) { return ShellQuote(p.string()); }

BOOST_AUTO_TEST_CASE(json_format_is_the_corpus_kind) {
  // Every benign file with an expectation, in one run.
  std::map<std::string, std::string> expected;  // path -> kind
  std::string args = "--json";
  for (const auto& entry : std::filesystem::directory_iterator(CorpusDir() / "benign")) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".expect.json")) continue;
    const std::filesystem::path model = entry.path().parent_path() / name.substr(0, name.size() - 12);
    std::string kind = json::parse(testing::ReadFile(entry.path())).at("kind");
    // The corpus marks a pickled nn.Module as its own kind; its container is
    // an ordinary torch zip (the scanner judges the module).
    if (kind == "torch-zip-module") kind = "torch-zip";
    expected[model.string()] = kind;
    args += " " + Quoted(model);
  }
  BOOST_REQUIRE(expected.size() >= 15u);
  const auto r = Info(args);
  BOOST_TEST(r.exit_code == 0);
  const json doc = json::parse(r.out);
  BOOST_REQUIRE(doc.at("files").size() == expected.size());
  for (const json& file : doc.at("files")) {
    const std::string path = file.at("path");
    BOOST_TEST(file.at("format").get<std::string>() == expected.at(path), path);
    BOOST_TEST(file.at("anomalies").empty(), path << ": " << file.at("anomalies").dump());
    for (const json& e : file.value("entries", json::array())) {
      BOOST_TEST(e.at("crc_ok") == true, path << " " << e.at("name"));
    }
  }
}

BOOST_AUTO_TEST_CASE(renamed_files_are_judged_by_content) {
  const auto r = Info("--json " + Quoted(CorpusDir() / "malicious" / "torch_zip_odd_extension.jpg") + " " +
                      Quoted(CorpusDir() / "malicious" / "torch_zip_injected.bin") + " " +
                      Quoted(CorpusDir() / "malicious" / "torch_legacy_magic_payload.pt") + " " +
                      Quoted(CorpusDir() / "malicious" / "numpy_object_array.npy"));
  BOOST_TEST(r.exit_code == 0);
  const json files = json::parse(r.out).at("files");
  BOOST_REQUIRE(files.size() == 4u);
  BOOST_TEST(files[0].at("format") == "torch-zip");
  BOOST_TEST(files[1].at("format") == "torch-zip");
  BOOST_TEST(files[2].at("format") == "torch-legacy");
  BOOST_TEST(files[3].at("format") == "numpy");
  BOOST_TEST(files[3].at("anomalies").dump().find("npy.object_array") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(text_lists_entries_pickles_and_anomalies_with_offsets) {
  const auto r = Info(Quoted(CorpusDir() / "malicious" / "zip_name_mismatch.pt"));
  BOOST_TEST(r.exit_code == 0);  // anomalies alone are not a read failure
  BOOST_TEST(r.out.find("format: torch-zip") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("archive prefix: archive/") != std::string::npos);
  BOOST_TEST(r.out.find("archive/data.pkl  [pickle]") != std::string::npos);
  BOOST_TEST(r.out.find("'archive/data.pkl' at offset 46, 64 bytes") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("[zip.local_name_mismatch] at byte 0 (archive/data.pkl): local header names it "
                        "'archive/data.txt'") != std::string::npos,
             r.out);
}

BOOST_AUTO_TEST_CASE(wrappers_and_nesting_are_shown_inside) {
  TempDir dir;
  const std::string pickle = testing::ReadFile(CorpusDir() / "malicious" / "os_system_p2.pkl");
  const std::string gz = dir.Write("weights.bin", testing::Gzip(pickle));
  const std::string inner = testing::BuildZip(testing::MinimalTorchZip());
  const std::string outer = dir.Write("bundle.zip", testing::BuildZip({testing::ZipItem{"model.pt", inner}}));
  const auto r = Info("--json " + ShellQuote(gz) + " " + ShellQuote(outer));
  BOOST_TEST(r.exit_code == 0);
  const json files = json::parse(r.out).at("files");
  BOOST_TEST(files[0].at("format") == "pickle");
  BOOST_TEST(files[0].at("wrappers") == json::array({"gzip"}));
  BOOST_TEST(files[0].at("pickles").size() == 1u);
  BOOST_TEST(files[1].at("format") == "zip");
  BOOST_REQUIRE(files[1].at("nested").size() == 1u);
  BOOST_TEST(files[1].at("nested")[0].at("entry") == "model.pt");
  BOOST_TEST(files[1].at("nested")[0].at("container").at("format") == "torch-zip", files[1].dump());
}

BOOST_AUTO_TEST_CASE(unreadable_file_is_named_and_exit_2) {
  TempDir dir;
  // A torch zip cut inside its central directory.
  const std::string zip = testing::BuildZip(testing::MinimalTorchZip());
  const std::string cut = dir.Write("cut.pt", zip.substr(0, zip.size() - 30));
  const auto r = Info(ShellQuote(cut) + " " + Quoted(CorpusDir() / "benign" / "mlp.params"), true);
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.out.find(cut) != std::string::npos, r.out);
  BOOST_TEST(r.out.find("format: torch-zip") != std::string::npos, "the readable file is still described");

  const auto missing = Info(ShellQuote((dir.path / "nope.pt").string()), true);
  BOOST_TEST(missing.exit_code == 2);
  BOOST_TEST(missing.out.find("nope.pt") != std::string::npos);
  BOOST_TEST(missing.out.find("No such file") != std::string::npos, missing.out);
}

BOOST_AUTO_TEST_CASE(json_error_object_has_code_and_offset) {
  TempDir dir;
  const std::string zip = testing::BuildZip(testing::MinimalTorchZip());
  const std::string cut = dir.Write("cut.pt", zip.substr(0, zip.size() - 30));
  const auto r = Info("--json " + ShellQuote(cut));
  BOOST_TEST(r.exit_code == 2);
  const json file = json::parse(r.out).at("files").at(0);
  BOOST_REQUIRE_MESSAGE(file.contains("error"), file.dump());
  BOOST_TEST(file.at("error").contains("code"), file.dump());
  BOOST_TEST(file.at("error").contains("offset"), file.dump());
}

BOOST_AUTO_TEST_CASE(help_teaches) {
  const auto r = testing::Run(ShellQuote(CKPTGUARD_CLI) + " info --help");
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.find("decided by content") != std::string::npos);
  BOOST_TEST(r.out.find("zip.local_name_mismatch") != std::string::npos);
  BOOST_TEST(r.out.find("Exit status") != std::string::npos);
  BOOST_TEST(r.out.ends_with("\n"));
}

}  // namespace
}  // namespace ckptguard
