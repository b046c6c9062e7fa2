// make_amplifiers: writes the amplifiers of issue 13 (tests/amplifiers.h,
// built byte by byte) into a folder, for bench/run_budget_bench.sh.
//   make_amplifiers DIR
#include <fstream>
#include <iostream>
#include <string>

#include "amplifiers.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_amplifiers DIR\n";
    return 2;
  }
  using namespace ckptguard::testing;
  const std::string dir = argv[1];
  const std::pair<const char*, std::string> files[] = {
      {"nested_shared.zip", NestedSharedZip()},
      {"none_pop.pkl", NonePopPickle()},
      {"sparse_memo.pkl", SparseMemoPickle()},
      {"huge_declared.pt", HugeDeclaredEntryZip()},
      {"broadcast_view.pt", BroadcastViewCheckpoint()},
  };
  for (const auto& [name, bytes] : files) {
    std::ofstream out(dir + "/" + name, std::ios::binary);
    out << bytes;
    if (!out) {
      std::cerr << "make_amplifiers: cannot write " << dir << "/" << name << "\n";
      return 2;
    }
  }
  return 0;
}
