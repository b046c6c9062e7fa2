// Callables: what calling a global does, as data (rules/callables.toml).
//
// One list serves both domains of the pickle machine. The scanner judges a
// call by its callee's kind (a data constructor is suspicious, a caller or a
// loader dangerous...); the loader builds a *record* for a call of a data
// kind (a generic object: the callable's name, its arguments and the state
// BUILD gives it) and never calls anything. The file's header explains each
// kind; it is built into the binary (BuiltinCallables).
#ifndef CKPTGUARD_CALLABLES_H_
#define CKPTGUARD_CALLABLES_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// CallableKind is what calling a global does.
enum class CallableKind : uint8_t {
  kConstructor,    // pure data from data; calls none of its arguments
  kClass,          // a class referenced or instantiated empty; a call with arguments is a call
  kGetattr,        // getattr(global, 'literal') is the global "global.literal"
  kPartial,        // functools.partial: its callable is referenced, not called
  kReconstructor,  // copyreg._reconstructor(cls, base, state)
  kNewObj,         // copyreg.__newobj__(cls, *args)
  kDefaultDict,    // collections.defaultdict(factory)
  kDecoder,        // a pure bytes decoder (CallableEntry::decode says how)
  kBytesStream,    // io.BytesIO(bytes)
  kFileOpener,     // opens a path named by a string argument
  kLoader,         // unpickles the bytes, stream, path or file it is handed
  kCaller,         // calls its arguments (map, filter, functools.reduce, ...)
};

// IsDataKind: calling a callable of this kind builds data (no code runs when
// its arguments are data too).
constexpr bool IsDataKind(CallableKind kind) {
  return kind != CallableKind::kFileOpener && kind != CallableKind::kLoader && kind != CallableKind::kCaller;
}

// IsRecordKind: the loader builds a record for this kind (the data kinds
// whose result is an object; decoders and byte streams are not loaded).
constexpr bool IsRecordKind(CallableKind kind) {
  return kind <= CallableKind::kDefaultDict;
}

// IsClassName: whether a dotted name's last component is a class by naming
// convention: a capital letter after any leading underscores ("Adam",
// "_MEM_FORMAT_ENCODING"), never a module or function ("system", "_helper").
// Class wildcards ("module.*") and the owner of getattr(Class, 'NAME') are
// judged by it.
bool IsClassName(std::string_view dotted);

// CallableKindName returns the TOML spelling ("constructor", ...).
std::string_view CallableKindName(CallableKind kind);

// CallableEntry is one [[callable]] of rules/callables.toml.
struct CallableEntry {
  std::string global;  // dotted name; "module.*" for a class wildcard
  CallableKind kind = CallableKind::kConstructor;
  std::string decode;  // kDecoder: base64, base64url, hex, zlib, gzip, bz2, lzma, codecs, none
  // kLoader: "bytes" (unpickles its argument's bytes), "stream" (reads a file
  // object), or empty (a path, a database: never judged by literal data).
  std::string input;
  std::string why;
  // kClass: the class's own __setstate__ calls attributes of the instance
  // after it set the state's (torch.optim.Optimizer.__setstate__ calls
  // self._hook_for_profile()): a BUILD state that holds a callable is a
  // call of it. TOML: setstate = "calls_attributes".
  bool setstate_calls_attributes = false;
};

class Callables {
 public:
  // Find returns the entry for a dotted name (after Python-2 renames and
  // module aliases): an exact entry, else a class wildcard "module.*" when
  // the last component is a class name (IsClassName); or null.
  const CallableEntry* Find(std::string_view dotted) const;

  const std::map<std::string, CallableEntry, std::less<>>& entries() const { return exact_; }

 private:
  friend Result<Callables> ParseCallables(std::string_view text, std::string_view source_name);
  std::map<std::string, CallableEntry, std::less<>> exact_;           // exact dotted names
  std::map<std::string, CallableEntry, std::less<>> class_wildcards_;  // "module" of "module.*"
};

// ParseCallables parses the TOML text of a callables file (see
// rules/callables.toml). Failure: kMalformed naming the file and line.
Result<Callables> ParseCallables(std::string_view text, std::string_view source_name);

// BuiltinCallables is rules/callables.toml as built into the binary, parsed
// once. Never fails at run time (CheckBuiltinCallables, run by the tests,
// fails on a broken built-in file).
const Callables& BuiltinCallables();
Status CheckBuiltinCallables();

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_CALLABLES_H_
