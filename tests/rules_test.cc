// RuleSet: the built-in allowlist and denylist, dotted-name checks, the
// strict policy, --allow and user rule files.
#define BOOST_TEST_MODULE rules_test
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "ckptguard/scanner/rules.h"
#include "print_types.h"
#include "expect_util.h"
#include "test_util.h"

namespace ckptguard::scanner {

inline std::ostream& boost_test_print_type(std::ostream& os, Severity severity) { return os << SeverityName(severity); }
inline std::ostream& boost_test_print_type(std::ostream& os, GlobalClass::Kind kind) {
  switch (kind) {
    case GlobalClass::kAllowed: return os << "allowed";
    case GlobalClass::kDenied: return os << "denied";
    case GlobalClass::kUnknown: return os << "unknown";
  }
  return os << "?";
}

namespace {

namespace bdata = boost::unit_test::data;
using nlohmann::json;

using testing::Why;

// Split cuts "module.name" at its last dot, as GLOBAL spells most names.
std::pair<std::string, std::string> Split(const std::string& dotted) {
  const size_t dot = dotted.rfind('.');
  return {dotted.substr(0, dot), dotted.substr(dot + 1)};
}

GlobalClass Classify(const RuleSet& rules, const std::string& dotted) {
  auto [module, name] = Split(dotted);
  return rules.ClassifyGlobal(module, name);
}

std::string RuleId(const GlobalClass& cls) { return cls.rule != nullptr ? cls.rule->id : "(none)"; }

struct ManifestGlobal {
  std::string global;
  std::string verdict;  // of the file that names it
};
std::ostream& operator<<(std::ostream& os, const ManifestGlobal& g) { return os << g.global << " (" << g.verdict << ")"; }

std::vector<ManifestGlobal> ManifestGlobals() {
  std::vector<ManifestGlobal> out;
  std::istringstream lines(testing::ReadFile(testing::CorpusDir() / "malicious" / "manifest.jsonl"));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    const json entry = json::parse(line);
    for (const json& g : entry.at("globals")) out.push_back({g.get<std::string>(), entry.at("verdict").get<std::string>()});
  }
  return out;
}

std::vector<std::string> AllowlistGlobals() {
  std::vector<std::string> out;
  for (const auto& [key, entry] : BuiltinAllowlist().entries()) out.push_back(key);
  return out;
}

// rules/callables.toml and rules/pickle_names.toml are built in and parse;
// Python-2 names resolve as CPython's _compat_pickle maps them.
BOOST_AUTO_TEST_CASE(builtin_callables_and_names_parse) {
  const Status ok = CheckBuiltinNames();
  BOOST_TEST(ok.has_value(), (ok ? "" : ok.error().ToString()));
  const RuleSet& rules = RuleSet::Builtin();
  BOOST_TEST(rules.ResolveName("__builtin__", "eval").first == "builtins");
  BOOST_TEST(rules.ResolveName("cPickle", "loads").first == "pickle");
  BOOST_TEST((rules.ResolveName("__builtin__", "xrange") == std::pair<std::string, std::string>("builtins", "range")));
  BOOST_TEST((rules.ResolveName("UserDict", "UserDict") ==
              std::pair<std::string, std::string>("collections", "UserDict")));
  BOOST_REQUIRE(rules.FindCallable("pathlib.PosixPath") != nullptr);
  BOOST_TEST((rules.FindCallable("pathlib.PosixPath")->kind == CallableKind::kConstructor));
  BOOST_TEST((rules.FindCallable("builtins.map")->kind == CallableKind::kCaller));
  // Class wildcards take one capitalised name only.
  BOOST_TEST(rules.FindCallable("torch.optim.Adam") != nullptr);
  BOOST_TEST(rules.FindCallable("torch.optim.os") == nullptr);
  BOOST_TEST(rules.FindCallable("torch.optim.Adam.step") == nullptr);
  BOOST_TEST(rules.FindCallable("os.system") == nullptr);
  // A module alias in a dotted name: "tempfile" + "_os.system" reaches os.
  BOOST_TEST(RuleId(rules.ClassifyGlobal("random", "_os.system")) == "CKG-D001");
  BOOST_TEST(RuleId(rules.ClassifyGlobal("argparse", "_os.system")) == "CKG-D001");
}

// The built-in denylist's patterns are not compiled at start-up (only when a
// global first reaches them): here each compiles on its own and as a set.
BOOST_AUTO_TEST_CASE(builtin_rule_patterns_compile) {
  const Status ok = CheckBuiltinRules();
  BOOST_TEST(ok.has_value(), (ok ? "" : ok.error().ToString()));
}

BOOST_AUTO_TEST_CASE(builtin_rules_parse_and_are_distinct) {
  const RuleSet& rules = RuleSet::Builtin();
  BOOST_REQUIRE_GE(rules.rules().size(), 60u);
  std::set<std::string> ids, descriptions, references;
  size_t globals = 0;
  for (const Rule& rule : rules.rules()) {
    BOOST_TEST_CONTEXT("rule " << rule.id) {
      BOOST_TEST(ids.insert(rule.id).second, "duplicate id");
      BOOST_TEST(descriptions.insert(rule.description).second, "duplicate description");
      BOOST_TEST(references.insert(rule.reference).second, "duplicate reference");
      BOOST_TEST(!rule.description.empty());
      BOOST_TEST(!rule.reference.empty());
      if (rule.id.starts_with("CKG-D")) {
        ++globals;
        BOOST_TEST(!rule.pattern.empty());
      } else {
        BOOST_TEST(rule.pattern.empty(), "fixed rules have no pattern");
      }
    }
  }
  BOOST_TEST(globals >= 50u);
  // Global rules are numbered CKG-D001.. in file order, without gaps.
  size_t n = 0;
  for (const Rule& rule : rules.rules()) {
    if (!rule.id.starts_with("CKG-D")) continue;
    char want[16];
    std::snprintf(want, sizeof want, "CKG-D%03zu", ++n);
    BOOST_TEST(rule.id == want);
  }
}

// Every fixed id the scanner emits exists with its severity.
BOOST_AUTO_TEST_CASE(fixed_rules_exist) {
  const RuleSet& rules = RuleSet::Builtin();
  const std::vector<std::pair<std::string, Severity>> fixed = {
      {"CKG-P001", Severity::kSuspicious}, {"CKG-F001", Severity::kDangerous},  {"CKG-F002", Severity::kDangerous},
      {"CKG-F003", Severity::kDangerous},  {"CKG-F010", Severity::kSuspicious}, {"CKG-F011", Severity::kDangerous},
      {"CKG-F020", Severity::kSuspicious}, {"CKG-F030", Severity::kSuspicious}, {"CKG-F040", Severity::kSuspicious},
      {"CKG-F041", Severity::kDangerous},  {"CKG-F050", Severity::kSuspicious}, {"CKG-F060", Severity::kDangerous},
      {"CKG-F062", Severity::kSuspicious}, {"CKG-F070", Severity::kSuspicious}, {"CKG-P002", Severity::kSuspicious},
      {"CKG-F061", Severity::kDangerous},
      {"CKG-F080", Severity::kDangerous},  {"CKG-F081", Severity::kDangerous},  {"CKG-F082", Severity::kDangerous},
      {"CKG-F083", Severity::kDangerous},  {"CKG-F084", Severity::kDangerous},
  };
  for (const auto& [id, severity] : fixed) {
    BOOST_TEST_CONTEXT(id) {
      const Rule& rule = rules.FixedRule(id);
      BOOST_TEST(rule.id == id);
      BOOST_TEST(rule.severity == severity);
      BOOST_TEST(!rule.description.empty());
      BOOST_TEST(!rule.reference.empty());
      BOOST_TEST(rule.pattern.empty());
    }
  }
  BOOST_TEST(rules.FixedRule("CKG-F999").id == "CKG-UNKNOWN");
}

BOOST_DATA_TEST_CASE(corpus_globals_are_denied, bdata::make(ManifestGlobals()), g) {
  const GlobalClass cls = Classify(RuleSet::Builtin(), g.global);
  if (g.verdict == "dangerous") {
    BOOST_TEST(cls.kind == GlobalClass::kDenied);
    BOOST_TEST(cls.severity == Severity::kDangerous);
    BOOST_TEST(RuleId(cls).starts_with("CKG-D"), RuleId(cls));
  } else {
    // argparse.Namespace and the like: not code, not weights (threats.md §6).
    BOOST_TEST(g.verdict == "suspicious");
    BOOST_TEST(cls.kind == GlobalClass::kUnknown);
    BOOST_TEST(cls.severity == Severity::kSuspicious);
    BOOST_TEST(RuleId(cls) == "CKG-P001");
  }
}

BOOST_DATA_TEST_CASE(allowlist_globals_are_allowed, bdata::make(AllowlistGlobals()), global) {
  const GlobalClass cls = Classify(RuleSet::Builtin(), global);
  BOOST_TEST(cls.kind == GlobalClass::kAllowed, RuleId(cls) << " matched " << cls.matched);
  BOOST_TEST(cls.rule == nullptr);
}

struct Case {
  std::string module;
  std::string name;
  GlobalClass::Kind kind;
  std::string rule;     // expected rule id ("" when allowed)
  std::string matched;  // expected matched name ("" to skip)
};
std::ostream& operator<<(std::ostream& os, const Case& c) { return os << c.module << " + " << c.name; }

// threats.md §1 and §2: names under another spelling, dotted names reaching
// other modules, submodules, Python 2 spellings.
const Case kCases[] = {
    {"os", "system", GlobalClass::kDenied, "CKG-D001", "os.system"},
    {"torch", "os.system", GlobalClass::kDenied, "CKG-D001", "os.system"},
    {"pathlib", "os.system", GlobalClass::kDenied, "CKG-D001", "os.system"},
    {"torch.nn", "modules.os.popen", GlobalClass::kDenied, "CKG-D001", "os.popen"},
    {"os.path", "join", GlobalClass::kDenied, "CKG-D001", "os.path.join"},
    {"posix", "system", GlobalClass::kDenied, "CKG-D001", "posix.system"},
    {"nt", "spawnv", GlobalClass::kDenied, "CKG-D001", "nt.spawnv"},
    {"builtins", "print.__class__.__base__.__subclasses__", GlobalClass::kDenied, "CKG-D014",
     "builtins.print.__class__.__base__.__subclasses__"},
    {"builtins", "eval", GlobalClass::kDenied, "CKG-D010", "builtins.eval"},
    {"__builtin__", "eval", GlobalClass::kDenied, "CKG-D010", "builtins.eval"},
    {"__builtin__", "getattr", GlobalClass::kDenied, "CKG-D011", "builtins.getattr"},
    {"builtins", "open", GlobalClass::kDenied, "CKG-D012", "builtins.open"},
    {"asyncio", "unix_events._UnixSelectorEventLoop", GlobalClass::kDenied, "CKG-D066", "asyncio.unix_events._UnixSelectorEventLoop"},
    {"asyncio.unix_events", "_UnixSelectorEventLoop", GlobalClass::kDenied, "CKG-D066", "asyncio.unix_events._UnixSelectorEventLoop"},
    {"copy_reg", "_reconstructor", GlobalClass::kUnknown, "CKG-P001", "copyreg._reconstructor"},
    {"copy_reg", "add_extension", GlobalClass::kDenied, "CKG-D030", "copyreg.add_extension"},
    {"copyreg", "add_extension", GlobalClass::kDenied, "CKG-D030", "copyreg.add_extension"},
    {"subprocess", "Popen", GlobalClass::kDenied, "CKG-D002", "subprocess.Popen"},
    {"runpy", "_run_code", GlobalClass::kDenied, "CKG-D015", "runpy._run_code"},
    {"timeit", "timeit", GlobalClass::kDenied, "CKG-D017", "timeit.timeit"},
    {"cProfile", "run", GlobalClass::kDenied, "CKG-D018", "cProfile.run"},
    {"bdb", "Bdb.run", GlobalClass::kDenied, "CKG-D019", "bdb.Bdb.run"},
    {"code", "InteractiveInterpreter.runsource", GlobalClass::kDenied, "CKG-D016", "code.InteractiveInterpreter.runsource"},
    {"pydoc", "pipepager", GlobalClass::kDenied, "CKG-D021", "pydoc.pipepager"},
    {"uuid", "_get_command_stdout", GlobalClass::kDenied, "CKG-D005", "uuid._get_command_stdout"},
    {"uuid", "uuid4", GlobalClass::kUnknown, "CKG-P001", "uuid.uuid4"},
    {"_operator", "attrgetter", GlobalClass::kDenied, "CKG-D028", "_operator.attrgetter"},
    {"operator", "methodcaller", GlobalClass::kDenied, "CKG-D028", "operator.methodcaller"},
    {"functools", "partial", GlobalClass::kDenied, "CKG-D029", "functools.partial"},
    {"types", "CodeType", GlobalClass::kDenied, "CKG-D022", "types.CodeType"},
    {"marshal", "loads", GlobalClass::kDenied, "CKG-D022", "marshal.loads"},
    {"cloudpickle.cloudpickle", "_make_function", GlobalClass::kDenied, "CKG-D033", "cloudpickle.cloudpickle._make_function"},
    {"_pickle", "loads", GlobalClass::kDenied, "CKG-D033", "_pickle.loads"},
    {"torch", "load", GlobalClass::kDenied, "CKG-D038", "torch.load"},
    {"torch.serialization", "load", GlobalClass::kDenied, "CKG-D038", "torch.serialization.load"},
    {"torch.serialization", "_get_layout", GlobalClass::kAllowed, "", ""},
    {"torch.storage", "_load_from_bytes", GlobalClass::kDenied, "CKG-D039", "torch.storage._load_from_bytes"},
    {"torch.utils.collect_env", "run", GlobalClass::kDenied, "CKG-D042", "torch.utils.collect_env.run"},
    {"torch._inductor.codecache", "compile_file", GlobalClass::kDenied, "CKG-D043", "torch._inductor.codecache.compile_file"},
    {"torch.jit.unsupported_tensor_ops", "execWrapper", GlobalClass::kDenied, "CKG-D044", "torch.jit.unsupported_tensor_ops.execWrapper"},
    {"torch", "UntypedStorage.from_file", GlobalClass::kDenied, "CKG-D041", "torch.UntypedStorage.from_file"},
    {"numpy.testing._private.utils", "runstring", GlobalClass::kDenied, "CKG-D050", "numpy.testing._private.utils.runstring"},
    {"numpy.f2py", "compile", GlobalClass::kDenied, "CKG-D051", "numpy.f2py.compile"},
    {"numpy", "load", GlobalClass::kDenied, "CKG-D052", "numpy.load"},
    {"numpy.core.multiarray", "_reconstruct", GlobalClass::kUnknown, "CKG-P001", "numpy.core.multiarray._reconstruct"},
    {"io", "FileIO", GlobalClass::kDenied, "CKG-D054", "io.FileIO"},
    {"_io", "FileIO", GlobalClass::kDenied, "CKG-D054", "_io.FileIO"},
    {"io", "BytesIO", GlobalClass::kUnknown, "CKG-P001", "io.BytesIO"},
    {"logging", "FileHandler", GlobalClass::kDenied, "CKG-D056", "logging.FileHandler"},
    {"shutil", "rmtree", GlobalClass::kDenied, "CKG-D057", "shutil.rmtree"},
    {"pathlib", "PosixPath", GlobalClass::kUnknown, "CKG-P001", "pathlib.PosixPath"},
    {"pathlib", "Path.write_text", GlobalClass::kDenied, "CKG-D059", "pathlib.Path.write_text"},
    {"urllib.request", "urlopen", GlobalClass::kDenied, "CKG-D062", "urllib.request.urlopen"},
    {"ssl", "get_server_certificate", GlobalClass::kDenied, "CKG-D063", "ssl.get_server_certificate"},
    {"telnetlib", "Telnet", GlobalClass::kDenied, "CKG-D064", "telnetlib.Telnet"},
    {"imaplib", "IMAP4_stream", GlobalClass::kDenied, "CKG-D064", "imaplib.IMAP4_stream"},
    {"sys", "modules", GlobalClass::kDenied, "CKG-D009", "sys.modules"},
    {"ctypes", "CDLL", GlobalClass::kDenied, "CKG-D007", "ctypes.CDLL"},
    {"pty", "spawn", GlobalClass::kDenied, "CKG-D003", "pty.spawn"},
    {"pkgutil", "resolve_name", GlobalClass::kDenied, "CKG-D026", "pkgutil.resolve_name"},
    {"ensurepip", "_run_pip", GlobalClass::kDenied, "CKG-D027", "ensurepip._run_pip"},
    {"_osx_support", "_read_output", GlobalClass::kDenied, "CKG-D006", "_osx_support._read_output"},
    {"threading", "Thread", GlobalClass::kDenied, "CKG-D031", "threading.Thread"},
    {"argparse", "Namespace", GlobalClass::kUnknown, "CKG-P001", "argparse.Namespace"},
    {"collections", "OrderedDict", GlobalClass::kAllowed, "", ""},
    {"torch._utils", "_rebuild_tensor_v2", GlobalClass::kAllowed, "", ""},
    // Protocol 4 spelling of an allowed name: the allowlist key is the whole dotted name.
    {"torch", "_utils._rebuild_tensor_v2", GlobalClass::kAllowed, "", ""},
    // A name reached through an allowed class is not the allowed class.
    {"torch", "Size.__class__", GlobalClass::kDenied, "CKG-D014", "torch.Size.__class__"},
    // Bytes that are not UTF-8, and newlines, do not hide a name (patterns match bytes).
    {"os", "system\xff", GlobalClass::kDenied, "CKG-D001", "os.system\xff"},
    {"torch", "os.sys\ntem", GlobalClass::kDenied, "CKG-D001", "os.sys\ntem"},
    // ... but a component Python cannot resolve is not the module: getattr(torch, "os\n") fails.
    {"torch", "os\n.system", GlobalClass::kUnknown, "CKG-P001", "torch.os\n.system"},
};

BOOST_DATA_TEST_CASE(dotted_names, bdata::make(kCases), c) {
  const GlobalClass cls = RuleSet::Builtin().ClassifyGlobal(c.module, c.name);
  BOOST_TEST(cls.kind == c.kind, RuleId(cls) << " matched '" << cls.matched << "'");
  if (c.kind == GlobalClass::kAllowed) return;
  BOOST_TEST(RuleId(cls) == c.rule);
  if (!c.matched.empty()) BOOST_TEST(cls.matched == c.matched);
  if (c.kind == GlobalClass::kDenied) BOOST_TEST(cls.severity == cls.rule->severity);
}

// Names too long or too deep to check by components are denied outright.
BOOST_AUTO_TEST_CASE(overlong_names_are_denied) {
  const RuleSet& rules = RuleSet::Builtin();
  std::string deep = "a";
  for (int i = 0; i < 40; ++i) deep += ".a";
  GlobalClass cls = rules.ClassifyGlobal("mymodule", deep);
  BOOST_TEST(cls.kind == GlobalClass::kDenied);
  BOOST_TEST(RuleId(cls) == "CKG-F041");
  BOOST_TEST(cls.severity == Severity::kDangerous);
  cls = rules.ClassifyGlobal("mymodule", std::string(600, 'x'));
  BOOST_TEST(RuleId(cls) == "CKG-F041");
  // Just under the limits: an ordinary unknown name.
  cls = rules.ClassifyGlobal("a.b.c.d.e.f.g", "h.i.j.k.l.m.n.o.p");
  BOOST_TEST(cls.kind == GlobalClass::kUnknown);
}

BOOST_AUTO_TEST_CASE(unknown_globals_follow_the_policy) {
  RuleSet rules = RuleSet::Builtin();
  GlobalClass cls = rules.ClassifyGlobal("__main__", "MyModel");
  BOOST_TEST(cls.kind == GlobalClass::kUnknown);
  BOOST_TEST(RuleId(cls) == "CKG-P001");
  BOOST_TEST(cls.severity == Severity::kSuspicious);
  BOOST_TEST(cls.matched == "__main__.MyModel");
  BOOST_TEST(!rules.strict());
  rules.SetStrict(true);
  BOOST_TEST(rules.strict());
  cls = rules.ClassifyGlobal("__main__", "MyModel");
  BOOST_TEST(cls.kind == GlobalClass::kUnknown);
  BOOST_TEST(cls.severity == Severity::kDangerous);
  // Strict mode changes nothing for allowed names, and the built-in set is a
  // separate copy.
  BOOST_TEST(rules.ClassifyGlobal("collections", "OrderedDict").kind == GlobalClass::kAllowed);
  BOOST_TEST(!RuleSet::Builtin().strict());
  BOOST_TEST(RuleSet::Builtin().ClassifyGlobal("__main__", "MyModel").severity == Severity::kSuspicious);
}

// An explicit --allow is the user's decision about one exact name: it wins
// over the denylist (as it does over the policy), and allows nothing else.
BOOST_AUTO_TEST_CASE(allow_wins_over_the_denylist_for_that_name_only) {
  RuleSet rules = RuleSet::Builtin();
  rules.Allow("argparse.Namespace");
  rules.Allow("functools.partial");
  rules.Allow("__builtin__.eval");
  BOOST_TEST(rules.ClassifyGlobal("argparse", "Namespace").kind == GlobalClass::kAllowed);
  BOOST_TEST(rules.ClassifyGlobal("functools", "partial").kind == GlobalClass::kAllowed);
  BOOST_TEST(rules.ClassifyGlobal("functools", "reduce").kind == GlobalClass::kDenied);
  BOOST_TEST(rules.ClassifyGlobal("functools", "partial.__call__").kind == GlobalClass::kDenied);
  BOOST_TEST(rules.ClassifyGlobal("argparse", "ArgumentParser").kind == GlobalClass::kUnknown);
  // The Python 2 spelling allows both spellings.
  BOOST_TEST(rules.ClassifyGlobal("__builtin__", "eval").kind == GlobalClass::kAllowed);
  BOOST_TEST(rules.ClassifyGlobal("builtins", "eval").kind == GlobalClass::kAllowed);
  BOOST_TEST(rules.ClassifyGlobal("builtins", "exec").kind == GlobalClass::kDenied);
  // The built-in set is untouched.
  BOOST_TEST(RuleSet::Builtin().ClassifyGlobal("functools", "partial").kind == GlobalClass::kDenied);
}

BOOST_AUTO_TEST_CASE(copies_are_independent) {
  RuleSet a = RuleSet::Builtin();
  RuleSet b = a;
  BOOST_REQUIRE(a.AddRulesText("version = 1\n[[rule]]\nid = \"X-1\"\nseverity = \"dangerous\"\n"
                               "pattern = 'argparse(?:\\..*)?'\ndescription = \"d\"\nreference = \"r\"\n",
                               "a.toml"));
  BOOST_TEST(a.ClassifyGlobal("argparse", "Namespace").kind == GlobalClass::kDenied);
  BOOST_TEST(b.ClassifyGlobal("argparse", "Namespace").kind == GlobalClass::kUnknown);
  b = a;
  const GlobalClass cls = b.ClassifyGlobal("argparse", "Namespace");
  BOOST_TEST(cls.kind == GlobalClass::kDenied);
  BOOST_REQUIRE(cls.rule != nullptr);
  BOOST_TEST(cls.rule == &b.rules().back());  // points into b, not into a
  RuleSet c = std::move(b);
  BOOST_TEST(c.ClassifyGlobal("argparse", "Namespace").kind == GlobalClass::kDenied);
}

const char kUserRules[] = R"(version = 1

[[rule]]
id = "ORG-001"
severity = "dangerous"
pattern = 'transformers\.dynamic_module_utils(?:\..*)?'
description = "remote code"
reference = "internal wiki"

[[rule]]
id = "ORG-002"
severity = "info"
pattern = 'argparse\.Namespace'
description = "hyper-parameters"
reference = "internal wiki, page 2"

[[allow]]
global = "mylib.Config"
action = "unsupported"
why = "our own config class"
)";

BOOST_AUTO_TEST_CASE(user_rules_files_add_rules_and_allow_entries) {
  RuleSet rules = RuleSet::Builtin();
  const size_t before = rules.rules().size();
  testing::TempDir dir;
  const std::string path = dir.Write("org.toml", kUserRules);
  const Status added = rules.AddRulesFile(path);
  BOOST_REQUIRE_MESSAGE(added, Why(added));
  BOOST_TEST(rules.rules().size() == before + 2);
  GlobalClass cls = rules.ClassifyGlobal("transformers.dynamic_module_utils", "get_class_from_dynamic_module");
  BOOST_TEST(cls.kind == GlobalClass::kDenied);
  BOOST_TEST(RuleId(cls) == "ORG-001");
  BOOST_TEST(cls.matched == "transformers.dynamic_module_utils.get_class_from_dynamic_module");
  cls = rules.ClassifyGlobal("argparse", "Namespace");
  BOOST_TEST(RuleId(cls) == "ORG-002");
  BOOST_TEST(cls.severity == Severity::kInfo);
  BOOST_TEST(rules.ClassifyGlobal("mylib", "Config").kind == GlobalClass::kAllowed);
  BOOST_TEST(rules.allowlist().Find("mylib", "Config") != nullptr);
  // Built-in rules come first in file order, so they still win.
  BOOST_TEST(RuleId(rules.ClassifyGlobal("os", "system")) == "CKG-D001");
  // The same file again: every id is a duplicate.
  const Status again = rules.AddRulesFile(path);
  BOOST_REQUIRE(!again);
  BOOST_TEST(again.error().code == ErrorCode::kMalformed);
  BOOST_TEST(again.error().detail.find(path + ":3: duplicate rule id 'ORG-001'") != std::string::npos, Why(again));
  BOOST_TEST(rules.rules().size() == before + 2);
  // A missing file.
  const Status missing = rules.AddRulesFile(dir.path / "nope.toml");
  BOOST_REQUIRE(!missing);
  BOOST_TEST(missing.error().code == ErrorCode::kIo);
}

struct BadFile {
  std::string text;
  ErrorCode code;
  std::string detail;  // a substring of the error's detail
};
std::ostream& operator<<(std::ostream& os, const BadFile& b) { return os << b.detail; }

const std::string kRuleHead = "version = 1\n\n[[rule]]\n";
const std::string kRuleTail = "description = \"d\"\nreference = \"r\"\n";

const BadFile kBadFiles[] = {
    {kRuleHead + "id = \"CKG-D001\"\nseverity = \"dangerous\"\npattern = 'x'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:3: duplicate rule id 'CKG-D001' (already loaded)"},
    {kRuleHead + "id = \"A\"\nseverity = \"dangerous\"\npattern = 'x'\n" + kRuleTail + "\n[[rule]]\nid = \"A\"\n" +
         "severity = \"info\"\npattern = 'y'\n" + kRuleTail,
     ErrorCode::kMalformed, "user.toml:10: duplicate rule id 'A'"},
    {kRuleHead + "id = \"A\"\nseverity = \"dangerous\"\npattern = 'os(\\..*'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:3: rule A: bad pattern 'os(\\..*': missing ): os(\\..*"},
    {kRuleHead + "id = \"A\"\nseverity = \"critical\"\npattern = 'x'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:3: rule A: unknown severity 'critical'"},
    {kRuleHead + "id = \"A\"\npattern = 'x'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:3: rule A: missing 'severity'"},
    {kRuleHead + "id = \"A\"\nseverity = \"info\"\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:3: rule A: missing 'pattern'"},
    {kRuleHead + "id = \"A\"\nseverity = \"info\"\npattern = 'x'\nreference = \"r\"\n", ErrorCode::kMalformed,
     "user.toml:3: rule A: missing 'description'"},
    {kRuleHead + "id = \"A\"\nseverity = \"info\"\npattern = 'x'\ndescription = \"d\"\n", ErrorCode::kMalformed,
     "user.toml:3: rule A: missing 'reference'"},
    {kRuleHead + "severity = \"info\"\npattern = 'x'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:3: [[rule]] without 'id'"},
    {kRuleHead + "id = \"A B\"\nseverity = \"info\"\npattern = 'x'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:3: rule id 'A B'"},
    {kRuleHead + "id = \"A\"\nseverity = \"info\"\npatern = 'x'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:6: unknown field 'patern'"},
    {kRuleHead + "id = \"A\"\nseverity = 3\npattern = 'x'\n" + kRuleTail, ErrorCode::kMalformed,
     "user.toml:5: 'severity' must be a string"},
    {kRuleHead + "id = \"A\"\nkind = \"magic\"\nseverity = \"info\"\npattern = 'x'\n" + kRuleTail,
     ErrorCode::kMalformed, "user.toml:3: rule A: unknown kind 'magic'"},
    {kRuleHead + "id = \"A\"\nkind = \"fixed\"\nseverity = \"info\"\npattern = 'x'\n" + kRuleTail,
     ErrorCode::kMalformed, "user.toml:3: rule A: a fixed rule has pattern = \"\""},
    {"[[rule]]\nid = \"A\"\n", ErrorCode::kMalformed, "user.toml: expected version = 1"},
    {"version = 1\nrule = 3\n", ErrorCode::kMalformed, "user.toml:2: 'rule' must be an array of tables"},
    {"version = 1\n[[rule]\n", ErrorCode::kMalformed, "user.toml:2: "},
    // [[allow]] entries are checked by the allowlist's parser.
    {"version = 1\n\n[[allow]]\nglobal = \"x.y\"\naction = \"explode\"\n", ErrorCode::kMalformed,
     "user.toml:3: unknown action 'explode'"},
    {"version = 1\n" + std::string(size_t{4} << 20, '#'), ErrorCode::kLimitExceeded, "max_file_len"},
    // Non-ASCII outside strings and comments (TOML forbids it; toml++ 3.3
    // reaches __builtin_unreachable on it: fuzz/regressions/rules/).
    {"version = 1\nx = \xc3\xa9\n", ErrorCode::kMalformed,
     "user.toml:2: a non-ASCII character outside a string or comment"},
    {"version = 1\n\xcf\x8c = 1\n", ErrorCode::kMalformed,
     "user.toml:2: a non-ASCII character outside a string or comment"},
    {kRuleHead + "id = \"A\"\nseverity = \"info\"\npattern = 'x'\ndescription = \"\"\"d\\\n  \xc3\xa9\"\"\"\n"
         "reference = \"r\"\n",
     ErrorCode::kMalformed, "user.toml:8: a non-ASCII character after a backslash in a string"},
    // A quote inside a bare word is not a string start: toml++ would keep
    // scanning the word, and the non-ASCII after it (the hour-long fuzz run's
    // input, fuzz/regressions/rules/toml-quote-inside-bare-value.toml).
    {"version = 1\nmode =444t\"\xcc\x96x\"\n", ErrorCode::kMalformed,
     "user.toml:2: a quote inside a bare key or value (not TOML)"},
    {"version = 1\nmode = \"a\"\"\xc3\xa9\"\n", ErrorCode::kMalformed,
     "user.toml:2: a quote inside a bare key or value (not TOML)"},
};

BOOST_DATA_TEST_CASE(bad_user_files_are_refused_with_file_and_line, bdata::make(kBadFiles), bad) {
  RuleSet rules = RuleSet::Builtin();
  const size_t before = rules.rules().size();
  const Status status = rules.AddRulesText(bad.text, "user.toml");
  BOOST_REQUIRE(!status);
  BOOST_TEST(status.error().code == bad.code);
  BOOST_TEST(status.error().detail.find(bad.detail) != std::string::npos, status.error().detail);
  // Nothing was added.
  BOOST_TEST(rules.rules().size() == before);
}

BOOST_AUTO_TEST_CASE(waivers_in_rules_files_need_a_rule_and_a_reason) {
  RuleSet rules = RuleSet::Builtin();
  BOOST_TEST(rules.waivers().empty());
  const Status added = rules.AddRulesText(R"(version = 1

[[waive]]
rule = "CKG-F080"
path = "legacy/*.pt"
reason = "reviewed: the old exporter's padding"

[[waive]]
rule = "CKG-A*"
reason = "accepted for every file"
)", "gate.toml");
  BOOST_REQUIRE_MESSAGE(added, Why(added));
  BOOST_REQUIRE(rules.waivers().size() == 2u);
  BOOST_TEST(rules.waivers()[0].Text() == "CKG-F080:legacy/*.pt");
  BOOST_TEST(rules.waivers()[0].source == "gate.toml:3");
  BOOST_TEST(rules.waivers()[0].reason == "reviewed: the old exporter's padding");
  BOOST_TEST(rules.waivers()[1].Text() == "CKG-A*");
  BOOST_TEST(rules.waivers()[1].source == "gate.toml:8");
  // A copy keeps them.
  const RuleSet copy = rules;
  BOOST_TEST(copy.waivers().size() == 2u);

  auto refused = [](const std::string& text) {
    RuleSet r = RuleSet::Builtin();
    const Status s = r.AddRulesText(text, "bad.toml");
    BOOST_TEST(r.waivers().empty());
    return s ? std::string("accepted") : s.error().detail;
  };
  BOOST_TEST(refused("version = 1\n[[waive]]\nrule = \"CKG-F080\"\n").find("bad.toml:2: [[waive]] of CKG-F080 without 'reason'") !=
             std::string::npos);
  BOOST_TEST(refused("version = 1\n[[waive]]\nreason = \"x\"\n").find("bad.toml:2: [[waive]] without 'rule'") !=
             std::string::npos);
  BOOST_TEST(refused("version = 1\n[[waive]]\nrule = \"X\"\nreason = \"y\"\nexpires = \"2027\"\n")
                 .find("bad.toml:5: unknown field 'expires' in [[waive]]") != std::string::npos);
  BOOST_TEST(refused("version = 1\n[[waive]]\nrule = 7\nreason = \"y\"\n").find("bad.toml:3: 'rule' must be a string") !=
             std::string::npos);
  BOOST_TEST(refused("version = 1\nwaive = \"CKG-*\"\n").find("'waive' must be an array of tables") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(non_ascii_in_strings_and_comments_is_fine) {
  RuleSet rules = RuleSet::Builtin();
  const Status status = rules.AddRulesText(
      "\xEF\xBB\xBFversion = 1 # caf\xc3\xa9\n[[rule]]\nid = \"U-1\"\nseverity = \"info\"\npattern = 'caf\xc3\xa9'\n"
      "description = \"\"\"na\xc3\xafve \\\"\xc3\xbc\\\" \"\"\"\"\nreference = '''\xc3\xbc'''\n"
      // quotes where TOML allows them: arrays, inline tables, dotted and quoted keys
      "[extra]\nlist = [\"\xc3\xa9\", '\xc3\xa9',\n  \"x\"]\ninline = { \"k\" = \"\xc3\xa9\" }\na.\"b\".c = \"\xc3\xa9\"\n"
      "\"quoted key\" = 1\n",
      "user.toml");
  BOOST_TEST(status.has_value(), (status ? std::string() : status.error().ToString()));
}

BOOST_AUTO_TEST_CASE(rule_count_limit) {
  std::string text = "version = 1\n";
  for (int i = 0; i <= 100'000; ++i) text += "[[rule]]\nid=\"R" + std::to_string(i) + "\"\n";
  BOOST_REQUIRE_LE(text.size(), size_t{4} << 20);
  RuleSet rules = RuleSet::Builtin();
  const Status status = rules.AddRulesText(text, "big.toml");
  BOOST_REQUIRE(!status);
  BOOST_TEST(status.error().code == ErrorCode::kLimitExceeded);
  BOOST_TEST(status.error().detail.find("max_rules") != std::string::npos, status.error().detail);
}

// A user allowlist that replaces the built-in one (and with it the module
// aliases) cannot unhide Python 2 spellings: the patterns know both.
BOOST_AUTO_TEST_CASE(replace_mode_keeps_python2_spellings_denied) {
  RuleSet rules = RuleSet::Builtin();
  const Status added = rules.AddRulesText(
      "version = 1\nmode = \"replace\"\n\n[[allow]]\nglobal = \"collections.OrderedDict\"\naction = \"ordered_dict\"\n",
      "replace.toml");
  BOOST_REQUIRE_MESSAGE(added, Why(added));
  BOOST_TEST(rules.allowlist().module_aliases().empty());
  BOOST_TEST(rules.ClassifyGlobal("collections", "OrderedDict").kind == GlobalClass::kAllowed);
  BOOST_TEST(rules.ClassifyGlobal("torch", "Size").kind == GlobalClass::kUnknown);
  GlobalClass cls = rules.ClassifyGlobal("__builtin__", "eval");
  BOOST_TEST(cls.kind == GlobalClass::kDenied);
  BOOST_TEST(RuleId(cls) == "CKG-D010");
  cls = rules.ClassifyGlobal("copy_reg", "add_extension");
  BOOST_TEST(RuleId(cls) == "CKG-D030");
}

}  // namespace
}  // namespace ckptguard::scanner
