// The scanner on the corpus and on hostile files built byte by byte for each
// class of docs/rules.md ("Threat classes").
#define BOOST_TEST_MODULE scan_test
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include "ckptguard/scanner/scan.h"
#include "print_types.h"
#include "test_util.h"
#include "zip_builder.h"

namespace ckptguard::scanner {

std::ostream& boost_test_print_type(std::ostream& os, Verdict v) { return os << VerdictName(v); }

namespace {

namespace bdata = boost::unit_test::data;
using nlohmann::json;
using testing::CorpusDir;

std::string Describe(const FileReport& r) {
  std::string out = r.path + " [" + std::string(VerdictName(r.verdict)) + "]";
  for (const Finding& f : r.findings) {
    out += "\n  " + f.rule + " " + std::string(SeverityName(f.severity)) + " @" + std::to_string(f.offset) + " (" +
           f.entry + ") " + f.global + ": " + f.message;
  }
  if (r.error) out += "\n  error: " + r.error->ToString();
  return out;
}

FileReport Scan(const std::string& bytes) { return ScanBytes(AsBytes(bytes), "<test>"); }

bool HasRule(const FileReport& r, const std::string& rule, const std::string& global = "") {
  return std::any_of(r.findings.begin(), r.findings.end(), [&](const Finding& f) {
    return f.rule == rule && (global.empty() || f.global == global);
  });
}

bool NamesGlobal(const FileReport& r, const std::string& global) {
  return std::any_of(r.findings.begin(), r.findings.end(), [&](const Finding& f) { return f.global == global; });
}

int Rank(Verdict v) {
  switch (v) {
    case Verdict::kSafe: return 0;
    case Verdict::kSuspicious: return 1;
    case Verdict::kDangerous: return 2;
    case Verdict::kError: return 1;
  }
  return 0;
}

// ---------------------------------------------------------------------------
// The corpus.

struct Labelled {
  std::string file;
  std::string verdict;
  std::vector<std::string> globals;
};
std::ostream& operator<<(std::ostream& os, const Labelled& l) { return os << l.file; }

std::vector<Labelled> Manifest() {
  std::vector<Labelled> out;
  std::istringstream lines(testing::ReadFile(CorpusDir() / "malicious" / "manifest.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const json m = json::parse(line);
    out.push_back({m.at("file"), m.at("verdict"), m.at("globals").get<std::vector<std::string>>()});
  }
  return out;
}

BOOST_DATA_TEST_CASE(hostile_files_get_at_least_their_verdict, bdata::make(Manifest()), l) {
  const FileReport r = ScanFile((CorpusDir() / "malicious" / l.file).string());
  const Verdict want = l.verdict == "dangerous" ? Verdict::kDangerous : Verdict::kSuspicious;
  BOOST_TEST(Rank(r.verdict) >= Rank(want), Describe(r));
  BOOST_TEST(r.verdict != Verdict::kSafe, Describe(r));
  bool named = false;
  for (const std::string& g : l.globals) {
    const std::string alt = g.starts_with("builtins.") ? "__builtin__." + g.substr(9) : g;
    named = named || NamesGlobal(r, g) || NamesGlobal(r, alt);
  }
  BOOST_TEST(named, Describe(r));
}

std::vector<std::string> BenignFiles() {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(CorpusDir() / "benign")) {
    const std::string ext = e.path().extension().string();
    if (ext != ".json") out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

BOOST_DATA_TEST_CASE(benign_files_are_never_dangerous, bdata::make(BenignFiles()), name) {
  const FileReport r = ScanFile((CorpusDir() / "benign" / name).string());
  BOOST_TEST(r.verdict != Verdict::kDangerous, Describe(r));
  BOOST_TEST(r.verdict != Verdict::kError, Describe(r));
  // Plain weights are safe; only the pickled module and the TorchScript
  // archive need code to load.
  if (name != "whole_module.pt" && name != "mlp_torchscript.pt") {
    BOOST_TEST(r.verdict == Verdict::kSafe, Describe(r));
  }
}

BOOST_AUTO_TEST_CASE(whole_module_is_suspicious_naming_its_classes) {
  const FileReport r = ScanFile((CorpusDir() / "benign" / "whole_module.pt").string());
  BOOST_TEST(r.verdict == Verdict::kSuspicious, Describe(r));
  BOOST_TEST(NamesGlobal(r, "__main__.MLP"), Describe(r));
  BOOST_TEST(NamesGlobal(r, "torch.nn.modules.linear.Linear"), Describe(r));
  BOOST_TEST(HasRule(r, "CKG-F050"), Describe(r));
}

BOOST_AUTO_TEST_CASE(torchscript_code_is_reported) {
  const FileReport r = ScanFile((CorpusDir() / "benign" / "mlp_torchscript.pt").string());
  BOOST_TEST(r.verdict == Verdict::kSuspicious, Describe(r));
  BOOST_TEST(HasRule(r, "CKG-F030"), Describe(r));
  BOOST_TEST(r.format == "torchscript");
}

// ---------------------------------------------------------------------------
// Threat classes built byte by byte.

// P2 is a protocol-2 pickle of `body` (the caller ends it with '.').
std::string P2(const std::string& body) { return std::string("\x80\x02", 2) + body; }
std::string U(const std::string& s) {  // SHORT_BINUNICODE
  return std::string("\x8c", 1) + static_cast<char>(s.size()) + s;
}
std::string P4(const std::string& body) { return std::string("\x80\x04", 2) + body; }

BOOST_AUTO_TEST_CASE(names_nobody_listed_are_still_caught) {
  // A global on neither list, only referenced, is suspicious; with --strict
  // dangerous. Called, it is dangerous whatever its name (default deny).
  const std::string referenced = P2("cmysterious.module\nrun\n.");
  const FileReport r = Scan(referenced);
  BOOST_TEST(r.verdict == Verdict::kSuspicious, Describe(r));
  BOOST_TEST(HasRule(r, "CKG-P001", "mysterious.module.run"), Describe(r));
  const std::string p = P2("cmysterious.module\nrun\n)R.");
  const FileReport called = Scan(p);
  BOOST_TEST(called.verdict == Verdict::kDangerous, Describe(called));
  BOOST_TEST(HasRule(called, "CKG-F080", "mysterious.module.run"), Describe(called));
  RuleSet strict = RuleSet::Builtin();
  strict.SetStrict(true);
  ScanOptions options;
  options.rules = &strict;
  BOOST_TEST(ScanBytes(AsBytes(referenced), "<test>", options).verdict == Verdict::kDangerous);
  // An explicit --allow makes it safe.
  RuleSet allowed = RuleSet::Builtin();
  allowed.Allow("mysterious.module.run");
  options.rules = &allowed;
  BOOST_TEST(ScanBytes(AsBytes(p), "<test>", options).verdict == Verdict::kSafe);
}

BOOST_AUTO_TEST_CASE(dotted_names_and_submodules) {
  // Protocol 4: "torch" + "os.system" is os.system.
  const FileReport a = Scan(P4(U("torch") + U("os.system") + "\x93" + U("id") + "\x85R."));
  BOOST_TEST(a.verdict == Verdict::kDangerous, Describe(a));
  const FileReport b = Scan(P4(U("builtins") + U("print.__class__.__base__.__subclasses__") + "\x93)R."));
  BOOST_TEST(b.verdict == Verdict::kDangerous, Describe(b));
  const FileReport c = Scan(P2("casyncio.unix_events\n_UnixSelectorEventLoop\n)R."));
  BOOST_TEST(c.verdict == Verdict::kDangerous, Describe(c));
  const FileReport d = Scan(P2("c__builtin__\neval\n(Vprint(1)\ntR."));
  BOOST_TEST(d.verdict == Verdict::kDangerous, Describe(d));
}

BOOST_AUTO_TEST_CASE(stack_global_through_memo_and_overwrites) {
  // The strings come from the memo; a slot is overwritten after a benign use.
  const std::string get01("h\x00h\x01\x93", 5);  // BINGET 0, BINGET 1, STACK_GLOBAL
  const std::string memo = P4(U("collections") + "\x94" + U("OrderedDict") + "\x94" + get01 + "0" + U("os") +
                              std::string("q\x00", 2) + U("system") + "q\x01" + get01 + U("id") + "\x85R.");
  const FileReport r = Scan(memo);
  BOOST_TEST(r.verdict == Verdict::kDangerous, Describe(r));
  BOOST_TEST(NamesGlobal(r, "os.system"), Describe(r));
  // Operands that are not literal strings: the name cannot be known.
  const FileReport u = Scan(P4(U("os") + "K\x01\x93)R."));
  BOOST_TEST(HasRule(u, "CKG-F001"), Describe(u));
  BOOST_TEST(u.verdict == Verdict::kDangerous, Describe(u));
  // A GET of a key never PUT feeds STACK_GLOBAL.
  const FileReport g = Scan(P4(U("os") + "h\x07\x93)R."));
  BOOST_TEST(HasRule(g, "CKG-F001"), Describe(g));
}

BOOST_AUTO_TEST_CASE(calls_hidden_in_other_opcodes) {
  // INST, OBJ, NEWOBJ, NEWOBJ_EX each call a class; POP hides the result.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"INST", "(S'id'\nios\nsystem\n0N."},
      {"OBJ", P2(std::string("(cos\nsystem\nX\x02\x00\x00\x00ido0N.", 23))},
      {"NEWOBJ", P2("csubprocess\nPopen\n)\x81" "0N.")},
      {"NEWOBJ_EX", P4(U("subprocess") + U("Popen") + "\x93)}\x92" "0N.")},
  };
  for (const auto& [name, bytes] : cases) {
    BOOST_TEST_CONTEXT(name) {
      const FileReport r = Scan(bytes);
      BOOST_TEST(r.verdict == Verdict::kDangerous, Describe(r));
    }
  }
  // REDUCE of a call's result: the target is not a named global.
  const FileReport chain = Scan(P2("ccollections\nOrderedDict\n)R)R."));
  BOOST_TEST(HasRule(chain, "CKG-F002"), Describe(chain));
  // EXT1: a global from the copyreg registry.
  const FileReport ext = Scan(P2("\x82\x01)R."));
  BOOST_TEST(HasRule(ext, "CKG-F003"), Describe(ext));
  BOOST_TEST(ext.verdict == Verdict::kDangerous);
}

BOOST_AUTO_TEST_CASE(the_scanner_reads_on) {
  // A benign pickle, then a hostile one in the same stream.
  const FileReport two = Scan(P2("N.") + P2("cos\nsystem\n(S'id'\ntR."));
  BOOST_TEST(two.verdict == Verdict::kDangerous, Describe(two));
  // The payload, then a broken stream: the finding is kept, the break reported.
  const FileReport broken = Scan(P2("cos\nsystem\n(S'id'\ntR\xff\xff"));
  BOOST_TEST(broken.verdict == Verdict::kDangerous, Describe(broken));
  BOOST_TEST(HasRule(broken, "CKG-F020"), Describe(broken));
  // Truncated after benign content: suspicious, not safe.
  const FileReport cut = Scan(P2(std::string("]q\x00(K\x01K\x02", 8)));
  BOOST_TEST(cut.verdict == Verdict::kSuspicious, Describe(cut));
  // A FRAME that claims more than the stream holds.
  const FileReport frame = Scan(P4(std::string("\x95\xff\xff\x00\x00\x00\x00\x00\x00", 9) + "N."));
  BOOST_TEST(frame.verdict != Verdict::kSafe, Describe(frame));
}

BOOST_AUTO_TEST_CASE(billion_laughs_is_reported) {
  // Each level a list of 10 references to the previous: 10^9 values from ~60 ops.
  std::string body("]q\x00", 3);
  for (int level = 0; level < 9; ++level) {
    body += "]q" + std::string(1, static_cast<char>(level + 1)) + "(";
    for (int i = 0; i < 10; ++i) body += "h" + std::string(1, static_cast<char>(level));
    body += "e";
  }
  const FileReport r = Scan(P2(body + "."));
  BOOST_TEST(HasRule(r, "CKG-F040"), Describe(r));
  BOOST_TEST(r.verdict == Verdict::kSuspicious, Describe(r));
}

BOOST_AUTO_TEST_CASE(nested_pickles_in_bytes_are_scanned) {
  const std::string inner = P2("cos\nsystem\n(S'id'\ntR.");
  const std::string outer = P2("cpickle\nloads\n(C" + std::string(1, static_cast<char>(inner.size())) + inner + "tR.");
  const FileReport r = Scan(outer);
  BOOST_TEST(r.verdict == Verdict::kDangerous, Describe(r));
  BOOST_TEST(NamesGlobal(r, "os.system"), Describe(r));
  // pickle.loads handed one literal pickle runs exactly it: judged by it
  // (F062), the danger is the nested os.system.
  BOOST_TEST(HasRule(r, "CKG-F062"), Describe(r));
}

BOOST_AUTO_TEST_CASE(zip_disagreements_and_polyglots) {
  const std::string payload = P2("cos\nsystem\n(S'id'\ntR.");
  // A zip whose local header renames data.pkl; torch reads the directory.
  testing::ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[0].data = payload;
  zip.items[0].local_name = "archive/data.txt";
  const FileReport renamed = Scan(zip.Build());
  BOOST_TEST(renamed.verdict == Verdict::kDangerous, Describe(renamed));
  BOOST_TEST(HasRule(renamed, "CKG-F010"), Describe(renamed));
  // A pickle in an entry with an innocent name and no .pkl extension.
  testing::ZipBuilder hidden{testing::MinimalTorchZip()};
  hidden.items.push_back(testing::ZipItem{"archive/extra/notes", payload});
  BOOST_TEST(Scan(hidden.Build()).verdict == Verdict::kDangerous);
  // Deflated data.pkl.
  testing::ZipBuilder deflated{testing::MinimalTorchZip()};
  deflated.items[0].data = payload;
  deflated.items[0].deflate = true;
  BOOST_TEST(Scan(deflated.Build()).verdict == Verdict::kDangerous);
  // A pickle with a benign torch zip appended: torch runs the pickle.
  const FileReport poly = Scan(payload + testing::BuildZip(testing::MinimalTorchZip()));
  BOOST_TEST(poly.verdict == Verdict::kDangerous, Describe(poly));
  // A gzip-wrapped pickle.
  BOOST_TEST(Scan(testing::Gzip(payload)).verdict == Verdict::kDangerous);
  // A zip inside a zip.
  const std::string inner = testing::BuildZip({testing::ZipItem{"archive/data.pkl", payload}});
  BOOST_TEST(Scan(testing::BuildZip({testing::ZipItem{"bundle/model.pt", inner}})).verdict == Verdict::kDangerous);
}

BOOST_AUTO_TEST_CASE(tensor_data_that_starts_like_a_pickle_is_not_a_finding) {
  // One record in ~16,000 of random float data starts with 0x80 0x02..0x05
  // (PROTO): it is scanned, but its parse error is not a finding.
  testing::ZipBuilder zip{testing::MinimalTorchZip()};
  zip.items[1].data = std::string("\x80\x02\xff\xfe\x01\x02\x03\x04", 8);
  const FileReport r = Scan(zip.Build());
  BOOST_TEST(r.verdict == Verdict::kSafe, Describe(r));
  // The same record holding a complete payload is found.
  zip.items[1].data = P2("cos\nsystem\n(S'id'\ntR.");
  zip.items[1].data.resize(8 * ((zip.items[1].data.size() + 7) / 8), '\0');
  BOOST_TEST(Scan(zip.Build()).verdict == Verdict::kDangerous);
}

BOOST_AUTO_TEST_CASE(records_that_disagree_with_data_pkl) {
  // The storage size bug class (a record shorter than data.pkl declares):
  // the scan checks every persistent id against its record.
  testing::ZipBuilder short_record{testing::MinimalTorchZip()};
  short_record.items[1].data = std::string(4, '\x01');
  const FileReport r = Scan(short_record.Build());
  BOOST_TEST(r.verdict == Verdict::kSuspicious, Describe(r));
  BOOST_TEST(std::any_of(r.findings.begin(), r.findings.end(),
                         [](const Finding& f) {
                           return f.rule == "CKG-F010" && f.message.starts_with("torch.record_size_mismatch") &&
                                  f.entry == "archive/data/0";
                         }),
             Describe(r));
  testing::ZipBuilder missing{testing::MinimalTorchZip()};
  missing.items.erase(missing.items.begin() + 1);
  const FileReport m = Scan(missing.Build());
  BOOST_TEST(std::any_of(m.findings.begin(), m.findings.end(),
                         [](const Finding& f) { return f.message.starts_with("torch.missing_record"); }),
             Describe(m));
}

BOOST_AUTO_TEST_CASE(not_a_model_file_is_an_error) {
  const FileReport r = Scan("hello, this is text");
  BOOST_TEST(r.verdict == Verdict::kError, Describe(r));
  BOOST_REQUIRE(r.error.has_value());
  const FileReport missing = ScanFile("/nonexistent/x.pt");
  BOOST_TEST(missing.verdict == Verdict::kError);
}

// ---------------------------------------------------------------------------
// Judging calls, not names (issue 14): default deny, pure-data callables,
// names resolved as the unpickler resolves them, nested payloads.

std::string G(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
std::string T(const std::string& items) { return "(" + items + "t"; }
std::string Call(const std::string& fn, const std::string& args) { return fn + T(args) + "R"; }
std::string Bin(const std::string& bytes) {  // SHORT_BINBYTES (protocol 3 opcode; both unpicklers take it)
  return "C" + std::string(1, static_cast<char>(bytes.size())) + bytes;
}

struct PolicyCase {
  std::string name;
  std::string bytes;
  Verdict verdict;
  std::string rule;  // a finding of this rule must be present ("" for none)
};
std::ostream& operator<<(std::ostream& os, const PolicyCase& c) { return os << c.name; }

std::vector<PolicyCase> PolicyCases() {
  const std::string unknown_fn = G("mystery.module", "run");
  return {
      // Referenced only: a pickled object's class, suspicious.
      {"reference_only", P2(unknown_fn + "."), Verdict::kSuspicious, "CKG-P001"},
      {"unknown_call_no_args", P2(Call(unknown_fn, "")), Verdict::kDangerous, "CKG-F080"},
      {"unknown_call_with_code", P2(Call(unknown_fn, U("print(1)"))), Verdict::kDangerous, "CKG-F080"},
      // An Enum member as Python 3.11 pickles it: getattr(EnumClass, 'NAME').
      {"enum_by_getattr", P2(Call(G("builtins", "getattr"), G("mystery.enums", "Color") + U("RED"))),
       Verdict::kSuspicious, "CKG-P001"},
      {"getattr_os_system", P4(Call(Call(G("builtins", "getattr"), U("shutil") + U("os") + "\x93" + U("system")),
                                    U("id"))),
       Verdict::kDangerous, "CKG-D001"},
      {"getattr_computed_name",
       P2(Call(G("builtins", "getattr"), G("mystery", "Thing") + Call(G("builtins", "str"), U("x")))),
       Verdict::kDangerous, "CKG-F083"},
      {"getattr_member_of_data_class", P2(Call(G("builtins", "getattr"), G("pathlib", "PosixPath") + U("write_text"))),
       Verdict::kDangerous, "CKG-D059"},
      // Pure-data constructors.
      {"posix_path", P2(Call(G("pathlib", "PosixPath"), U("/data") + U("train"))), Verdict::kSuspicious, "CKG-P002"},
      {"defaultdict_of_list", P2(Call(G("collections", "defaultdict"), G("__builtin__", "list"))),
       Verdict::kSuspicious, "CKG-P002"},
      {"defaultdict_of_unknown", P2(Call(G("collections", "defaultdict"), unknown_fn)), Verdict::kDangerous,
       "CKG-F081"},
      {"partial_of_class_never_called", P2(Call(G("functools", "partial"), G("torch.optim.adam", "Adam"))),
       Verdict::kSuspicious, "CKG-P002"},
      {"partial_then_called", P2(Call(Call(G("functools", "partial"), unknown_fn), U("x"))), Verdict::kDangerous,
       "CKG-F002"},
      {"reconstructor_plain_object",
       P2(Call(G("copy_reg", "_reconstructor"), G("mystery", "Config") + G("__builtin__", "object") + "N") +
          "}b."),
       Verdict::kSuspicious, "CKG-F050"},
      {"reconstructor_unknown_base",
       P2(Call(G("copy_reg", "_reconstructor"), G("mystery", "Config") + G("mystery", "Base") + U("x")) + "."),
       Verdict::kDangerous, "CKG-F080"},
      // Instances: NEWOBJ with no arguments and a dict state is a pickled
      // object; a non-dict state runs the class's __setstate__.
      {"newobj_dict_state", P2(G("mystery", "Config") + ")\x81}b."), Verdict::kSuspicious, "CKG-F050"},
      {"newobj_tuple_state", P2(G("mystery", "Config") + ")\x81" + T(U("x")) + "b."), Verdict::kDangerous,
       "CKG-F080"},
      {"newobj_with_args", P2(G("mystery", "Config") + T(U("x")) + "\x81."), Verdict::kDangerous, "CKG-F080"},
      {"newobj_ex_with_kwargs", P4(G("mystery", "Config") + ")}" + U("k") + U("v") + "s\x92."), Verdict::kDangerous,
       "CKG-F080"},
      {"obj_function_no_args", P2("(" + unknown_fn + "o."), Verdict::kDangerous, "CKG-F080"},
      {"obj_class_no_args", P2("(" + G("mystery", "Config") + "o."), Verdict::kSuspicious, "CKG-F050"},
      {"instance_handed_to_constructor", P2(Call(G("builtins", "list"), G("mystery", "Config") + ")\x81")),
       Verdict::kDangerous, "CKG-F081"},
      // Callees that call their arguments.
      {"map_of_unknown", P2(Call(G("builtins", "list"), Call(G("builtins", "map"), unknown_fn + "]"))),
       Verdict::kDangerous, "CKG-F084"},
      {"copy_reconstruct", P2(Call(G("copy", "_reconstruct"), "NN" + unknown_fn + ")")), Verdict::kDangerous,
       "CKG-F084"},
      // Names as the unpickler resolves them.
      {"compat_cpickle", P2(Call(G("cPickle", "loads"), U("x"))), Verdict::kDangerous, "CKG-D033"},
      {"compat_dumbdbm", P2(Call(G("dumbdbm", "open"), U("/tmp/x"))), Verdict::kDangerous, "CKG-D034"},
      {"compat_userdict_reference", P2(G("UserDict", "UserDict") + "."), Verdict::kSuspicious, "CKG-P001"},
      {"private_module_alias", P4(U("random") + U("_os.system") + "\x93" + U("id") + "\x85R."), Verdict::kDangerous,
       "CKG-D001"},
      {"dunder_string", P2(Call(G("pathlib", "PosixPath"), U("__globals__"))), Verdict::kDangerous, "CKG-F082"},
      // Nested payloads and side files.
      // A loader whose whole input is its one literal argument runs exactly
      // what it holds (CKG-F062): plain pickle.dumps(tensor) writes
      // _load_from_bytes(<torch.save of the storage>). Any other use of a
      // loader is judged by its rule.
      {"loader_on_literal_benign", P2(Call(G("pickle", "loads"), Bin(P2("K\x01.")))), Verdict::kSuspicious, "CKG-F062"},
      {"load_from_bytes_benign", P2(Call(G("torch.storage", "_load_from_bytes"), Bin(P2("N.")))), Verdict::kSuspicious,
       "CKG-F062"},
      {"stream_loader_on_literal_benign",
       P2(Call(G("torch", "load"), Call(G("_io", "BytesIO"), Bin(P2("N."))))), Verdict::kSuspicious, "CKG-F062"},
      {"loader_on_literal_payload", P2(Call(G("pickle", "loads"), Bin(P2(Call(G("os", "system"), U("id")))))),
       Verdict::kDangerous, "CKG-D001"},
      {"loader_with_two_arguments", P2(Call(G("torch", "load"), Call(G("_io", "BytesIO"), Bin(P2("N."))) + U("cpu"))),
       Verdict::kDangerous, "CKG-D038"},
      {"loader_on_a_computed_value", P2(Call(G("torch", "load"), Call(G("mystery", "make"), ""))), Verdict::kDangerous,
       "CKG-D038"},
      {"loader_unlisted_on_a_computed_value", P2(Call(G("numpy", "loads"), Call(G("mystery", "make"), ""))),
       Verdict::kDangerous, "CKG-F080"},
      {"loader_built_as_object", P2(G("pickle", "loads") + T(Bin(P2("N."))) + "\x81"), Verdict::kDangerous, "CKG-D033"},
      {"loader_handed_to_a_constructor",
       P2(Call(G("collections", "defaultdict"), G("pickle", "loads"))), Verdict::kDangerous, "CKG-D033"},
      {"loader_bound_in_a_partial", P2(Call(G("functools", "partial"), G("pickle", "loads") + Bin(P2("N.")))),
       Verdict::kDangerous, "CKG-D033"},
      {"side_file", P2(Call(G("torch", "load"), U("weights.pt"))), Verdict::kDangerous, "CKG-F061"},
      {"side_file_opened", P2(Call(G("pickle", "load"), Call(G("builtins", "open"), U("x.pkl") + U("rb")))),
       Verdict::kDangerous, "CKG-F061"},
  };
}

BOOST_DATA_TEST_CASE(calls_are_judged_not_names, bdata::make(PolicyCases()), c) {
  const FileReport r = Scan(c.bytes);
  BOOST_TEST(r.verdict == c.verdict, Describe(r));
  if (!c.rule.empty()) BOOST_TEST(HasRule(r, c.rule), Describe(r));
}

// A functools.partial of a data constructor is a pure call only while
// nothing it holds can change: an empty dict, list or record it holds may
// later get only data; anything else put there (by SETITEM, APPEND or BUILD)
// is what the constructor meets when the partial runs, as a defaultdict's
// factory (CKG-F081). Memo 0 is the held value, memo 1 the defaultdict.
std::string Put(int i) { return std::string("q") + static_cast<char>(i); }  // BINPUT
std::string Get(int i) { return std::string("h") + static_cast<char>(i); }  // BINGET

std::vector<PolicyCase> PurePartialCases() {
  const std::string partial = G("functools", "partial");
  const std::string defaultdict = G("collections", "defaultdict");
  const std::string dict = G("builtins", "dict");
  const std::string hostile = Call(partial, G("mailbox", "mbox") + U("/tmp/x"));
  const std::string one = "K\x01";
  // (The scan's first value of a pickle, id 0, is never held: past
  // max_values every value is that one. The bodies begin with another.)
  auto held = [&](const std::string& value, const std::string& fn) {  // value; defaultdict(partial(fn, value))
    return dict + "0" + value + Put(0) + "0" + Call(defaultdict, Call(partial, fn + Get(0))) + Put(1) + "0";
  };
  // partial(dict), BUILD (dict, (), {} as memo 0, None): the C pickler's form.
  const std::string keywords_held =
      dict + "0" + Call(defaultdict, Call(partial, dict) + T(dict + ")}" + Put(0) + "N") + "b") + Put(1) + "0";
  return {
      {"empty_dict_never_changed", P2(held("}", dict) + "N."), Verdict::kSuspicious, "CKG-P002"},
      {"empty_dict_given_data", P2(held("}", dict) + Get(0) + U("a") + T(one + U("b")) + "s0N."),
       Verdict::kSuspicious, "CKG-P002"},
      {"empty_dict_given_a_partial", P2(held("}", dict) + Get(0) + U("a") + hostile + "s0N."), Verdict::kDangerous,
       "CKG-F081"},
      {"empty_list_given_an_empty_dict_then_a_partial",
       P2(held("]", dict) + "}" + Put(2) + "0" + Get(0) + Get(2) + "a0" + Get(2) + U("a") + hostile + "s0N."),
       Verdict::kDangerous, "CKG-F081"},
      {"empty_record_given_attributes",
       P2(held(Call(G("types", "SimpleNamespace"), ""), dict) + Get(0) + "}" + U("keys") + hostile + "sb0N."),
       Verdict::kDangerous, "CKG-F081"},
      {"empty_defaultdict_given_a_factory",
       P2(held(Call(defaultdict, ""), G("numpy", "dtype")) + Get(0) + T("N}" + U("default_factory") + hostile + "s") +
          "b0N."),
       Verdict::kDangerous, "CKG-F081"},
      {"keywords_never_changed", P2(keywords_held + "N."), Verdict::kSuspicious, "CKG-P002"},
      {"keywords_given_a_partial", P2(keywords_held + Get(0) + U("k") + hostile + "s0N."), Verdict::kDangerous,
       "CKG-F081"},
      // Held values whose inside the scan does not keep are not pure: the
      // factory is a callable value.
      {"filled_dict_is_not_pure", P2(held("}" + U("a") + one + "s", dict) + "N."), Verdict::kDangerous, "CKG-F081"},
      {"tuples_nested_too_deep_are_not_pure", P2(held(T(T(T(T(T(one))))), dict) + "N."), Verdict::kDangerous,
       "CKG-F081"},
      {"tuples_of_data_are_pure", P2(held(T(T(one + one) + G("builtins", "list")), dict) + "N."),
       Verdict::kSuspicious, "CKG-P002"},
  };
}

BOOST_DATA_TEST_CASE(pure_partials_stay_pure_only_while_what_they_hold_stays_data, bdata::make(PurePartialCases()),
                     c) {
  const FileReport r = Scan(c.bytes);
  BOOST_TEST(r.verdict == c.verdict, Describe(r));
  if (!c.rule.empty()) BOOST_TEST(HasRule(r, c.rule), Describe(r));
}

BOOST_AUTO_TEST_CASE(encoded_nested_pickles_are_decoded_and_scanned) {
  // pickle.loads(zlib.decompress(base64.b64decode('...'))) of a pickle that
  // calls an unknown function: the inner call is found in the nested entry.
  const std::string inner = P2(Call(G("mystery.module", "run"), U("x")));
  uLongf len = compressBound(inner.size());
  std::string packed(len, '\0');
  BOOST_REQUIRE(compress(reinterpret_cast<Bytef*>(packed.data()), &len,
                         reinterpret_cast<const Bytef*>(inner.data()), inner.size()) == Z_OK);
  packed.resize(len);
  static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string text;
  for (size_t i = 0; i < packed.size(); i += 3) {
    uint32_t v = static_cast<uint8_t>(packed[i]) << 16;
    if (i + 1 < packed.size()) v |= static_cast<uint8_t>(packed[i + 1]) << 8;
    if (i + 2 < packed.size()) v |= static_cast<uint8_t>(packed[i + 2]);
    text += kB64[(v >> 18) & 63];
    text += kB64[(v >> 12) & 63];
    text += i + 1 < packed.size() ? kB64[(v >> 6) & 63] : '=';
    text += i + 2 < packed.size() ? kB64[v & 63] : '=';
  }
  const std::string decoded = Call(G("zlib", "decompress"), Call(G("base64", "b64decode"), U(text)));
  const FileReport r = Scan(P2(Call(G("pickle", "loads"), decoded)));
  BOOST_TEST(r.verdict == Verdict::kDangerous, Describe(r));
  BOOST_TEST(HasRule(r, "CKG-F062", "pickle.loads"), Describe(r));
  BOOST_TEST(std::any_of(r.findings.begin(), r.findings.end(),
                         [](const Finding& f) {
                           return f.rule == "CKG-F080" && f.global == "mystery.module.run" &&
                                  f.entry.find("pickle.loads@") != std::string::npos;
                         }),
             Describe(r));
}

BOOST_AUTO_TEST_CASE(no_payload_ever_ran) {
  for (const auto& e : std::filesystem::directory_iterator("/tmp")) {
    BOOST_TEST(!e.path().filename().string().starts_with("ckptguard-pwned-"), e.path());
  }
}

}  // namespace
}  // namespace ckptguard::scanner
