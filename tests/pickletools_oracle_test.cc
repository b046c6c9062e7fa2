// The pickletools oracle: for every pickle in the corpus (benign and hostile,
// the pickles inside zips and .npy files, every pickle of a stream), our
// disassembly equals what CPython's pickletools.dis prints for the same bytes:
// opcode names, offsets, arguments, MARK indentation, memo notes.
//
// The expected text comes from tests/oracle/pickletools_dis.py, which finds
// the pickles with Python's standard library alone (zipfile, zlib) and runs
// pickletools.dis on each; nothing of ours is involved on that side.
#define BOOST_TEST_MODULE pickletools_oracle_test
#include <boost/test/data/test_case.hpp>
#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>

#include "ckptguard/mapped_file.h"
#include "ckptguard/pickle_disasm.h"
#include "ckptguard/source_pickles.h"
#include "ckptguard/container.h"
#include "test_util.h"

namespace ckptguard {
namespace {

namespace bdata = boost::unit_test::data;
using nlohmann::json;
using testing::CorpusModelFiles;

json Oracle(const std::filesystem::path& file) {
  const std::string script = std::string(CKPTGUARD_SOURCE_DIR) + "/tests/oracle/pickletools_dis.py";
  testing::CommandResult r =
      testing::Run(testing::ShellQuote(CKPTGUARD_PYTHON) + " " + testing::ShellQuote(script) + " " +
                   testing::ShellQuote(file.string()));
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "oracle failed on " << file << " (is " CKPTGUARD_PYTHON " installed?)");
  return json::parse(r.out);
}

std::vector<std::string> FileNames() {
  std::vector<std::string> names;
  for (const auto& path : CorpusModelFiles()) names.push_back(path.string());
  return names;
}

BOOST_AUTO_TEST_CASE(corpus_is_not_empty) {
  // Guards the data-driven case below against silently running on nothing.
  BOOST_TEST(FileNames().size() >= 40u);
}

BOOST_DATA_TEST_CASE(disassembly_equals_pickletools, bdata::make(FileNames()), file_name) {
  const std::filesystem::path file(file_name);
  const json oracle = Oracle(file);
  Result<MappedFile> mapped = MappedFile::Open(file.string());
  BOOST_REQUIRE(mapped.has_value());
  const Container container = OpenContainer(mapped->data());
  BOOST_TEST(!container.error.has_value());
  BOOST_TEST(container.nested.empty());

  const json& sources = oracle.at("sources");
  BOOST_REQUIRE_EQUAL(container.pickles.size(), sources.size());
  for (size_t i = 0; i < sources.size(); ++i) {
    const PickleSource& source = container.pickles[i];
    BOOST_TEST_CONTEXT("entry '" << source.entry << "'") {
      BOOST_TEST(source.entry == sources[i].at("entry").get<std::string>());
      SourcePickles decoded = DecodeSource(source);
      const auto pickles = SplitPickles(decoded.stream);
      const json& expected = sources[i].at("pickles");
      const bool oracle_failed = !sources[i].at("error").is_null();
      BOOST_REQUIRE_EQUAL(pickles.size(), expected.size());
      for (size_t p = 0; p < pickles.size(); ++p) {
        const bool complete = pickles[p].back().code == Opcode::kStop;
        const std::string ours = DisassemblePickle(pickles[p], complete);
        const std::string theirs = expected[p].get<std::string>();
        if (oracle_failed && p + 1 == pickles.size()) {
          // pickletools raised inside this pickle: what it printed before
          // raising must be the start of ours.
          BOOST_TEST(ours.starts_with(theirs), "pickle " << p << ":\nours:\n" << ours << "\ntheirs:\n" << theirs);
        } else {
          BOOST_TEST(ours == theirs, "pickle " << p << ":\nours:\n" << ours << "\ntheirs:\n" << theirs);
        }
      }
      // Every corpus stream decodes completely (legacy streams up to their
      // storage records), so the oracle never needed to raise.
      BOOST_TEST(!oracle_failed);
      BOOST_TEST(!decoded.stream.error.has_value());
    }
  }
}

BOOST_AUTO_TEST_CASE(hostile_pickles_are_found_where_torch_reads_them) {
  // The deflated data.pkl, the one renamed in its local header, and the
  // legacy stream whose first pickle is hostile must all show os.system.
  for (const char* name : {"torch_zip_deflated.pt", "zip_name_mismatch.pt", "torch_legacy_magic_payload.pt",
                           "torch_zip_odd_extension.jpg", "numpy_object_array.npy", "second_pickle_after_stop.pkl"}) {
    BOOST_TEST_CONTEXT(name) {
      Result<MappedFile> mapped = MappedFile::Open((testing::CorpusDir() / "malicious" / name).string());
      BOOST_REQUIRE(mapped.has_value());
      const Container container = OpenContainer(mapped->data());
      bool found = false;
      for (const PickleSource& source : container.pickles) {
        for (const PickleOp& op : DecodeSource(source).stream.ops) {
          if (op.code == Opcode::kGlobal && op.arg.Data() == "os" && op.arg.Name() == "system") found = true;
          if (op.code == Opcode::kShortBinUnicode && op.arg.Data() == "system") found = true;
        }
      }
      BOOST_TEST(found);
    }
  }
}

BOOST_AUTO_TEST_CASE(corpus_copy_matches_shared) {
  const std::filesystem::path shared = testing::SharedCorpusDir();
  if (!std::filesystem::exists(shared)) {
    BOOST_TEST_MESSAGE("../shared/corpus is not beside this clone; nothing to compare");
    return;
  }
  for (const char* sub : {"benign", "malicious"}) {
    for (const auto& entry : std::filesystem::directory_iterator(shared / sub)) {
      const auto copy = testing::CorpusDir() / sub / entry.path().filename();
      BOOST_TEST_CONTEXT(copy) {
        BOOST_REQUIRE(std::filesystem::exists(copy));
        BOOST_TEST((testing::ReadFile(copy) == testing::ReadFile(entry.path())));
      }
    }
  }
}

}  // namespace
}  // namespace ckptguard
