// Every reader's view (issue 14, item 4): for each way a real reader reads a
// file differently from torch.load, a hostile file is made by
// tests/reader_views/payloads.py, loaded by that real reader in a
// subprocess (Debian's /usr/bin/python3 with pickle, gzip, bz2, lzma, zlib,
// zipfile, numpy, joblib), which must leave its marker file (the payload ran),
// and then `ckptguard scan` must call it dangerous, naming the payload's
// global.
#define BOOST_TEST_MODULE reader_views_test
#include <unistd.h>

#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::ShellQuote;
namespace fs = std::filesystem;

struct ViewCase {
  const char* name;   // the class in payloads.py
  const char* entry;  // a substring of the entry the dangerous finding names ("" for any)
  const char* needs;  // a Python module the real reader needs, or "bin:NAME" a program ("" for none)
};

std::ostream& operator<<(std::ostream& out, const ViewCase& c) { return out << c.name; }

const ViewCase kCases[] = {
    {"frame_too_long", "[pickle._Unpickler]", ""},
    {"frame_stop_skips", "[pickle._Unpickler]", ""},
    {"second_pickle", "", ""},
    {"gzip_split_members", "", ""},
    {"gzip_zero_padding", "", ""},
    {"gzip_trailing_garbage", "", ""},
    {"gzip_bad_crc", "", ""},
    {"gzip_reserved_flags", "", ""},
    {"lzma_alone", "", ""},
    {"zlib_raw", "", ""},
    {"bz2_trailing_garbage", "", ""},
    {"npy_appended_object_array", "@", "numpy"},
    {"zip_prefixed", "archive/data.pkl", ""},
    {"zip_bzip2_member", "archive/data.pkl", ""},
    {"zip_lzma_member", "archive/data.pkl", ""},
    {"zip_duplicate_name", "archive/data.pkl", ""},
    {"zip_protocol0_member", "model/weights.bin", ""},
    {"joblib_resumes_after_array", "[joblib]", "joblib"},
    {"legacy_tar", "pickle", "torch"},
    {"legacy_tar_second_storage", "storages @", "torch"},
    {"sevenz_pickle", "model.pkl", "bin:bsdtar"},
};

std::string Script() { return (fs::path(CKPTGUARD_SOURCE_DIR) / "tests" / "reader_views" / "payloads.py").string(); }

bool PythonHas(const std::string& module) {
  if (module.empty()) return true;
  if (module.starts_with("bin:")) {
    return testing::Run("command -v " + ShellQuote(module.substr(4)) + " >/dev/null 2>&1").exit_code == 0;
  }
  return testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " -c 'import " + module + "' 2>/dev/null").exit_code == 0;
}

BOOST_DATA_TEST_CASE(real_reader_runs_it_and_scan_calls_it_dangerous, boost::unit_test::data::make(kCases), c) {
  if (!PythonHas(c.needs)) {
    BOOST_TEST_MESSAGE("skipped: /usr/bin/python3 has no " << c.needs);
    return;
  }
  testing::TempDir dir;
  const std::string file = (dir.path / (std::string(c.name) + ".bin")).string();
  const std::string marker = "/tmp/ckptguard-pwned-" + std::to_string(::getpid()) + "-" + c.name;
  fs::remove(marker);
  const std::string py = ShellQuote(CKPTGUARD_PYTHON) + " " + ShellQuote(Script()) + " ";
  const auto made = testing::Run(py + "make " + c.name + " " + ShellQuote(file) + " " + ShellQuote(marker) + " 2>&1");
  BOOST_REQUIRE_MESSAGE(made.exit_code == 0, made.out);
  // Proven: the real reader runs the payload.
  const auto loaded = testing::Run(py + "load " + c.name + " " + ShellQuote(file) + " 2>&1");
  const bool ran = fs::exists(marker);
  fs::remove(marker);
  BOOST_REQUIRE_MESSAGE(ran, "the real reader did not run the payload: " << loaded.out);

  const auto scanned = testing::Run(ShellQuote(CKPTGUARD_CLI) + " scan --format json " + ShellQuote(file) + " 2>/dev/null");
  BOOST_TEST(scanned.exit_code == 1);
  const json report = json::parse(scanned.out).at("files").at(0);
  BOOST_TEST(report.at("verdict") == "dangerous", report.dump(1));
  bool found = false;
  for (const json& f : report.at("findings")) {
    const std::string global = f.value("global", "");
    if (f.at("severity") == "dangerous" && (global == "posix.system" || global == "os.system") &&
        f.at("entry").get<std::string>().find(c.entry) != std::string::npos) {
      found = true;
    }
  }
  BOOST_TEST(found, "no dangerous posix.system finding in an entry naming '" << c.entry << "': " << report.dump(1));
}

// The same layouts around harmless data: no view makes them dangerous (a
// lying frame or an appended array stays suspicious, as anomalies are).
BOOST_DATA_TEST_CASE(same_layout_with_harmless_data_is_not_dangerous, boost::unit_test::data::make(kCases), c) {
  if (!PythonHas(c.needs)) {
    BOOST_TEST_MESSAGE("skipped: /usr/bin/python3 has no " << c.needs);
    return;
  }
  testing::TempDir dir;
  const std::string file = (dir.path / (std::string(c.name) + ".bin")).string();
  const auto made = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " + ShellQuote(Script()) + " make " + c.name + " " +
                                 ShellQuote(file) + " - 2>&1");
  BOOST_REQUIRE_MESSAGE(made.exit_code == 0, made.out);
  const auto scanned = testing::Run(ShellQuote(CKPTGUARD_CLI) + " scan --format json " + ShellQuote(file) + " 2>/dev/null");
  const json report = json::parse(scanned.out).at("files").at(0);
  BOOST_TEST(report.at("verdict") != "dangerous", report.dump(1));
}

}  // namespace
}  // namespace ckptguard
