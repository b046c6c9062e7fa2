// `ckptguard check` as a user runs it: verdicts and exit codes, the --json
// contract, --non-strict, --prefix, wrapper prefixes (hints, --strip-prefix),
// torch's exception text, several FILEs, refusals and help.
#define BOOST_TEST_MODULE check_cli_test
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

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

// Files parses --json's one document, checks its envelope and gives its
// files[] (one object per checkpoint given).
json Files(const std::string& out) {
  const json doc = json::parse(out);
  BOOST_TEST(doc.at("schema_version") == 1);
  BOOST_TEST(doc.at("tool").at("command") == "check");
  return doc.at("files");
}

// One is the object of the only checkpoint of a --json run.
json One(const std::string& out) {
  const json files = Files(out);
  BOOST_TEST(files.size() == 1u, out);
  return files.at(0);
}

BOOST_AUTO_TEST_CASE(fits_exit_0) {
  const auto r = Check(Params() + " " + Schema());
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(Has(r.out, "state dict: <class 'collections.OrderedDict'> with 4 keys; _metadata for 3 modules\n"),
             r.out);
  BOOST_TEST(Has(r.out, "expected: 4 tensors from "), r.out);
  BOOST_TEST(Has(r.out, "_metadata: '' v1, 'hidden' v1, 'output' v1\n"), r.out);
  BOOST_TEST(Has(r.out, "strict=True:  returns; loads 4 of 4 tensors\n"), r.out);
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
  const json whole = json::parse(r.out);
  std::vector<std::string> envelope;
  for (const auto& [key, value] : whole.items()) envelope.push_back(key);
  BOOST_TEST(envelope == (std::vector<std::string>{"schema_version", "tool", "files"}));
  const json doc = One(r.out);
  std::vector<std::string> keys;
  for (const auto& [key, value] : doc.items()) keys.push_back(key);
  BOOST_TEST(keys == (std::vector<std::string>{"path", "expect", "strict", "prefix", "strip_prefix", "model_class",
                                               "state_dict", "expected", "missing", "unexpected", "mismatched",
                                               "ignored", "filled", "converted", "loaded", "results", "hints",
                                               "caveats", "ok"}));
  BOOST_TEST(doc.at("path") == (CorpusDir() / "benign" / "mlp.params").string());
  BOOST_TEST(doc.at("expect") == (CorpusDir() / "benign" / "mlp.schema.json").string());
  BOOST_TEST(doc.at("strict") == true);
  BOOST_TEST(doc.at("prefix") == "");
  BOOST_TEST(doc.at("strip_prefix").is_null());
  BOOST_TEST(doc.at("state_dict").at("metadata") == json::parse(R"({"": 1, "hidden": 1, "output": 1})"));
  BOOST_TEST(doc.at("loaded").size() == 4u);
  BOOST_TEST(doc.at("results").at("strict") == json::parse(R"({"ok": true, "exception": null})"));
  BOOST_TEST(doc.at("results").at("non_strict").at("loaded") == 4);
  BOOST_TEST(doc.at("missing") == json::array());
  BOOST_TEST(doc.at("unexpected") == json::array());
  BOOST_TEST(doc.at("mismatched") == json::array());
  BOOST_TEST(doc.at("ok") == true);
}

BOOST_AUTO_TEST_CASE(prefix_selects_the_model_of_a_training_checkpoint) {
  const std::string full = Corpus("benign", "mlp_full_checkpoint.pt");
  const auto without = Check(full + " " + Schema());
  BOOST_TEST(without.exit_code == 1, without.out);
  // torch sees the training checkpoint's own four keys; nested dicts are
  // values, not dotted keys.
  BOOST_TEST(Has(without.out, "missing (4): expected, not in the state dict\n  hidden.weight  float32 [256, 20]\n"),
             without.out);
  BOOST_TEST(Has(without.out, "unexpected (4): in the state dict, matching no parameter, buffer or child module\n"
                              "  model\n  optimizer\n  epoch\n  rng_state\n"),
             without.out);
  BOOST_TEST(Has(without.out, "strict=True:  raises RuntimeError: Error(s) in loading state_dict for <model class>:\n"
                              "      Missing key(s) in state_dict: \"hidden.weight\""),
             without.out);
  BOOST_TEST(Has(without.out, "WARNING: strict=False would load NOTHING"), without.out);
  BOOST_TEST(Has(without.out, "hint: the dict under 'model' would fit: --prefix model\n"), without.out);
  BOOST_TEST(Has(without.out, "does not fit: load_state_dict(strict=True) would raise RuntimeError: 4 missing keys, "
                              "4 unexpected keys"),
             without.out);
  for (const char* prefix : {"model", "model."}) {
    const auto with = Check("--json --prefix " + std::string(prefix) + " " + full + " " + Schema());
    BOOST_TEST(with.exit_code == 0, with.out);
    BOOST_TEST(One(with.out).at("prefix") == prefix);
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
  const json s = One(strict.out);
  BOOST_TEST(s.at("unexpected") == json::array({"output.bias"}));
  BOOST_TEST(s.at("ok") == false);
  const auto loose = Check("--json --non-strict " + Params() + " " + fewer);
  BOOST_TEST(loose.exit_code == 0);
  const json l = One(loose.out);
  BOOST_TEST(l.at("strict") == false);
  BOOST_TEST(l.at("unexpected") == json::array({"output.bias"}));
  BOOST_TEST(l.at("ok") == true);
  const auto text = Check("--non-strict " + Params() + " " + fewer);
  BOOST_TEST(Has(text.out, "fits: load_state_dict(strict=False) would succeed, ignoring 1 unexpected key\n"), text.out);
  // --strict is the default and names it; both together is a usage error.
  BOOST_TEST(Check("--strict " + Params() + " " + fewer).exit_code == 1);
  BOOST_TEST(Check("--strict --non-strict " + Params() + " " + fewer).exit_code == 3);

  const std::string more = EditedSchema(dir, [](json& e) { e["extra.weight"] = json{{"shape", {3}}}; });
  const auto missing = Check(Params() + " " + more);
  BOOST_TEST(missing.exit_code == 1);
  BOOST_TEST(Has(missing.out, "missing (1): expected, not in the state dict\n  extra.weight  any dtype [3]\n"),
             missing.out);
  BOOST_TEST(Check("--non-strict " + Params() + " " + more).exit_code == 0);
}

BOOST_AUTO_TEST_CASE(shape_mismatch_fails_in_both_modes_dtype_does_not) {
  testing::TempDir dir;
  const std::string shape = EditedSchema(dir, [](json& s) { s["hidden.weight"]["shape"] = {20, 256}; });
  for (const char* mode : {"", "--non-strict "}) {
    const auto r = Check("--json " + std::string(mode) + Params() + " " + shape);
    BOOST_TEST(r.exit_code == 1, mode);
    const json doc = One(r.out);
    const std::string message =
        "size mismatch for hidden.weight: copying a param with shape torch.Size([256, 20]) from checkpoint, the shape "
        "in current model is torch.Size([20, 256]).";
    BOOST_TEST(doc.at("mismatched") ==
               json::array({json{{"key", "hidden.weight"}, {"kind", "size"}, {"detail", message}}}));
    BOOST_TEST(doc.at("results").at("non_strict").at("exception") ==
               json({{"type", "RuntimeError"},
                     {"message", "Error(s) in loading state_dict for <model class>:\n\t" + message}}));
  }
  const auto text = Check("--non-strict --model-class MLP " + Params() + " " + shape);
  BOOST_TEST(Has(text.out, "strict=False: raises RuntimeError: Error(s) in loading state_dict for MLP:\n"
                           "      size mismatch for hidden.weight"),
             text.out);
  BOOST_TEST(Has(text.out, "does not fit: load_state_dict(strict=False) would raise RuntimeError: 1 size mismatch\n"),
             text.out);

  const std::string dtype = EditedSchema(dir, [](json& s) { s["output.bias"]["dtype"] = "float16"; });
  const auto r = Check(Params() + " " + dtype);
  BOOST_TEST(r.exit_code == 0, r.out);
  BOOST_TEST(Has(r.out, "converted (1): torch copies across dtypes\n  output.bias: copied from float32 into float16"),
             r.out);
  BOOST_TEST(Has(r.out, "fits: load_state_dict(strict=True) would succeed, converting the dtype of 1 tensor\n"), r.out);
}

BOOST_AUTO_TEST_CASE(wrapper_prefixes_are_hints_and_strip_prefix_is_asked_for) {
  // A DataParallel checkpoint ("module.") into a plain model: torch fails
  // strict and strict=False loads nothing, so check does too, and says what
  // would fit.
  testing::TempDir dir;
  const json plain = json::parse(testing::ReadFile(CorpusDir() / "benign" / "mlp.schema.json"));
  json wrapped = json::object();
  for (const auto& [key, entry] : plain.items()) wrapped["module." + key] = entry;
  const std::string wrapped_schema = "--expect " + ShellQuote(dir.Write("wrapped.json", wrapped.dump()));
  const auto r = Check(Params() + " " + wrapped_schema);
  BOOST_TEST(r.exit_code == 1, r.out);
  BOOST_TEST(Has(r.out, "hint: every key would fit under 'module.': the model is wrapped"), r.out);
  BOOST_TEST(Has(r.out, "WARNING: strict=False would load NOTHING"), r.out);
  BOOST_TEST(Check("--non-strict " + Params() + " " + wrapped_schema).exit_code == 0);  // as torch: loads nothing

  const std::string ddp = Corpus("benign", "mlp.params");  // plain; the wrapped side is the schema above
  const auto reverse = Check("--json " + ddp + " " + wrapped_schema);
  BOOST_TEST(One(reverse.out).at("hints").size() == 1u);
  // --strip-prefix on a plain checkpoint changes nothing.
  const auto noop = Check("--json --strip-prefix module. " + Params() + " " + Schema());
  BOOST_TEST(noop.exit_code == 0, noop.out);
  BOOST_TEST(One(noop.out).at("strip_prefix") == "module.");
}

BOOST_AUTO_TEST_CASE(several_files_against_one_schema) {
  const auto r = Check("--json " + Params() + " " + Corpus("benign", "mlp_full_checkpoint.pt") + " " + Schema());
  BOOST_TEST(r.exit_code == 1);
  const json docs = Files(r.out);
  BOOST_REQUIRE(docs.size() == 2u);
  BOOST_TEST(docs[0].at("ok") == true);
  BOOST_TEST(docs[1].at("ok") == false);
  BOOST_TEST(docs[1].at("path") == (CorpusDir() / "benign" / "mlp_full_checkpoint.pt").string());
  // A checkpoint that cannot be read between two that can: its error object
  // in files, the document whole, the highest exit status.
  const auto mixed = Check("--json " + Params() + " " + Corpus("malicious", "torch_zip_injected.pt") + " " +
                           Corpus("benign", "mlp_full_checkpoint.pt") + " " + Schema());
  BOOST_TEST(mixed.exit_code == 2);
  const json three = Files(mixed.out);
  BOOST_REQUIRE(three.size() == 3u);
  BOOST_TEST(three[0].at("ok") == true);
  BOOST_TEST(three[1].at("error").at("code") == "forbidden_global");
  BOOST_TEST(three[2].at("ok") == false);
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
  const json doc = One(hostile_json.out);
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
  BOOST_TEST(Check(Params()).exit_code == 3);  // --expect is required: a usage error
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
  for (const char* part : {"load_state_dict", "missing keys", "unexpected keys", "size mismatch", "--non-strict",
                           "--prefix", "--strip-prefix", "module.", "consume_prefix_in_state_dict_if_present",
                           "_NormBase._load_from_state_dict", "LazyModuleMixin._lazy_load_hook", "0-d", "_extra_state",
                           "_metadata", "user code", "\"results\"", "Exit status: 0 when it fits, 1 when it does not",
                           "decided by content", "Examples:"}) {
    BOOST_TEST(Has(r.out, part), part);
  }
  const auto top = testing::Run(ShellQuote(CKPTGUARD_CLI) + " --help");
  BOOST_TEST(Has(top.out, "check"), top.out);
}

}  // namespace
}  // namespace ckptguard
