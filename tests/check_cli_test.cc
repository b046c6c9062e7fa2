// `ckptguard check` as a user runs it: verdicts and exit codes, the --json
// contract, --non-strict, --prefix, DataParallel prefixes, refusals and help.
#define BOOST_TEST_MODULE check_cli_test
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace ckptguard {
namespace {

using json = nlohmann::ordered_json;
using testing::CorpusDir;
using testing::ShellQuote;

testing::CommandResult Check(const std::string& args, bool merge_stderr = false) {
  return testing::Run(ShellQuote(CKPTGUARD_CLI) + " check " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null"));
}

std::string Corpus(const char* sub, const char* name) { return ShellQuote((CorpusDir() / sub / name).string()); }
std::string Params() { return Corpus("benign", "mlp.params"); }
std::string Schema() { return "--expect " + Corpus("benign", "mlp.schema.json"); }

// EditedSchema writes mlp.schema.json after `edit` into `dir`, quoted.
template <typename Edit>
std::string EditedSchema(const testing::TempDir& dir, Edit edit) {
  json schema = json::parse(testing::ReadFile(CorpusDir() / "benign" / "mlp.schema.json"));
  edit(schema);
  return "--expect " + ShellQuote(dir.Write("schema.json", schema.dump()));
}

bool Has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

BOOST_AUTO_TEST_CASE(fits_exit_0) {
  const auto r = Check(Params() + " " + Schema());
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(Has(r.out, "checkpoint: 4 tensors; expected: 4 keys from "), r.out);
  BOOST_TEST(Has(r.out, "\nfits: load_state_dict(strict=True) would succeed\n"), r.out);
  // A reference checkpoint as the expectation.
  const auto ref = Check(Params() + " --expect " + Corpus("benign", "mlp_legacy.pt"));
  BOOST_TEST(ref.exit_code == 0, ref.out);
  const auto full_ref = Check(Params() + " --expect " + Corpus("benign", "mlp_full_checkpoint.pt") +
                              " --expect-prefix model");
  BOOST_TEST(full_ref.exit_code == 0, full_ref.out);
}

BOOST_AUTO_TEST_CASE(json_contract) {
  const auto r = Check("--json " + Params() + " " + Schema());
  BOOST_TEST(r.exit_code == 0);
  const json doc = json::parse(r.out);
  std::vector<std::string> keys;
  for (const auto& [key, value] : doc.items()) keys.push_back(key);
  BOOST_TEST(keys == (std::vector<std::string>{"path", "expect", "strict", "prefix", "stripped_prefix", "missing",
                                               "unexpected", "mismatched", "ok"}));
  BOOST_TEST(doc.at("path") == (CorpusDir() / "benign" / "mlp.params").string());
  BOOST_TEST(doc.at("expect") == (CorpusDir() / "benign" / "mlp.schema.json").string());
  BOOST_TEST(doc.at("strict") == true);
  BOOST_TEST(doc.at("prefix") == "");
  BOOST_TEST(doc.at("stripped_prefix").is_null());
  BOOST_TEST(doc.at("missing") == json::array());
  BOOST_TEST(doc.at("unexpected") == json::array());
  BOOST_TEST(doc.at("mismatched") == json::array());
  BOOST_TEST(doc.at("ok") == true);
}

BOOST_AUTO_TEST_CASE(prefix_selects_the_model_of_a_training_checkpoint) {
  const std::string full = Corpus("benign", "mlp_full_checkpoint.pt");
  const auto without = Check(full + " " + Schema());
  BOOST_TEST(without.exit_code == 1, without.out);
  BOOST_TEST(Has(without.out, "missing (4): expected, not in the checkpoint\n  hidden.weight  float32 [256, 20]\n"),
             without.out);
  BOOST_TEST(Has(without.out, "unexpected (17): in the checkpoint, not expected\n  model.hidden.weight\n"), without.out);
  BOOST_TEST(Has(without.out, "hint: every missing key is in the checkpoint under 'model.'; try --prefix model"),
             without.out);
  BOOST_TEST(Has(without.out, "does not fit: load_state_dict(strict=True) would fail: 4 missing keys, 17 unexpected keys"),
             without.out);
  for (const char* prefix : {"model", "model."}) {
    const auto with = Check("--json --prefix " + std::string(prefix) + " " + full + " " + Schema());
    BOOST_TEST(with.exit_code == 0, with.out);
    BOOST_TEST(json::parse(with.out).at("prefix") == prefix);
  }
  const auto typo = Check("--prefix modle " + full + " " + Schema(), true);
  BOOST_TEST(typo.exit_code == 2);
  BOOST_TEST(Has(typo.out, "mlp_full_checkpoint.pt: invalid_argument at byte 0: no value at 'modle'"), typo.out);
}

BOOST_AUTO_TEST_CASE(non_strict_passes_missing_and_unexpected_keys) {
  testing::TempDir dir;
  const std::string fewer = EditedSchema(dir, [](json& s) { s.erase("output.bias"); });
  const auto strict = Check("--json " + Params() + " " + fewer);
  BOOST_TEST(strict.exit_code == 1);
  const json s = json::parse(strict.out);
  BOOST_TEST(s.at("unexpected") == json::array({"output.bias"}));
  BOOST_TEST(s.at("ok") == false);
  const auto loose = Check("--json --non-strict " + Params() + " " + fewer);
  BOOST_TEST(loose.exit_code == 0);
  const json l = json::parse(loose.out);
  BOOST_TEST(l.at("strict") == false);
  BOOST_TEST(l.at("unexpected") == json::array({"output.bias"}));
  BOOST_TEST(l.at("ok") == true);
  const auto text = Check("--non-strict " + Params() + " " + fewer);
  BOOST_TEST(Has(text.out, "fits: load_state_dict(strict=False) would succeed, ignoring 1 unexpected key\n"), text.out);
  // --strict is the default and names it; both together is a usage error.
  BOOST_TEST(Check("--strict " + Params() + " " + fewer).exit_code == 1);
  BOOST_TEST(Check("--strict --non-strict " + Params() + " " + fewer).exit_code == 2);

  const std::string more = EditedSchema(dir, [](json& e) { e["extra.weight"] = json{{"shape", {3}}}; });
  const auto missing = Check(Params() + " " + more);
  BOOST_TEST(missing.exit_code == 1);
  BOOST_TEST(Has(missing.out, "missing (1): expected, not in the checkpoint\n  extra.weight  any dtype [3]\n"),
             missing.out);
  BOOST_TEST(Check("--non-strict " + Params() + " " + more).exit_code == 0);
}

BOOST_AUTO_TEST_CASE(shape_mismatch_fails_in_both_modes_dtype_does_not) {
  testing::TempDir dir;
  const std::string shape = EditedSchema(dir, [](json& s) { s["hidden.weight"]["shape"] = {20, 256}; });
  for (const char* mode : {"", "--non-strict "}) {
    const auto r = Check("--json " + std::string(mode) + Params() + " " + shape);
    BOOST_TEST(r.exit_code == 1, mode);
    const json doc = json::parse(r.out);
    BOOST_TEST(doc.at("mismatched") ==
               json::array({json{{"key", "hidden.weight"},
                                 {"detail", "shape [256, 20] in the checkpoint, [20, 256] expected"}}}));
  }
  const auto text = Check("--non-strict " + Params() + " " + shape);
  BOOST_TEST(Has(text.out, "does not fit: load_state_dict(strict=False) would fail: 1 shape mismatch\n"), text.out);

  const std::string dtype = EditedSchema(dir, [](json& s) { s["output.bias"]["dtype"] = "float16"; });
  const auto r = Check(Params() + " " + dtype);
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(Has(r.out, "  output.bias: dtype float32 in the checkpoint, float16 expected"), r.out);
  BOOST_TEST(Has(r.out, "fits: load_state_dict(strict=True) would succeed, converting the dtype of 1 tensor\n"), r.out);
}

BOOST_AUTO_TEST_CASE(data_parallel_prefix_is_named) {
  testing::TempDir dir;
  const std::string wrapped = EditedSchema(dir, [](json& s) {
    json out = json::object();
    for (const auto& [key, entry] : s.items()) out["module." + key] = entry;
    s = std::move(out);
  });
  const auto r = Check(Params() + " " + wrapped);
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(Has(r.out, "stripped prefix: 'module.' (every expected key starts with it"), r.out);
  BOOST_TEST(Has(r.out, "would succeed once the model is unwrapped"), r.out);
  const auto j = Check("--json " + Params() + " " + wrapped);
  BOOST_TEST(json::parse(j.out).at("stripped_prefix") == "module.");
}

BOOST_AUTO_TEST_CASE(unreadable_or_hostile_files_exit_2) {
  const auto hostile = Check(Corpus("malicious", "torch_zip_injected.pt") + " " + Schema(), true);
  BOOST_TEST(hostile.exit_code == 2);
  BOOST_TEST(Has(hostile.out, "torch_zip_injected.pt: forbidden_global at byte 48 (archive/data.pkl): global 'os.system'"),
             hostile.out);
  // A hostile reference checkpoint is refused the same way.
  const auto hostile_ref = Check(Params() + " --expect " + Corpus("malicious", "torch_zip_injected.pt"), true);
  BOOST_TEST(hostile_ref.exit_code == 2);
  BOOST_TEST(Has(hostile_ref.out, "global 'os.system'"), hostile_ref.out);
  const auto hostile_json = Check("--json " + Corpus("malicious", "torch_zip_injected.pt") + " " + Schema());
  BOOST_TEST(hostile_json.exit_code == 2);
  const json doc = json::parse(hostile_json.out);
  BOOST_TEST(doc.at("error").at("code") == "forbidden_global");
  BOOST_TEST(Has(doc.at("error").at("detail").get<std::string>(), "os.system"));

  testing::TempDir dir;
  const std::string bad = dir.Write("bad.json", R"({"hidden.weight": {"dtype": "float32", "shape": [256, -20]}})");
  const auto malformed = Check(Params() + " --expect " + ShellQuote(bad), true);
  BOOST_TEST(malformed.exit_code == 2);
  BOOST_TEST(Has(malformed.out, "bad.json: malformed at byte 0: key 'hidden.weight': shape[1] is -20"), malformed.out);
  const auto absent = Check(ShellQuote((dir.path / "absent.pt").string()) + " " + Schema(), true);
  BOOST_TEST(absent.exit_code == 2);
  BOOST_TEST(Has(absent.out, "absent.pt: io"), absent.out);
  BOOST_TEST(Check(Params()).exit_code == 2);  // --expect is required
}

BOOST_AUTO_TEST_CASE(key_names_cannot_drive_the_terminal) {
  testing::TempDir dir;
  const std::string schema = dir.Write("esc.json", R"({"\u001b[2Jevil": {"shape": [1]}})");
  const auto r = Check(Params() + " --expect " + ShellQuote(schema));
  BOOST_TEST(r.exit_code == 1);
  BOOST_TEST(!Has(r.out, "\x1b"));
  BOOST_TEST(Has(r.out, "  \\x1B[2Jevil  any dtype [1]"), r.out);
}

BOOST_AUTO_TEST_CASE(help_teaches) {
  const auto r = testing::Run(ShellQuote(CKPTGUARD_CLI) + " check --help");
  BOOST_TEST(r.exit_code == 0);
  for (const char* part : {"load_state_dict", "missing keys", "unexpected keys", "shape mismatch", "--non-strict",
                           "--prefix", "module.", "\"stripped_prefix\"", "Exit status: 0 when it fits, 1 when it does not",
                           "decided by content", "Examples:"}) {
    BOOST_TEST(Has(r.out, part), part);
  }
  const auto top = testing::Run(ShellQuote(CKPTGUARD_CLI) + " --help");
  BOOST_TEST(Has(top.out, "check"), top.out);
}

}  // namespace
}  // namespace ckptguard
