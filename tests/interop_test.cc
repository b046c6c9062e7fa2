// Interop with real producers: Debian's torch 1.13 and numpy (/usr/bin/python3) write
// fresh checkpoints during the test run (random shapes, every dtype, views,
// Parameters, optimizer states, scalars; zip and legacy), with its own account
// of every tensor (tests/interop/gen_torch_checkpoints.py); LoadCheckpoint must
// read each one bit for bit the same. CKPTGUARD_INTEROP_SEED picks other files.
#define BOOST_TEST_MODULE interop_test
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "ckptguard/checkpoint.h"
#include "expect_util.h"
#include "test_util.h"

namespace ckptguard {
namespace {

using nlohmann::json;
using testing::ShellQuote;

std::string Seed() {
  const char* env = std::getenv("CKPTGUARD_INTEROP_SEED");
  return env != nullptr && *env != '\0' ? env : "20261129";
}

// Generate runs a generator script into `dir` and loads every file it wrote
// next to an .expect.json, comparing kind, skeleton and every tensor field.
// Returns the kinds seen, one per file.
std::vector<std::string> GenerateAndCompare(const std::string& script_name, const testing::TempDir& dir,
                                            const std::string& args) {
  const std::string script = std::string(CKPTGUARD_SOURCE_DIR) + "/tests/interop/" + script_name;
  const auto gen = testing::Run(ShellQuote(CKPTGUARD_PYTHON) + " " + ShellQuote(script) + " " +
                                ShellQuote(dir.path.string()) + " " + args + " 2>&1");
  BOOST_REQUIRE_MESSAGE(gen.exit_code == 0, script_name << " failed (needs python3-torch/numpy):\n" << gen.out);
  BOOST_TEST_MESSAGE(gen.out);
  std::vector<std::string> kinds;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".expect.json")) continue;
    const std::string model = (dir.path / name.substr(0, name.size() - 12)).string();
    const json expect = json::parse(testing::ReadFile(entry.path()));
    BOOST_TEST_CONTEXT(model) {
      Result<Checkpoint> ckpt = LoadCheckpoint(model);
      BOOST_REQUIRE_MESSAGE(ckpt.has_value(), testing::Why(ckpt));
      Result<std::string> described = ckpt->DescribeJson();
      BOOST_REQUIRE(described.has_value());
      const json got = json::parse(*described);
      BOOST_TEST(got.at("kind") == expect.at("kind"));
      BOOST_TEST(expect.contains("skeleton"));  // the generators always write one
      testing::CompareWithExpect(got, expect, model);
      kinds.push_back(expect.at("kind"));
    }
  }
  return kinds;
}

BOOST_AUTO_TEST_CASE(torch_written_checkpoints_load_bit_exact) {
  testing::TempDir dir;
  const std::vector<std::string> kinds =
      GenerateAndCompare("gen_torch_checkpoints.py", dir, "--seed " + Seed() + " --count 48");
  BOOST_TEST(kinds.size() == 48u);
  BOOST_TEST(std::count(kinds.begin(), kinds.end(), "torch-zip") > 0);
  BOOST_TEST(std::count(kinds.begin(), kinds.end(), "torch-legacy") > 0);
}

BOOST_AUTO_TEST_CASE(numpy_written_arrays_load_bit_exact) {
  // Every dtype, both byte orders, C and Fortran order, 0-d and empty arrays,
  // stored and deflated .npz.
  testing::TempDir dir;
  const std::vector<std::string> kinds = GenerateAndCompare("gen_numpy_arrays.py", dir, "--seed " + Seed() + " --count 32");
  BOOST_TEST(kinds.size() == 32u);
  BOOST_TEST(std::count(kinds.begin(), kinds.end(), "numpy") == 16);
  BOOST_TEST(std::count(kinds.begin(), kinds.end(), "numpy-zip") == 16);
}

}  // namespace
}  // namespace ckptguard
