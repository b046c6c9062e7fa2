// Test helpers shared by the suites that compare what ckptguard reads with an
// .expect.json (the corpus's format, also written by tests/interop/), and
// that print failed results.
#ifndef CKPTGUARD_TESTS_EXPECT_UTIL_H_
#define CKPTGUARD_TESTS_EXPECT_UTIL_H_

#include <boost/test/unit_test.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "ckptguard/error.h"

namespace ckptguard::testing {

// Why returns the error text of a failed result, "" for a success (Boost
// evaluates assertion messages even when the assertion holds).
template <typename T>
std::string Why(const Result<T>& r) {
  return r ? std::string() : r.error().ToString();
}

// CompareWithExpect checks every tensor field of `expect` against `got` (a
// Checkpoint::DescribeJson), the tensor count, and the skeleton when the
// expectation has one (safetensors expectations do not).
inline void CompareWithExpect(const nlohmann::json& got, const nlohmann::json& expect, const std::string& what) {
  const nlohmann::json& want = expect.at("tensors");
  const nlohmann::json& have = got.at("tensors");
  BOOST_TEST(have.size() == want.size(), what << ": " << have.size() << " tensors, expected " << want.size());
  for (const auto& [path, fields] : want.items()) {
    BOOST_TEST_CONTEXT(what << " tensor '" << path << "'") {
      BOOST_REQUIRE_MESSAGE(have.contains(path), "missing");
      for (const auto& [field, value] : fields.items()) {
        BOOST_TEST(have.at(path).at(field) == value, field << ": " << have.at(path).at(field) << " != " << value);
      }
    }
  }
  if (!expect.contains("skeleton")) return;
  BOOST_TEST(got.at("skeleton") == expect.at("skeleton"), what << " skeleton:\n"
                                                                << got.at("skeleton").dump() << "\nexpected\n"
                                                                << expect.at("skeleton").dump());
}

}  // namespace ckptguard::testing

#endif  // CKPTGUARD_TESTS_EXPECT_UTIL_H_
