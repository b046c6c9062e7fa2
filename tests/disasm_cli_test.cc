// `ckptguard disasm` as a user runs it: exit codes, the text and JSON
// contracts, errors that name the file, entry and byte offset.
#define BOOST_TEST_MODULE disasm_cli_test
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::CorpusDir;
using testing::ShellQuote;
using testing::TempDir;

testing::CommandResult Cli(const std::string& args, bool merge_stderr = false) {
  return testing::Run(ShellQuote(CKPTGUARD_CLI) + " disasm " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null"));
}

BOOST_AUTO_TEST_CASE(text_output_names_entries_and_ops) {
  auto r = Cli(ShellQuote((CorpusDir() / "benign" / "mlp.params").string()));
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.find("entry 'mlp/data.pkl' (stored, 494 bytes at offset") != std::string::npos);
  BOOST_TEST(r.out.find("    2: c    GLOBAL     'collections OrderedDict'\n") != std::string::npos);
  BOOST_TEST(r.out.find("highest protocol among opcodes = 2") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(legacy_stream_shows_five_pickles_then_records) {
  auto r = Cli(ShellQuote((CorpusDir() / "benign" / "mlp_legacy.pt").string()));
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.find("-- pickle 5 at offset") != std::string::npos);
  BOOST_TEST(r.out.find("-- pickle 6") == std::string::npos);
  BOOST_TEST(r.out.find("bytes of raw storage records follow the five pickles") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(json_has_one_object_per_opcode) {
  auto r = Cli("--json " + ShellQuote((CorpusDir() / "malicious" / "torch_zip_deflated.pt").string()));
  BOOST_TEST(r.exit_code == 0);
  json doc = json::parse(r.out);
  const json& file = doc.at("files").at(0);
  BOOST_TEST(file.at("format") == "torch-zip");
  const json& source = file.at("sources").at(0);
  BOOST_TEST(source.at("entry") == "archive/data.pkl");
  BOOST_TEST(source.at("deflated") == true);
  BOOST_TEST(source.at("file_offset").is_null());
  bool saw_global = false;
  uint64_t expected_offset = 0;
  for (const json& op : source.at("ops")) {
    BOOST_TEST(op.at("offset").get<uint64_t>() == expected_offset);
    expected_offset += op.at("length").get<uint64_t>();
    if (op.at("opcode") == "GLOBAL") {
      BOOST_TEST(op.at("arg").at("module") == "os");
      BOOST_TEST(op.at("arg").at("name") == "system");
      BOOST_TEST(op.at("repr") == "'os system'");
      saw_global = true;
    }
  }
  BOOST_TEST(saw_global);
  BOOST_TEST(source.at("ops").back().at("opcode") == "STOP");
}

BOOST_AUTO_TEST_CASE(stored_entry_ops_carry_file_offsets) {
  auto r = Cli("--json " + ShellQuote((CorpusDir() / "benign" / "mlp.params").string()));
  json source = json::parse(r.out).at("files").at(0).at("sources").at(0);
  const uint64_t base = source.at("file_offset").get<uint64_t>();
  const std::string bytes = testing::ReadFile(CorpusDir() / "benign" / "mlp.params");
  for (const json& op : source.at("ops")) {
    const uint64_t at = op.at("file_offset").get<uint64_t>();
    BOOST_TEST(at == base + op.at("offset").get<uint64_t>());
    BOOST_TEST(static_cast<int>(static_cast<uint8_t>(bytes.at(at))) == op.at("byte").get<int>());
  }
}

BOOST_AUTO_TEST_CASE(truncated_pickle_prints_what_decoded_and_fails) {
  TempDir dir;
  // PROTO 2, EMPTY_DICT, then BINUNICODE announcing 7 bytes with only 3.
  const std::string path = dir.Write("cut.pkl", std::string("\x80\x02}X\x07\x00\x00\x00" "abc", 11));
  auto r = Cli(ShellQuote(path), /*merge_stderr=*/true);
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.out.find("    2: }    EMPTY_DICT") != std::string::npos);
  BOOST_TEST(r.out.find(path + ": truncated at byte 8 (BINUNICODE): operand of 7 bytes, only 3 remain") !=
             std::string::npos, r.out);
}

BOOST_AUTO_TEST_CASE(bad_zip_entry_is_named) {
  TempDir dir;
  std::string zip = testing::ReadFile(CorpusDir() / "malicious" / "torch_zip_deflated.pt");
  // Corrupt the deflate stream of the first entry, just after its local header.
  const size_t name_len = static_cast<uint8_t>(zip[26]) | (static_cast<uint8_t>(zip[27]) << 8);
  const size_t extra_len = static_cast<uint8_t>(zip[28]) | (static_cast<uint8_t>(zip[29]) << 8);
  zip[30 + name_len + extra_len] = '\xff';
  const std::string path = dir.Write("bad.pt", zip);
  auto r = Cli(ShellQuote(path), /*merge_stderr=*/true);
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.out.find(path + ": unreadable entry at byte") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("(archive/data.pkl): deflate stream is corrupt") != std::string::npos, r.out);
}

BOOST_AUTO_TEST_CASE(missing_file_is_an_io_error_naming_it) {
  auto r = Cli("/nonexistent/model.pt", /*merge_stderr=*/true);
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.out.find("/nonexistent/model.pt: io at byte 0 (/nonexistent/model.pt): cannot open") !=
             std::string::npos, r.out);
}

BOOST_AUTO_TEST_CASE(safetensors_and_plain_npy_hold_no_pickle) {
  auto r = Cli(ShellQuote((CorpusDir() / "benign" / "mlp.safetensors").string()) + " " +
               ShellQuote((CorpusDir() / "benign" / "array_f32.npy").string()));
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.find("safetensors: holds no pickle") != std::string::npos);
  BOOST_TEST(r.out.find("numpy: holds no pickle") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(limits_fail_closed) {
  auto r = Cli("--max-ops 5 " + ShellQuote((CorpusDir() / "benign" / "mlp.params").string()), true);
  BOOST_TEST(r.exit_code == 2);
  BOOST_TEST(r.out.find("limit_exceeded at byte") != std::string::npos, r.out);
  BOOST_TEST(r.out.find("max_ops (5)") != std::string::npos, r.out);
}

BOOST_AUTO_TEST_CASE(long_arguments_are_cut_unless_asked) {
  TempDir dir;
  // SHORT_BINBYTES of 200 'A's: repr is 203 chars.
  const std::string path = dir.Write("long.pkl", "\x80\x03" "C\xc8" + std::string(200, 'A') + ".");
  auto cut = Cli("--max-arg 20 " + ShellQuote(path));
  BOOST_TEST(cut.out.find("...(183 more chars)") != std::string::npos, cut.out);
  auto full = Cli("--max-arg 20 --full-args " + ShellQuote(path));
  BOOST_TEST(full.out.find("b'" + std::string(200, 'A') + "'") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(help_teaches) {
  auto r = Cli("--help");
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.find("Examples:") != std::string::npos);
  BOOST_TEST(r.out.find("decided by content") != std::string::npos);
  BOOST_TEST(r.out.find("--max-operand-len") != std::string::npos);
}

}  // namespace
}  // namespace ckptguard
