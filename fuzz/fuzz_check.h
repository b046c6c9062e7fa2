// Shared by the fuzz targets: Check aborts with a message when an invariant
// does not hold (libFuzzer, and the standalone replay, report the abort).
#ifndef CKPTGUARD_FUZZ_FUZZ_CHECK_H_
#define CKPTGUARD_FUZZ_FUZZ_CHECK_H_

#include <cstdio>
#include <cstdlib>
#include <string>

namespace ckptguard::fuzz {

inline void Check(bool ok, const char* what, const std::string& detail = {}) {
  if (!ok) {
    std::fprintf(stderr, "invariant violated: %s%s%s\n", what, detail.empty() ? "" : ": ", detail.c_str());
    std::abort();
  }
}

}  // namespace ckptguard::fuzz

#endif  // CKPTGUARD_FUZZ_FUZZ_CHECK_H_
