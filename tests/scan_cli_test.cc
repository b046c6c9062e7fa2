// `ckptguard scan` as a user runs it: folders, globs, symlinks, formats,
// exit codes, --allow/--strict/--rules, reports written whole.
#define BOOST_TEST_MODULE scan_cli_test
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::CorpusDir;
using testing::ShellQuote;
using testing::TempDir;
namespace fs = std::filesystem;

testing::CommandResult Scan(const std::string& args, bool merge_stderr = false) {
  return testing::Run(ShellQuote(CKPTGUARD_CLI) + " scan " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null"));
}

std::string Corpus(const char* sub, const char* name) { return ShellQuote((CorpusDir() / sub / name).string()); }

// A folder with one benign checkpoint, one hostile pickle under an innocent
// name, a non-model file, and a symlink to a hostile file.
struct Tree {
  TempDir dir;
  Tree() {
    fs::create_directories(dir.path / "models" / "cache");
    fs::copy_file(CorpusDir() / "benign" / "mlp.params", dir.path / "models" / "mlp.params");
    fs::copy_file(CorpusDir() / "malicious" / "os_system_p2.pkl", dir.path / "models" / "cache" / "weights.bin");
    dir.Write("models/README.txt", "not a model\n");
    fs::create_symlink(CorpusDir() / "malicious" / "posix_system.pkl", dir.path / "models" / "link.pt");
  }
  std::string Models() const { return ShellQuote((dir.path / "models").string()); }
};

BOOST_AUTO_TEST_CASE(exit_codes) {
  BOOST_TEST(Scan(Corpus("benign", "mlp.params")).exit_code == 0);
  BOOST_TEST(Scan(Corpus("benign", "whole_module.pt")).exit_code == 1);
  BOOST_TEST(Scan(Corpus("malicious", "os_system_p0.pkl")).exit_code == 1);
  BOOST_TEST(Scan("/nonexistent/model.pt").exit_code == 2);
  TempDir dir;
  BOOST_TEST(Scan(ShellQuote(dir.Write("notes.txt", "hello"))).exit_code == 2);  // named explicitly: reported
}

BOOST_AUTO_TEST_CASE(folders_are_walked_by_content_not_name) {
  Tree tree;
  const auto r = Scan("--format json " + tree.Models(), true);
  BOOST_TEST(r.exit_code == 1);
  const size_t brace = r.out.find('{');
  BOOST_REQUIRE(brace != std::string::npos);
  const json doc = json::parse(r.out.substr(brace, r.out.rfind('}') - brace + 1));
  std::map<std::string, std::string> verdicts;
  for (const json& f : doc.at("files")) verdicts[fs::path(f.at("path").get<std::string>()).filename()] = f.at("verdict");
  BOOST_TEST(verdicts.at("mlp.params") == "safe");
  BOOST_TEST(verdicts.at("weights.bin") == "dangerous");  // a pickle, whatever the name
  BOOST_TEST(!verdicts.contains("README.txt"));          // not a model file: left out
  BOOST_TEST(!verdicts.contains("link.pt"));             // symlinks are not followed by default
  BOOST_TEST(r.out.find("skipped 1 symbolic link") != std::string::npos, r.out);
  BOOST_TEST(doc.at("summary").at("files") == 2);
  BOOST_TEST(doc.at("summary").at("dangerous") == 1);

  const auto followed = Scan("--format json --follow-symlinks " + tree.Models());
  BOOST_TEST(json::parse(followed.out).at("summary").at("dangerous") == 2);
}

BOOST_AUTO_TEST_CASE(include_and_exclude_globs) {
  Tree tree;
  const auto only_params = Scan("--format json --include '*.params' " + tree.Models());
  BOOST_TEST(only_params.exit_code == 0);
  BOOST_TEST(json::parse(only_params.out).at("summary").at("files") == 1);
  const auto no_cache = Scan("--format json --exclude '*/cache/*' " + tree.Models());
  BOOST_TEST(no_cache.exit_code == 0);
  BOOST_TEST(json::parse(no_cache.out).at("summary").at("dangerous") == 0);
}

BOOST_AUTO_TEST_CASE(json_contract) {
  const auto r = Scan("--format json " + Corpus("malicious", "torch_zip_injected.pt"));
  const json f = json::parse(r.out).at("files").at(0);
  BOOST_TEST(f.at("format") == "torch-zip");
  BOOST_TEST(f.at("verdict") == "dangerous");
  const json& finding = f.at("findings").at(0);
  for (const char* key : {"rule", "severity", "message", "entry", "offset", "global"}) {
    BOOST_TEST(finding.contains(key), key);
  }
  BOOST_TEST(finding.at("global") == "os.system");
  BOOST_TEST(finding.at("entry") == "archive/data.pkl");
  BOOST_TEST(finding.at("offset") == 48);
}

BOOST_AUTO_TEST_CASE(sarif_report_is_written_whole_to_a_file) {
  TempDir dir;
  const std::string out = (dir.path / "results.sarif").string();
  const auto r = Scan("--format sarif --output " + ShellQuote(out) + " " + Corpus("malicious", "os_system_p4.pkl") + " " +
                      Corpus("benign", "mlp.params"));
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(r.out.empty());
  const json sarif = json::parse(testing::ReadFile(out));
  BOOST_TEST(sarif.at("version") == "2.1.0");
  BOOST_TEST(sarif.at("runs").at(0).at("results").size() >= 1u);
  BOOST_TEST(!fs::exists(out + ".tmp-ckptguard"));
  // Validates against the official schema (copied into tests/data/sarif).
  const auto valid = testing::Run(
      ShellQuote(CKPTGUARD_PYTHON) +
      " -c 'import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))' " +
      ShellQuote(out) + " " + ShellQuote((testing::DataDir() / "sarif" / "sarif-schema-2.1.0.json").string()) + " 2>&1");
  BOOST_TEST(valid.exit_code == 0, valid.out);
}

BOOST_AUTO_TEST_CASE(allow_strict_and_rules_files) {
  TempDir dir;
  const std::string pickle = dir.Write("custom.pkl", "\x80\x02" "cmyproject.config\nConfig\n)R.");
  BOOST_TEST(Scan(ShellQuote(pickle)).exit_code == 1);  // unknown: suspicious
  const auto strict = Scan("--strict --format json " + ShellQuote(pickle));
  BOOST_TEST(json::parse(strict.out).at("files").at(0).at("verdict") == "dangerous");
  BOOST_TEST(Scan("--allow myproject.config.Config " + ShellQuote(pickle)).exit_code == 0);
  const std::string rules = dir.Write("rules.toml", R"(version = 1
[[rule]]
id = "ORG-001"
severity = "dangerous"
pattern = 'myproject(\..*)?'
description = "our project's classes must never be pickled into checkpoints"
reference = "https://example.org/policy"
)");
  const auto ruled = Scan("--format json --rules " + ShellQuote(rules) + " " + ShellQuote(pickle));
  const json f = json::parse(ruled.out).at("files").at(0);
  BOOST_TEST(f.at("verdict") == "dangerous");
  BOOST_TEST(f.at("findings").at(0).at("rule") == "ORG-001");
  const std::string bad = dir.Write("bad.toml", "version = 1\n[[rule]]\nid = \"X\"\nseverity = \"fatal\"\n");
  const auto refused = Scan("--rules " + ShellQuote(bad) + " " + ShellQuote(pickle), true);
  BOOST_TEST(refused.exit_code == 2);
  BOOST_TEST(refused.out.find("bad.toml") != std::string::npos, refused.out);
}

BOOST_AUTO_TEST_CASE(help_teaches) {
  const auto r = testing::Run(ShellQuote(CKPTGUARD_CLI) + " scan --help");
  BOOST_TEST(r.exit_code == 0);
  for (const char* text : {"executed symbolically", "--format", "--allow", "--strict", "Exit status", "sarif"}) {
    BOOST_TEST(r.out.find(text) != std::string::npos, text);
  }
}

BOOST_AUTO_TEST_CASE(no_payload_ever_ran) {
  for (const auto& e : fs::directory_iterator("/tmp")) {
    BOOST_TEST(!e.path().filename().string().starts_with("ckptguard-pwned-"), e.path());
  }
}

}  // namespace
}  // namespace ckptguard
