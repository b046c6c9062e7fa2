// A program outside the tree that uses an installed ckptguard, as an
// integrator's would: load a benign checkpoint, refuse a hostile pickle,
// scan it. Built by tests/consumer/run.sh twice against an installed prefix:
// with find_package(ckptguard) (CMakeLists.txt here) and with pkg-config.
#include <cstdio>
#include <string>

#include "ckptguard/checkpoint.h"
#include "ckptguard/scanner/scan.h"
#include "ckptguard/version.h"

static_assert(CKPTGUARD_VERSION_NUMBER == CKPTGUARD_VERSION_MAJOR * 10000 + CKPTGUARD_VERSION_MINOR * 100 +
                                              CKPTGUARD_VERSION_PATCH);

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: consumer BENIGN_CHECKPOINT HOSTILE_PICKLE\n");
    return 2;
  }
  ckptguard::Result<ckptguard::Checkpoint> benign = ckptguard::LoadCheckpoint(argv[1]);
  if (!benign) {
    std::fprintf(stderr, "benign file refused: %s\n", benign.error().ToString().c_str());
    return 1;
  }
  ckptguard::Result<ckptguard::Checkpoint> hostile = ckptguard::LoadCheckpoint(argv[2]);
  if (hostile) {
    std::fprintf(stderr, "hostile file loaded\n");
    return 1;
  }
  const ckptguard::scanner::FileReport report = ckptguard::scanner::ScanFile(argv[2]);
  if (report.verdict != ckptguard::scanner::Verdict::kDangerous) {
    std::fprintf(stderr, "hostile file scanned as %s\n", std::string(ckptguard::scanner::VerdictName(report.verdict)).c_str());
    return 1;
  }
  std::printf("ckptguard %s: %zu tensors loaded; hostile file refused (%s) and scanned %s\n", CKPTGUARD_VERSION,
              benign->tensors().size(), std::string(ckptguard::ErrorCodeName(hostile.error().code)).c_str(),
              std::string(ckptguard::scanner::VerdictName(report.verdict)).c_str());
  return 0;
}
