// Anomaly: something about a container that a strict reader notices and a
// lenient one (torch, numpy, the safetensors reference) may not. Anomalies
// are facts to report, not failures: the file is still read as torch reads it.
#ifndef CKPTGUARD_ANOMALY_H_
#define CKPTGUARD_ANOMALY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct Anomaly {
  // A stable dotted id, e.g. "zip.crc_mismatch", "safetensors.trailing_data";
  // tests and rules match on it.
  std::string kind;
  // Absolute byte offset in the file where it shows.
  uint64_t offset = 0;
  // The zip entry, tensor or array it concerns; may be empty.
  std::string entry;
  // One sentence for people, without a trailing period.
  std::string detail;
};

using Anomalies = std::vector<Anomaly>;

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_ANOMALY_H_
