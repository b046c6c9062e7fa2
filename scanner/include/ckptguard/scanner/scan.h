// Scan: find what loading a file would run, by content, without running it.
//
// Every pickle in every container of the file is executed symbolically (all
// streams, every zip entry that holds a pickle whatever its name, nested
// archives, wrapped files, npy object arrays, bytes handed to pickle loaders):
// a real stack and memo of symbolic values, so the target of every call
// opcode is known and STACK_GLOBAL operands are resolved however they got on
// the stack. Each global is classified by the RuleSet; container anomalies,
// parse errors after decoded content, TorchScript code and resource-exhaustion
// patterns are findings too.
#ifndef CKPTGUARD_SCANNER_SCAN_H_
#define CKPTGUARD_SCANNER_SCAN_H_

#include <string>

#include "ckptguard/budget.h"
#include "ckptguard/byte_cursor.h"
#include "ckptguard/container.h"
#include "ckptguard/mapped_file.h"
#include "ckptguard/scanner/finding.h"
#include "ckptguard/scanner/rules.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard::scanner {

// ScanContainerLimits: no CRC checks of large records and no second decode
// of data.pkl in the container layer (the scanner decodes every pickle
// itself), so a scan reads the directory and the pickles, never the tensor
// data.
ContainerLimits ScanContainerLimits();

struct ScanOptions {
  const RuleSet* rules = nullptr;  // nullptr: RuleSet::Builtin()
  ContainerLimits container = ScanContainerLimits();
  // Most symbolic values per pickle (bounds the scan's memory). Default 2^22.
  uint64_t max_values = uint64_t{1} << 22;
  // A pickle whose memo GETs and DUPs reference more than this many values
  // per opcode on average is reported as a resource-exhaustion pattern.
  uint64_t expansion_ratio = 64;
  // Most values one judgement of a pure call looks at: the arguments of a
  // functools.partial of a data constructor (and the tuples among them),
  // or what a later APPEND(S), SETITEM(S), ADDITEMS or BUILD puts into a
  // value such a partial holds. Past it the partial is not pure (a callable
  // value like any other) or the change is reported. Each judgement belongs
  // to one opcode, which the budget charges. Default 32 (partial(defaultdict,
  // list) needs 1); ceiling 4096.
  uint64_t max_pure_call_values = 32;
  // The per-file budget (budget.h) every stage of the scan charges: the
  // container layer, each pickle's decoder and symbolic machine, nested
  // pickles. ScanFile and ScanBytes create one Budget per file from these.
  BudgetLimits budget;
  // How ScanFile reads the file (mapped_file.h): a guarded map by default.
  MappedFileOptions file;
};

// ScanBytes scans `data` (which must outlive the call); `path` only names it.
FileReport ScanBytes(Bytes data, const std::string& path, const ScanOptions& options = {});
// ScanFile maps `path` and scans it; an unreadable file (a FIFO, device or
// socket is refused unopened) is a report with verdict kError, and so is a
// file that changed while it was scanned (error kIo ChangedWhileReading,
// no findings: they would be about torn bytes).
FileReport ScanFile(const std::string& path, const ScanOptions& options = {});

}  // namespace ckptguard::scanner

CKPTGUARD_API_END

#endif  // CKPTGUARD_SCANNER_SCAN_H_
