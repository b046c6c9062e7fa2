// Pickle semantics that every pickle machine domain must decide the same way
// (the VM, the scanner, the storage-reference walker): what STACK_GLOBAL
// accepts as operands, the shape of a torch storage persistent id, and how
// protocol 2 spells bytes (`_codecs.encode(u'...', 'latin1')`). One function
// each, so the loader and the scanner cannot drift apart.
#ifndef CKPTGUARD_PICKLE_SEMANTICS_H_
#define CKPTGUARD_PICKLE_SEMANTICS_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "ckptguard/error.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// StrOperand is what a domain knows of one value used as text: whether it is
// a Python str (the *UNICODE opcodes, and STRING/BINSTRING/SHORT_BINSTRING,
// which torch.load's encoding='utf-8' turns into str), whether the domain
// holds all of it, and the text (UTF-8).
struct StrOperand {
  bool is_str = false;
  bool complete = true;  // false: the domain kept only a prefix (the scanner's copy bound)
  std::string_view text;
};

// GlobalName is a (module, qualified name) pair that GLOBAL, STACK_GLOBAL and
// INST hand to find_class.
struct GlobalName {
  std::string_view module;
  std::string_view name;
};

// StackGlobalName returns STACK_GLOBAL's operands as _pickle.c's
// load_stack_global takes them: both must be exactly str (bytes, ints and
// anything computed fail with "STACK_GLOBAL requires str"). Failure:
// kForbiddenGlobal "STACK_GLOBAL: module and name must be str" (the loader
// refuses to resolve it; the C unpickler raises), or kUnsupportedFormat when
// the domain holds only part of an operand. The views point into the
// operands' text.
Result<GlobalName> StackGlobalName(const StrOperand& module, const StrOperand& name);

// PidItem is one element of a persistent id tuple, as a domain sees it.
struct PidItem {
  enum Kind : uint8_t {
    kOther,   // anything else (a computed value, a container, a float...)
    kStr,     // text
    kInt,     // number (a Python int that fits in int64; not a bool)
    kNone,
    kGlobal,  // module + name; storage_type: the domain knows it names a storage class
  } kind = kOther;
  std::string_view text;    // kStr
  std::string_view module;  // kGlobal
  std::string_view name;    // kGlobal
  int64_t number = 0;       // kInt
  bool storage_type = false;
};

// StoragePid is a torch storage persistent id:
// ('storage', <storage type global>, key, location, numel[, view_metadata]).
struct StoragePid {
  std::string_view module;   // of the storage type global: "torch"
  std::string_view type;     // "FloatStorage"
  std::string_view key;      // "0"
  std::string_view location; // "cpu"
  int64_t numel = 0;
  bool view_metadata = false;  // a sixth element that is not None (legacy storage views)
};

// ParseStoragePid checks `items` (the persistent id tuple's elements) against
// the shape torch.save writes and torch.load's persistent_load reads. Failure
// (detail without the opcode name): kMalformed for a wrong arity, type
// global, key (a non-empty str of at most 256 bytes), location (a str of at
// most 64 bytes) or count (a non-negative int); kUnsupportedFormat for a tag
// other than 'storage'. A sixth element is reported in view_metadata, not
// refused: whether storage views load is the caller's decision.
Result<StoragePid> ParseStoragePid(std::span<const PidItem> items);

// IsLatin1Encoding is true for the spellings of latin1 that _codecs.encode
// accepts and protocol 2 picklers write ("latin1", "latin-1", "iso-8859-1"...).
bool IsLatin1Encoding(std::string_view encoding);

// CodecsEncodeLatin1 is `_codecs.encode(text, encoding)` as protocol 2
// pickles use it to spell bytes: each code point of `text` (UTF-8) below 256
// becomes one byte. `encoding` is the second argument (nullopt: absent, or
// not a str). Failure (detail without the function name):
// kUnsupportedFormat when the encoding is absent or not latin1,
// kMalformed for a code point outside latin1 or text that is not UTF-8.
Result<std::string> CodecsEncodeLatin1(std::string_view text, std::optional<std::string_view> encoding);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_PICKLE_SEMANTICS_H_
