// Reports: the JSON contract field by field, the text layout, and SARIF that
// the official OASIS schema accepts (tests/data/sarif, checked with Debian's
// python3-jsonschema) and that GitHub code scanning can place: relative,
// percent-encoded URIs, a region, rule indexes that point at their rule,
// read errors as toolExecutionNotifications.
#define BOOST_TEST_MODULE report_test
#include <boost/test/unit_test.hpp>
#include <cctype>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "ckptguard/scanner/report.h"
#include "ckptguard/version.h"
#include "test_util.h"

namespace ckptguard::scanner {

namespace {

using nlohmann::json;

Finding MakeFinding(std::string rule, Severity severity, std::string message, std::string entry, uint64_t offset,
                    std::string global) {
  return Finding{std::move(rule), severity, std::move(message), std::move(entry), offset, std::move(global)};
}

FileReport MakeFile(std::string path, std::vector<Finding> findings, std::optional<Error> error = std::nullopt) {
  FileReport file;
  file.path = std::move(path);
  file.format = "torch-zip";
  file.findings = std::move(findings);
  file.error = std::move(error);
  file.verdict = VerdictOf(file.findings, file.error);
  return file;
}

// Rule ids of the sample: two user rules (added by TestRules), the policy
// rule (a fixed rule) and an id no rule set knows.
constexpr char kDangerousRule[] = "TEST-D900";
constexpr char kSuspiciousRule[] = "TEST-S901";
constexpr char kPolicyRule[] = "CKG-P001";
constexpr char kUnknownRule[] = "OTHER-1";

constexpr char kOddPath[] = "models/odd name \xc3\xbc 100%.pt";  // space, "ü", percent sign
constexpr char kAbsolutePath[] = "/abs/dir/x#1.bin";
constexpr char kHostilePath[] = "bad\xff\n\x1b[31m\xe2\x80\xae.pt";  // invalid UTF-8, newline, ESC, U+202E

// Samples: safe, suspicious (odd path), dangerous with several findings,
// an error file, a dangerous file that also errored (absolute path), and a
// suspicious file whose path and entry are hostile.
std::vector<FileReport> Samples() {
  std::vector<FileReport> files;
  files.push_back(MakeFile("models/safe.pt", {}));
  files.push_back(MakeFile(kOddPath, {MakeFinding(kPolicyRule, Severity::kSuspicious,
                                                  "unknown global foo.Bar needs code to load", "odd name/data.pkl", 42,
                                                  "foo.Bar")}));
  files.push_back(MakeFile(
      "models/evil.pt",
      {MakeFinding(kDangerousRule, Severity::kDangerous, "global os.system runs a shell command", "archive/data.pkl", 123,
                   "os.system"),
       MakeFinding(kDangerousRule, Severity::kDangerous, "global builtins.eval runs Python code", "archive/data.pkl", 140,
                   "builtins.eval"),
       MakeFinding(kSuspiciousRule, Severity::kSuspicious, "whole module pickled", "archive/data.pkl", 7, ""),
       MakeFinding(kUnknownRule, Severity::kInfo, "a note on the format", "", 0, "")}));
  files.push_back(MakeFile("broken.pt", {}, Error{ErrorCode::kTruncated, 77, "data.pkl", "operand needs 7 bytes, 3 remain"}));
  files.push_back(MakeFile(kAbsolutePath,
                           {MakeFinding(kDangerousRule, Severity::kDangerous, "global posix.system runs a shell command",
                                        "", 9, "posix.system")},
                           Error{ErrorCode::kMalformed, 200, "", "bad zip entry"}));
  files.push_back(MakeFile(kHostilePath, {MakeFinding(kPolicyRule, Severity::kSuspicious,
                                                      "unknown global \x1b]0;pwn\x07", "e\nntry\xe2\x80\xae", 5,
                                                      "x.\x1b")}));
  return files;
}

// ---------------------------------------------------------------------------
// JSON

BOOST_AUTO_TEST_CASE(json_contract) {
  const std::vector<FileReport> files = Samples();
  const std::string text = ReportJson(files);
  const json doc = json::parse(text);  // invalid UTF-8 was replaced, so this parses
  BOOST_TEST(text.ends_with("}\n"));

  std::vector<std::string> keys;
  for (const auto& [key, value] : doc.items()) keys.push_back(key);
  BOOST_TEST(keys == (std::vector<std::string>{"files", "schema_version", "skipped", "summary", "tool"}),
             boost::test_tools::per_element());
  BOOST_TEST(doc.at("schema_version") == kJsonSchemaVersion);
  BOOST_TEST(doc.at("tool") == (json{{"name", "ckptguard"}, {"version", CKPTGUARD_VERSION}, {"command", "scan"}}));

  BOOST_REQUIRE_EQUAL(doc.at("files").size(), files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    BOOST_TEST_CONTEXT("file " << i) {
      const json& got = doc.at("files").at(i);
      const FileReport& want = files[i];
      std::set<std::string> fields;
      for (const auto& [key, value] : got.items()) fields.insert(key);
      std::set<std::string> expected_fields = {"path", "format", "verdict", "findings"};
      if (want.error) expected_fields.insert("error");
      BOOST_TEST(fields == expected_fields, boost::test_tools::per_element());
      if (i != 5) BOOST_TEST(got.at("path") == want.path);
      BOOST_TEST(got.at("format") == "torch-zip");
      BOOST_TEST(got.at("verdict") == std::string(VerdictName(want.verdict)));
      BOOST_REQUIRE_EQUAL(got.at("findings").size(), want.findings.size());
      for (size_t j = 0; j < want.findings.size(); ++j) {
        const json& f = got.at("findings").at(j);
        const Finding& w = want.findings[j];
        std::set<std::string> finding_fields;
        for (const auto& [key, value] : f.items()) finding_fields.insert(key);
        BOOST_TEST(finding_fields ==
                       (std::set<std::string>{"rule", "severity", "message", "entry", "offset", "global", "help"}),
                   boost::test_tools::per_element());
        // "help" links the rule's docs/rules.md section; "" for rules of others.
        BOOST_TEST(f.at("help") == RuleDocUri(w.rule));
        BOOST_TEST(f.at("rule") == w.rule);
        BOOST_TEST(f.at("severity") == std::string(SeverityName(w.severity)));
        BOOST_TEST(f.at("offset").is_number_unsigned());
        BOOST_TEST(f.at("offset").get<uint64_t>() == w.offset);
        BOOST_TEST(f.at("global").is_string());  // always present, "" when none
        if (i != 5) {
          BOOST_TEST(f.at("message") == w.message);
          BOOST_TEST(f.at("entry") == w.entry);
          BOOST_TEST(f.at("global") == w.global);
        }
      }
    }
  }

  BOOST_TEST(doc.at("files").at(1).at("findings").at(0).at("help") ==
             "https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md#ckg-p001");
  const json& evil = doc.at("files").at(2);
  BOOST_TEST(evil.at("findings").at(0).at("help") == "");  // a user's rule
  BOOST_TEST(evil.at("verdict") == "dangerous");
  BOOST_TEST(evil.at("findings").at(3).at("global") == "");
  BOOST_TEST(evil.at("findings").at(3).at("entry") == "");
  BOOST_TEST(evil.at("findings").at(3).at("severity") == "info");

  const json& broken = doc.at("files").at(3);
  BOOST_TEST(broken.at("verdict") == "error");
  BOOST_TEST(broken.at("error") == (json{{"code", "truncated"},
                                          {"offset", 77},
                                          {"where", "data.pkl"},
                                          {"detail", "operand needs 7 bytes, 3 remain"}}));
  // A dangerous finding is never hidden behind the error.
  BOOST_TEST(doc.at("files").at(4).at("verdict") == "dangerous");
  BOOST_TEST(doc.at("files").at(4).at("error").at("code") == "malformed");
  BOOST_TEST(doc.at("files").at(4).at("error").at("where") == "");

  // Invalid UTF-8 became U+FFFD; control characters survive as escapes.
  BOOST_TEST(doc.at("files").at(5).at("path") == "bad\xef\xbf\xbd\n\x1b[31m\xe2\x80\xae.pt");
  BOOST_TEST(doc.at("files").at(5).at("findings").at(0).at("entry") == "e\nntry\xe2\x80\xae");
  BOOST_TEST(text.find('\x1b') == std::string::npos);
  BOOST_TEST(text.find("\\u001b") != std::string::npos);

  BOOST_TEST(doc.at("summary") ==
             (json{{"files", 6}, {"safe", 1}, {"suspicious", 2}, {"dangerous", 2}, {"error", 1}}));
}

BOOST_AUTO_TEST_CASE(json_empty) {
  const json doc = json::parse(ReportJson({}));
  BOOST_TEST(doc == (json{{"schema_version", kJsonSchemaVersion},
                          {"tool", {{"name", "ckptguard"}, {"version", CKPTGUARD_VERSION}, {"command", "scan"}}},
                          {"files", json::array()},
                          {"skipped", json::array()},
                          {"summary", {{"files", 0}, {"safe", 0}, {"suspicious", 0}, {"dangerous", 0}, {"error", 0}}}}));
}

// ---------------------------------------------------------------------------
// Text

BOOST_AUTO_TEST_CASE(text_layout) {
  std::vector<FileReport> files = Samples();
  files.resize(5);  // the hostile path has its own test
  const std::string expected =
      "models/safe.pt (torch-zip): safe\n"
      "\n"
      "models/odd name \xc3\xbc 100%.pt (torch-zip): suspicious\n"
      "  [suspicious] CKG-P001 at byte 42 (odd name/data.pkl): unknown global foo.Bar needs code to load\n"
      "\n"
      "models/evil.pt (torch-zip): dangerous\n"
      "  [dangerous] TEST-D900 at byte 123 (archive/data.pkl): global os.system runs a shell command\n"
      "  [dangerous] TEST-D900 at byte 140 (archive/data.pkl): global builtins.eval runs Python code\n"
      "  [suspicious] TEST-S901 at byte 7 (archive/data.pkl): whole module pickled\n"
      "  [info] OTHER-1 at byte 0: a note on the format\n"
      "\n"
      "broken.pt (torch-zip): error\n"
      "  error: " + files[3].error->ToString() + "\n"
      "\n"
      "/abs/dir/x#1.bin (torch-zip): dangerous\n"
      "  [dangerous] TEST-D900 at byte 9: global posix.system runs a shell command\n"
      "  error: " + files[4].error->ToString() + "\n"
      "\n"
      "Rule documentation:\n"
      "  CKG-P001: https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md#ckg-p001\n"
      "\n"
      "5 files: 1 safe, 1 suspicious, 2 dangerous, 1 error\n";
  BOOST_TEST(ReportText(files) == expected);
  BOOST_TEST(ReportText(files) == ReportText(files));  // stable
}

BOOST_AUTO_TEST_CASE(text_summary_counts) {
  BOOST_TEST(ReportText({}) == "0 files: 0 safe, 0 suspicious, 0 dangerous, 0 errors\n");
  std::vector<FileReport> files = {MakeFile("a.pt", {}), MakeFile("b.pt", {}, Error{ErrorCode::kIo, 0, "", "x"}),
                                   MakeFile("c.pt", {}, Error{ErrorCode::kIo, 0, "", "y"})};
  const std::string text = ReportText(files);
  BOOST_TEST(text.ends_with("\n3 files: 1 safe, 0 suspicious, 0 dangerous, 2 errors\n"), text);
  files.resize(1);
  BOOST_TEST(ReportText(files).ends_with("\n1 file: 1 safe, 0 suspicious, 0 dangerous, 0 errors\n"));
}

// Names from the file cannot move the cursor, recolour the terminal, start a
// new line or reorder the text: each hostile byte is escaped.
BOOST_AUTO_TEST_CASE(text_escapes_hostile_names) {
  const std::string text = ReportText({Samples()[5]});
  BOOST_TEST(text ==
             "bad\\xFF\\x0A\\x1B[31m\\u{202E}.pt (torch-zip): suspicious\n"
             "  [suspicious] CKG-P001 at byte 5 (e\\x0Antry\\u{202E}): unknown global \\x1B]0;pwn\\x07\n"
             "\n"
             "Rule documentation:\n"
             "  CKG-P001: https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md#ckg-p001\n"
             "\n"
             "1 file: 0 safe, 1 suspicious, 0 dangerous, 0 errors\n");
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    BOOST_TEST((byte == '\n' || (byte >= 0x20 && byte < 0x7f)), "byte " << int{byte});
  }
}

// ---------------------------------------------------------------------------
// SARIF

// TestRules is the built-in rule set plus two rules of our own (one with a
// URL reference, one with a document reference), so the test does not
// depend on what the built-in denylist says.
const RuleSet& TestRules() {
  static const RuleSet rules = [] {
    RuleSet set = RuleSet::Builtin();
    const Status added = set.AddRulesText(R"toml(
version = 1

[[rule]]
id = "TEST-D900"
severity = "dangerous"
pattern = 'reporttest\.run'
description = "Calls reporttest.run, which runs a shell command. Loading the file runs the command."
reference = "docs/threats.md §1; https://example.com/rules#TEST-D900."

[[rule]]
id = "TEST-S901"
severity = "suspicious"
pattern = 'reporttest\.maybe'
description = "A whole module is pickled: loading it needs its code"
reference = "docs/rules.md section TEST-S901"
)toml",
                                           "report_test");
    BOOST_REQUIRE_MESSAGE(added.has_value(), (added ? std::string() : added.error().ToString()));
    return set;
  }();
  return rules;
}

// Validate runs the official schema on `doc`; "" when it is valid, else the
// validator's output.
std::string Validate(const std::string& doc, const testing::TempDir& dir, const std::string& name) {
  const std::string out_path = dir.Write(name, doc);
  const std::string schema = (testing::DataDir() / "sarif" / "sarif-schema-2.1.0.json").string();
  const testing::CommandResult r = testing::Run(
      std::string(CKPTGUARD_PYTHON) +
      " -c 'import json,sys,jsonschema; jsonschema.validate(json.load(open(sys.argv[1])), json.load(open(sys.argv[2])))' " +
      testing::ShellQuote(out_path) + " " + testing::ShellQuote(schema) + " 2>&1");
  if (r.exit_code == 0) return "";
  return "exit " + std::to_string(r.exit_code) + ": " + r.out.substr(0, 2000);
}

std::string_view SarifLevelOf(Severity severity) {
  return severity == Severity::kDangerous ? "error" : severity == Severity::kSuspicious ? "warning" : "note";
}

bool IsCamelCase(const std::string& s) {
  if (s.empty() || !(s[0] >= 'A' && s[0] <= 'Z')) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

// A URI GitHub can use: printable ASCII, no space, no raw '%' that is not an
// escape.
bool IsCleanUri(const std::string& uri) {
  for (size_t i = 0; i < uri.size(); ++i) {
    const auto byte = static_cast<unsigned char>(uri[i]);
    if (byte <= 0x20 || byte >= 0x7f) return false;
    if (byte == '%' && (i + 2 >= uri.size() || !std::isxdigit(static_cast<unsigned char>(uri[i + 1])) ||
                     !std::isxdigit(static_cast<unsigned char>(uri[i + 2])))) return false;
  }
  return true;
}

BOOST_AUTO_TEST_CASE(sarif_validates_against_official_schema) {
  const testing::TempDir dir;
  const std::vector<FileReport> files = Samples();
  BOOST_TEST(Validate(ReportSarif(files, TestRules(), "1.2.3"), dir, "all.sarif") == "");
  BOOST_TEST(Validate(ReportSarif({}, TestRules(), "1.2.3"), dir, "empty.sarif") == "");
  BOOST_TEST(Validate(ReportSarif({files[0], files[2]}, TestRules(), ""), dir, "no-errors.sarif") == "");
}

// The check above can fail: documents that break the schema are refused.
BOOST_AUTO_TEST_CASE(sarif_schema_check_can_fail) {
  const testing::TempDir dir;
  json doc = json::parse(ReportSarif(Samples(), TestRules(), "1.2.3"));
  BOOST_REQUIRE_EQUAL(Validate(doc.dump(), dir, "ok.sarif"), "");

  json bad_level = doc;
  bad_level["runs"][0]["results"][0]["level"] = "fatal";
  BOOST_TEST(Validate(bad_level.dump(), dir, "bad-level.sarif") != "");

  json no_version = doc;
  no_version.erase("version");
  BOOST_TEST(Validate(no_version.dump(), dir, "no-version.sarif") != "");

  json negative_region = doc;
  negative_region["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["byteLength"] = -1;
  BOOST_TEST(Validate(negative_region.dump(), dir, "negative-region.sarif") != "");

  json rule_without_id = doc;
  rule_without_id["runs"][0]["tool"]["driver"]["rules"][0].erase("id");
  BOOST_TEST(Validate(rule_without_id.dump(), dir, "rule-without-id.sarif") != "");

  BOOST_TEST(Validate("{\"version\": \"2.1.0\", \"runs\": [", dir, "truncated.sarif") != "");
}

BOOST_AUTO_TEST_CASE(sarif_contents) {
  const std::vector<FileReport> files = Samples();
  const std::string text = ReportSarif(files, TestRules(), "1.2.3");
  const json doc = json::parse(text);
  BOOST_TEST(doc.at("version") == "2.1.0");
  BOOST_TEST(doc.at("$schema") == "https://json.schemastore.org/sarif-2.1.0.json");
  BOOST_REQUIRE_EQUAL(doc.at("runs").size(), 1u);
  const json& run = doc.at("runs").at(0);
  const json& driver = run.at("tool").at("driver");
  BOOST_TEST(driver.at("name") == "ckptguard");
  BOOST_TEST(driver.at("version") == "1.2.3");
  BOOST_TEST(driver.at("informationUri").get<std::string>().starts_with("https://"));

  // Only the rules that fired, once each, in the order they first fired.
  const json& rules = driver.at("rules");
  std::vector<std::string> ids;
  for (const json& rule : rules) ids.push_back(rule.at("id"));
  // CKG-W001 stands for the read errors (one result per file with an error).
  BOOST_TEST(ids == (std::vector<std::string>{kPolicyRule, kDangerousRule, kSuspiciousRule, kUnknownRule, kRuleNotScanned}),
             boost::test_tools::per_element());
  for (const json& rule : rules) {
    BOOST_TEST_CONTEXT("rule " << rule.at("id")) {
      BOOST_TEST(IsCamelCase(rule.at("name")), rule.at("name"));
      BOOST_TEST(rule.at("defaultConfiguration").contains("level"));
    }
  }
  const json& dangerous = rules.at(1);
  BOOST_TEST(dangerous.at("name") == "CallsReporttestRun");
  BOOST_TEST(dangerous.at("shortDescription").at("text") == "Calls reporttest.run, which runs a shell command");
  BOOST_TEST(dangerous.at("fullDescription").at("text") ==
             "Calls reporttest.run, which runs a shell command. Loading the file runs the command.");
  BOOST_TEST(dangerous.at("helpUri") == "https://example.com/rules#TEST-D900");  // the URL of the reference
  BOOST_TEST(dangerous.at("help").at("text") == "Reference: docs/threats.md \xc2\xa7" "1; https://example.com/rules#TEST-D900.");
  BOOST_TEST(dangerous.at("defaultConfiguration").at("level") == "error");
  const json& suspicious = rules.at(2);
  BOOST_TEST(suspicious.at("name") == "AWholeModuleIsPickled");
  BOOST_TEST(!suspicious.contains("helpUri"));  // not a URL
  BOOST_TEST(suspicious.at("help").at("text") == "Reference: docs/rules.md section TEST-S901");
  BOOST_TEST(suspicious.at("defaultConfiguration").at("level") == "warning");
  // The policy rule comes from RuleSet::FixedRule with its description.
  const Rule& policy = TestRules().FixedRule(kPolicyRule);
  BOOST_TEST(rules.at(0).at("fullDescription").at("text") == policy.description);
  BOOST_TEST(rules.at(3).at("name") == "Other1");  // unknown to the rule set: id only
  // Rules of ckptguard link their docs/rules.md section, in helpUri and help.
  BOOST_TEST(rules.at(0).at("helpUri") == "https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md#ckg-p001");
  BOOST_TEST(rules.at(0).at("help").at("text").get<std::string>().starts_with(
      "Documentation: docs/rules.md#ckg-p001 (https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md#ckg-p001)"));
  BOOST_TEST(rules.at(4).at("helpUri") == "https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md#ckg-w001");

  // One result per finding and one per read error; ruleIndex points at its rule.
  const json& results = run.at("results");
  size_t num_findings = 0;
  for (const FileReport& file : files) num_findings += file.findings.size() + (file.error ? 1 : 0);
  BOOST_REQUIRE_EQUAL(results.size(), num_findings);
  std::set<std::string> fingerprints;
  for (const json& result : results) {
    BOOST_TEST_CONTEXT("result " << result.at("ruleId")) {
      const size_t index = result.at("ruleIndex");
      BOOST_REQUIRE_LT(index, rules.size());
      BOOST_TEST(rules.at(index).at("id") == result.at("ruleId"));
      BOOST_TEST(!result.at("message").at("text").get<std::string>().empty());
      const json& location = result.at("locations").at(0).at("physicalLocation");
      const std::string uri = location.at("artifactLocation").at("uri");
      BOOST_TEST(IsCleanUri(uri), uri);
      BOOST_TEST(location.at("region").at("startLine") == 1);  // GitHub needs a line
      BOOST_TEST(location.at("region").at("byteLength") == 1);
      const std::string fingerprint = result.at("partialFingerprints").at("ckptguardFinding/v1");
      BOOST_TEST(fingerprint.size() == 16u);
      fingerprints.insert(fingerprint);
    }
  }
  BOOST_TEST(fingerprints.size() == num_findings);  // distinct findings, distinct fingerprints
  BOOST_TEST(json::parse(ReportSarif(files, TestRules(), "9.9")).at("runs").at(0).at("results") == results);  // stable

  // The odd path is relative and percent-encoded; the region is the finding's.
  const json& odd = results.at(0);
  BOOST_TEST(odd.at("ruleId") == kPolicyRule);
  BOOST_TEST(odd.at("level") == "warning");
  BOOST_TEST(odd.at("message").at("text") == "unknown global foo.Bar needs code to load");
  const json& odd_location = odd.at("locations").at(0).at("physicalLocation");
  BOOST_TEST(odd_location.at("artifactLocation").at("uri") == "models/odd%20name%20%C3%BC%20100%25.pt");
  BOOST_TEST(odd_location.at("artifactLocation").at("uriBaseId") == "%SRCROOT%");
  BOOST_TEST(odd_location.at("region").at("byteOffset") == 42);
  BOOST_TEST(odd.at("properties") ==
             (json{{"entry", "odd name/data.pkl"}, {"global", "foo.Bar"}, {"severity", "suspicious"}}));

  const json& eval = results.at(2);
  BOOST_TEST(eval.at("ruleId") == kDangerousRule);
  BOOST_TEST(eval.at("ruleIndex") == 1);
  BOOST_TEST(eval.at("level") == "error");
  BOOST_TEST(eval.at("locations").at(0).at("physicalLocation").at("region").at("byteOffset") == 140);
  BOOST_TEST(eval.at("properties").at("global") == "builtins.eval");
  BOOST_TEST(results.at(4).at("level") == "note");
  BOOST_TEST(results.at(4).at("properties") == (json{{"entry", ""}, {"global", ""}, {"severity", "info"}}));

  // An absolute path becomes a file:// URI; hostile bytes are encoded.
  BOOST_TEST(results.at(6).at("locations").at(0).at("physicalLocation").at("artifactLocation") ==
             (json{{"uri", "file:///abs/dir/x%231.bin"}}));
  BOOST_TEST(results.at(8).at("locations").at(0).at("physicalLocation").at("artifactLocation").at("uri") ==
             "bad%FF%0A%1B%5B31m%E2%80%AE.pt");

  // A read error is a CKG-W001 result at its offset, level error.
  const json& unread = results.at(5);
  BOOST_TEST(unread.at("ruleId") == kRuleNotScanned);
  BOOST_TEST(unread.at("level") == "error");
  BOOST_TEST(unread.at("message").at("text") == "not scanned completely: " + files[3].error->ToString());
  BOOST_TEST(unread.at("locations").at(0).at("physicalLocation").at("region").at("byteOffset") == 77);
  BOOST_TEST(results.at(7).at("ruleId") == kRuleNotScanned);

  // Files that could not be read are error notifications too; the run did
  // not succeed.
  BOOST_REQUIRE_EQUAL(run.at("invocations").size(), 1u);
  const json& invocation = run.at("invocations").at(0);
  BOOST_TEST(invocation.at("executionSuccessful") == false);
  const json& notifications = invocation.at("toolExecutionNotifications");
  BOOST_REQUIRE_EQUAL(notifications.size(), 2u);
  BOOST_TEST(notifications.at(0).at("level") == "error");
  BOOST_TEST(notifications.at(0).at("message").at("text") == "broken.pt: " + files[3].error->ToString());
  BOOST_TEST(notifications.at(0).at("locations").at(0).at("physicalLocation").at("artifactLocation").at("uri") ==
             "broken.pt");
  BOOST_TEST(notifications.at(0).at("properties").at("code") == "truncated");
  BOOST_TEST(notifications.at(1).at("locations").at(0).at("physicalLocation").at("artifactLocation").at("uri") ==
             "file:///abs/dir/x%231.bin");
}

// Every built-in rule (global, fixed and policy) fires once: the document
// still validates and each rule has a name, descriptions and its help.
BOOST_AUTO_TEST_CASE(sarif_with_every_builtin_rule) {
  const RuleSet& builtin = RuleSet::Builtin();
  BOOST_REQUIRE(!builtin.rules().empty());
  std::vector<Finding> findings;
  for (const Rule& rule : builtin.rules()) {
    findings.push_back(MakeFinding(rule.id, rule.severity, "finding of " + rule.id, "archive/data.pkl", 1, ""));
  }
  const std::string sarif = ReportSarif({MakeFile("models/all.pt", findings)}, builtin, "1.2.3");
  const testing::TempDir dir;
  BOOST_TEST(Validate(sarif, dir, "builtin.sarif") == "");
  const json doc = json::parse(sarif);
  const json& rules = doc.at("runs").at(0).at("tool").at("driver").at("rules");
  BOOST_REQUIRE_EQUAL(rules.size(), builtin.rules().size());
  for (size_t i = 0; i < rules.size(); ++i) {
    const Rule& want = builtin.rules()[i];
    const json& got = rules.at(i);
    BOOST_TEST_CONTEXT("rule " << want.id) {
      BOOST_TEST(got.at("id") == want.id);
      BOOST_TEST(IsCamelCase(got.at("name")), got.at("name"));
      const std::string short_description = got.at("shortDescription").at("text");
      BOOST_TEST(!short_description.empty());
      BOOST_TEST(short_description.size() <= 120u);
      BOOST_TEST(got.at("fullDescription").at("text") == want.description);
      // Every built-in rule links its own section of docs/rules.md.
      BOOST_TEST(got.at("helpUri") == std::string(kRulesDocUrl) + "#" + RuleDocAnchor(want.id));
      BOOST_TEST(IsCleanUri(got.at("helpUri")), got.at("helpUri"));
      BOOST_TEST(got.at("help").at("text").get<std::string>().find("docs/rules.md#" + RuleDocAnchor(want.id)) !=
                 std::string::npos);
      // No rule points outside the repository (../shared is not shipped).
      BOOST_TEST(want.reference.find("../") == std::string::npos, want.reference);
      BOOST_TEST(got.at("defaultConfiguration").at("level") == std::string(SarifLevelOf(want.severity)));
    }
  }
}

BOOST_AUTO_TEST_CASE(sarif_successful_run) {
  const json doc = json::parse(ReportSarif({MakeFile("./models/safe.pt", {}),
                                            MakeFile("./sub/a:b.pt", {MakeFinding(kDangerousRule, Severity::kDangerous,
                                                                                  "m", "", 3, "os.system")})},
                                           TestRules(), "1.2.3"));
  const json& run = doc.at("runs").at(0);
  BOOST_TEST(run.at("invocations").at(0) == (json{{"executionSuccessful", true}}));
  // "./" is dropped; ':' is encoded so the first segment cannot read as a scheme.
  BOOST_TEST(run.at("results").at(0).at("locations").at(0).at("physicalLocation").at("artifactLocation").at("uri") ==
             "sub/a%3Ab.pt");
  BOOST_TEST(run.at("tool").at("driver").at("rules").size() == 1u);
}

// ---------------------------------------------------------------------------
// Rule documentation (docs/rules.md)

namespace fs = std::filesystem;

// RuleIdsInSources: every rule id ("CKG-" + a letter + three digits) in the
// product's sources and rule files, with a file that names it.
std::map<std::string, std::string> RuleIdsInSources() {
  const std::regex id_re("CKG-[A-Z][0-9]{3}");
  std::map<std::string, std::string> ids;
  const fs::path root = CKPTGUARD_SOURCE_DIR;
  for (const char* folder : {"scanner", "cli", "daemon", "lib", "signing", "rules"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / folder)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || (ext != ".cc" && ext != ".h" && ext != ".toml")) continue;
      const std::string text = testing::ReadFile(entry.path());
      for (auto it = std::sregex_iterator(text.begin(), text.end(), id_re); it != std::sregex_iterator(); ++it) {
        ids.emplace(it->str(), fs::relative(entry.path(), root).string());
      }
    }
  }
  return ids;
}

// RuleSections: the ids of docs/rules.md's sections ("### CKG-F001"), with
// how many times each appears.
std::map<std::string, int> RuleSections(const std::string& doc) {
  const std::regex heading_re("^#{2,4} (CKG-[A-Z][0-9]{3})[ \t]*$", std::regex::multiline);
  std::map<std::string, int> sections;
  for (auto it = std::sregex_iterator(doc.begin(), doc.end(), heading_re); it != std::sregex_iterator(); ++it) {
    ++sections[(*it)[1].str()];
  }
  return sections;
}

BOOST_AUTO_TEST_CASE(every_rule_id_has_a_section) {
  const std::string doc = testing::ReadFile(fs::path(CKPTGUARD_SOURCE_DIR) / "docs" / "rules.md");
  BOOST_REQUIRE(!doc.empty());
  const std::map<std::string, int> sections = RuleSections(doc);
  const std::map<std::string, std::string> ids = RuleIdsInSources();
  BOOST_TEST(ids.size() >= 90u);  // the parse found the rule files and the scanner
  for (const auto& [id, file] : ids) {
    BOOST_TEST(sections.contains(id), id << " (named in " << file << ") has no section \"### " << id
                                          << "\" in docs/rules.md");
  }
  // Every rule a RuleSet or the scan command can report, by API too.
  for (const Rule& rule : RuleSet::Builtin().rules()) BOOST_TEST(sections.contains(rule.id), rule.id);
  for (const Rule& rule : InputRules()) {
    BOOST_TEST(sections.contains(rule.id), rule.id);
    BOOST_TEST(rule.reference == "docs/rules.md#" + RuleDocAnchor(rule.id));
    BOOST_TEST(!rule.description.empty());
  }
  // One section per id, and none for an id nothing emits.
  for (const auto& [id, count] : sections) {
    BOOST_TEST(count == 1, id << " has " << count << " sections");
    BOOST_TEST(ids.contains(id), id << " is documented but no source names it");
  }
}

// The check above can fail: a missing heading is seen.
BOOST_AUTO_TEST_CASE(rule_section_check_can_fail) {
  const std::map<std::string, int> sections = RuleSections("# Rules\n\n### CKG-F001\n\ntext CKG-F002\n#### CKG-W001 \n");
  BOOST_TEST(sections.contains("CKG-F001"));
  BOOST_TEST(sections.contains("CKG-W001"));
  BOOST_TEST(!sections.contains("CKG-F002"));  // named in text, not a section
}

BOOST_AUTO_TEST_CASE(rule_doc_uris) {
  BOOST_TEST(RuleDocAnchor("CKG-D001") == "ckg-d001");
  BOOST_TEST(RuleDocUri("CKG-D001") == "https://github.com/ckptguard/ckptguard/blob/main/docs/rules.md#ckg-d001");
  BOOST_TEST(RuleDocUri("CKG-F020") == std::string(kRulesDocUrl) + "#ckg-f020");
  BOOST_TEST(RuleDocUri(kRuleLinkEscapes) == std::string(kRulesDocUrl) + "#ckg-w003");
  BOOST_TEST(RuleDocUri("TEST-D900") == "");  // a user's rule
  BOOST_TEST(RuleDocUri("CKG-Z999") == "");   // no such rule
  BOOST_TEST((FindInputRule(kRuleSameFile)->severity == Severity::kInfo));
  BOOST_TEST(FindInputRule("CKG-F001") == nullptr);
}

// No file of the product points into ../shared (it is not part of a clone).
BOOST_AUTO_TEST_CASE(no_product_file_points_outside_the_repository) {
  const fs::path root = CKPTGUARD_SOURCE_DIR;
  for (const char* folder : {"scanner", "cli", "daemon", "lib", "signing", "rules", "docs", "examples"}) {
    for (const auto& entry : fs::recursive_directory_iterator(root / folder)) {
      if (!entry.is_regular_file() || entry.file_size() > (1u << 20)) continue;
      const std::string text = testing::ReadFile(entry.path());
      BOOST_TEST(text.find("../shared") == std::string::npos, entry.path());
    }
  }
  BOOST_TEST(testing::ReadFile(root / "README.md").find("../shared") == std::string::npos);
}

// Every input rule fires once: the SARIF validates and links each section.
BOOST_AUTO_TEST_CASE(sarif_with_every_input_rule) {
  std::vector<FileReport> files;
  for (const Rule& rule : InputRules()) {
    files.push_back(MakeFile("tree/" + rule.id, {MakeFinding(rule.id, rule.severity, "finding of " + rule.id, "", 0, "")},
                             rule.severity == Severity::kInfo ? std::nullopt
                                                              : std::optional<Error>(Error{ErrorCode::kIo, 0, "", "x"})));
  }
  const std::string sarif = ReportSarif(files, RuleSet::Builtin(), "1.2.3");
  const testing::TempDir dir;
  BOOST_TEST(Validate(sarif, dir, "input.sarif") == "");
  const json doc = json::parse(sarif);
  const json& rules = doc.at("runs").at(0).at("tool").at("driver").at("rules");
  BOOST_REQUIRE_EQUAL(rules.size(), InputRules().size());  // no extra CKG-W001 for explained errors
  BOOST_TEST(doc.at("runs").at(0).at("results").size() == InputRules().size());
  for (size_t i = 0; i < rules.size(); ++i) {
    BOOST_TEST(rules.at(i).at("helpUri") == RuleDocUri(InputRules()[i].id));
    BOOST_TEST(IsCamelCase(rules.at(i).at("name")), rules.at(i).at("name"));
  }
}

}  // namespace

}  // namespace ckptguard::scanner
