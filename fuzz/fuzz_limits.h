// Shared by the fuzz targets that load or scan whole files: limits small
// enough that one input cannot take the fuzzer's memory or seconds, large
// enough for every seed in fuzz/corpus to load.
//
// Built with CKPTGUARD_FUZZ_DEFAULT_LIMITS (the <target>_defaults_fuzzer
// binaries, fuzz/CMakeLists.txt), every helper here returns the defaults a
// user gets instead: small test limits would hide exactly the amplifiers the
// per-file budget exists for, and run_fuzzers.sh runs every target under
// -rss_limit_mb/-malloc_limit_mb, so an amplifier is a crash.
#ifndef CKPTGUARD_FUZZ_FUZZ_LIMITS_H_
#define CKPTGUARD_FUZZ_FUZZ_LIMITS_H_

#include "ckptguard/checkpoint.h"
#include "ckptguard/container.h"

namespace ckptguard::fuzz {

// kDefaultLimits: this binary fuzzes with the user's default limits.
#ifdef CKPTGUARD_FUZZ_DEFAULT_LIMITS
inline constexpr bool kDefaultLimits = true;
#else
inline constexpr bool kDefaultLimits = false;
#endif

inline PickleLimits SmallPickleLimits() {
  if (kDefaultLimits) return PickleLimits{};
  PickleLimits pickle;
  pickle.max_operand_len = 1 << 20;
  pickle.max_line_len = 1 << 12;
  pickle.max_long_len = 1 << 10;
  pickle.max_frame_len = 1 << 20;
  pickle.max_ops = 1 << 16;
  pickle.max_pickles = 16;
  return pickle;
}

// SmallContainer narrows `c` (the loader's or the scanner's defaults).
inline ContainerLimits SmallContainer(ContainerLimits c) {
  if (kDefaultLimits) return c;
  c.pickle = SmallPickleLimits();
  c.zip.max_entries = 1 << 12;
  c.zip.max_name_len = 1 << 10;
  c.zip.max_inflated_len = 16 << 20;
  c.safetensors.max_header_len = 1 << 20;
  c.safetensors.max_tensors = 1 << 12;
  c.safetensors.max_metadata_entries = 1 << 12;
  c.npy.max_header_len = 1 << 16;
  c.max_unwrapped_len = 16 << 20;
  c.max_depth = 4;
  return c;
}

inline LoadOptions SmallLoadOptions(bool allow_anomalies) {
  LoadOptions o;
  if (kDefaultLimits) {
    o.allow_anomalies = allow_anomalies;
    return o;
  }
  o.limits.pickle = SmallPickleLimits();
  o.limits.max_memo_entries = 1 << 16;
  o.limits.max_stack_depth = 1 << 16;
  o.limits.max_mark_depth = 1 << 10;
  o.limits.max_container_len = 1 << 16;
  o.limits.max_values = 1 << 16;
  o.limits.max_alloc_bytes = 16 << 20;
  o.limits.max_tensors = 1 << 12;
  o.limits.max_tensor_dims = 64;
  o.limits.max_view_bytes = 16 << 20;
  o.limits.max_walk_nodes = 1 << 16;
  o.limits.max_walk_depth = 256;
  o.container = SmallContainer(o.container);
  o.allow_anomalies = allow_anomalies;
  return o;
}

}  // namespace ckptguard::fuzz

#endif  // CKPTGUARD_FUZZ_FUZZ_LIMITS_H_
