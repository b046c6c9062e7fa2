// `ckptguard inspect` as a user runs it: the JSON equals the corpus's
// .expect.json, text output, prefixes, rules files, errors and exit codes.
#define BOOST_TEST_MODULE inspect_cli_test
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::CorpusDir;
using testing::ShellQuote;

testing::CommandResult Inspect(const std::string& args, bool merge_stderr = false) {
  return testing::Run(ShellQuote(CKPTGUARD_CLI) + " inspect " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null"));
}

std::string Corpus(const char* sub, const char* name) { return ShellQuote((CorpusDir() / sub / name).string()); }

// Files parses --json's one document, checks its envelope and gives its
// files[] (one object per file given).
json Files(const std::string& out) {
  const json doc = json::parse(out);
  BOOST_TEST(doc.at("schema_version") == 1);
  BOOST_TEST(doc.at("tool").at("command") == "inspect");
  return doc.at("files");
}

BOOST_AUTO_TEST_CASE(json_matches_the_expect_file) {
  const auto r = Inspect("--json " + Corpus("benign", "mlp_full_checkpoint.pt"));
  BOOST_TEST(r.exit_code == 0);
  const json files = Files(r.out);
  BOOST_REQUIRE(files.size() == 1u);
  const json& got = files[0];
  BOOST_TEST(!got.contains("schema_version"));  // the envelope's, not each file's
  BOOST_TEST(!got.contains("tool"));
  const json want = json::parse(testing::ReadFile(CorpusDir() / "benign" / "mlp_full_checkpoint.pt.expect.json"));
  BOOST_TEST(got.at("kind") == want.at("kind"));
  BOOST_TEST(got.at("tensors") == want.at("tensors"));
  BOOST_TEST(got.at("skeleton") == want.at("skeleton"));
  BOOST_TEST(got.at("file") == "mlp_full_checkpoint.pt");
}

BOOST_AUTO_TEST_CASE(one_json_document_with_errors_as_objects) {
  const auto r = Inspect("--json " + Corpus("benign", "mlp.params") + " " + Corpus("malicious", "os_system_p2.pkl") +
                         " " + Corpus("benign", "mlp.safetensors"));
  BOOST_TEST(r.exit_code == 2);
  const json docs = Files(r.out);  // one document, whole although a file failed midway
  BOOST_REQUIRE(docs.size() == 3u);
  BOOST_TEST(docs[0].at("kind") == "torch-zip");
  BOOST_TEST(docs[1].at("error").at("code") == "forbidden_global");
  BOOST_TEST(docs[1].at("error").at("detail").get<std::string>().find("os.system") != std::string::npos);
  BOOST_TEST(docs[1].at("error").at("offset") == 2);
  BOOST_TEST(docs[1].at("path") == (CorpusDir() / "malicious" / "os_system_p2.pkl").string());
  BOOST_TEST(docs[2].at("kind") == "safetensors");
  const json want = json::parse(testing::ReadFile(CorpusDir() / "benign" / "mlp.safetensors.expect.json"));
  BOOST_TEST(docs[2].at("tensors") == want.at("tensors"));
  // The last file failing still leaves one whole document.
  const auto last = Inspect("--json " + Corpus("benign", "mlp.params") + " " + Corpus("malicious", "os_system_p2.pkl"));
  BOOST_TEST(last.exit_code == 2);
  const json two = Files(last.out);
  BOOST_REQUIRE(two.size() == 2u);
  BOOST_TEST(two[1].at("error").at("code") == "forbidden_global");
}

BOOST_AUTO_TEST_CASE(text_lists_tensors_and_the_tree) {
  const auto r = Inspect(Corpus("benign", "mlp_full_checkpoint.pt"));
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.find("format: torch-zip") != std::string::npos);
  BOOST_TEST(r.out.find("  model.hidden.weight  float32 [256,20] stride [20,1] offset 0  sha256 "
                        "cbb15964516354073f8722c64b4928790c24f84dd8bd2b67a1ba4013b7570e60") != std::string::npos,
             r.out);
  BOOST_TEST(r.out.find("    model: OrderedDict (4)") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("    epoch: 3") != std::string::npos, r.out);
}

BOOST_AUTO_TEST_CASE(prefix_selects_a_sub_dict) {
  const auto r = Inspect("--json --prefix model " + Corpus("benign", "mlp_full_checkpoint.pt"));
  BOOST_TEST(r.exit_code == 0);
  const json got = Files(r.out).at(0);
  BOOST_TEST(got.at("tensors").size() == 4u);
  BOOST_TEST(got.at("tensors").contains("hidden.weight"));
  const auto bad = Inspect("--prefix modle " + Corpus("benign", "mlp_full_checkpoint.pt"), true);
  BOOST_TEST(bad.exit_code == 2);
  BOOST_TEST(bad.out.find("no value at 'modle'") != std::string::npos, bad.out);
}

BOOST_AUTO_TEST_CASE(refusals_name_file_entry_global_and_offset) {
  const auto r = Inspect(Corpus("malicious", "torch_zip_injected.pt"), true);
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.out.find("torch_zip_injected.pt: forbidden_global at byte 48 (archive/data.pkl): global 'os.system'") !=
                 std::string::npos,
             r.out);
}

BOOST_AUTO_TEST_CASE(rules_file_extends_the_allowlist) {
  testing::TempDir dir;
  // A pickle naming an application's own OrderedDict subclass: refused by
  // default, loaded when a rules file maps it to the OrderedDict action.
  const std::string pickle = "\x80\x02" "cmyapp.state\nStateDict\n)R}b.";
  const std::string file = dir.Write("custom.pkl", pickle);
  const auto refused = Inspect(ShellQuote(file), true);
  BOOST_TEST(refused.exit_code == 2);
  BOOST_TEST(refused.out.find("'myapp.state.StateDict' is not on the allowlist") != std::string::npos, refused.out);
  const std::string rules = dir.Write("rules.toml", R"(version = 1
[[allow]]
global = "myapp.state.StateDict"
action = "ordered_dict"
why = "our OrderedDict subclass"
)");
  const auto loaded = Inspect("--rules " + ShellQuote(rules) + " " + ShellQuote(file), true);
  BOOST_TEST(loaded.exit_code == 0, loaded.out);
  BOOST_TEST(loaded.out.find("OrderedDict (0)") != std::string::npos, loaded.out);
  const std::string broken = dir.Write("broken.toml", "version = 1\n[[allow]]\nglobal = \"a.b\"\naction = \"exec\"\n");
  const auto bad = Inspect("--rules " + ShellQuote(broken) + " " + ShellQuote(file), true);
  BOOST_TEST(bad.exit_code == 2);
  BOOST_TEST(bad.out.find("unknown action 'exec'") != std::string::npos, bad.out);
  BOOST_TEST(bad.out.find("broken.toml:2") != std::string::npos, bad.out);
}

BOOST_AUTO_TEST_CASE(help_teaches) {
  const auto r = testing::Run(ShellQuote(CKPTGUARD_CLI) + " inspect --help");
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.find("Nothing is imported, called or executed") != std::string::npos);
  BOOST_TEST(r.out.find("--rules") != std::string::npos);
  BOOST_TEST(r.out.find("Exit status") != std::string::npos);
}

}  // namespace
}  // namespace ckptguard
