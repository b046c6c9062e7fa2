// torchscript_code.h: where TorchScript code reaches a builtin that opens
// files (private to lib/formats).
//
// torch.jit.load compiles the code of an archive (code/**/*.py) with its own
// lexer, which is Python's: '.' is a token of its own, blanks, comments and a
// backslash before a newline are skipped, so `torch . save`, `torch.\<newline>
// save` and `ops.aten  .save` all name aten::save. Module values can be named
// again (`t = torch` then `t.save(...)`, `getattr(torch, "sa" "ve")`), so
// a search for byte strings cannot find them; tokens can.
#ifndef CKPTGUARD_FORMATS_TORCHSCRIPT_CODE_H_
#define CKPTGUARD_FORMATS_TORCHSCRIPT_CODE_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/budget.h"
#include "ckptguard/error.h"

namespace ckptguard {

// kFileBuiltinNames: the builtins of torch 1.13's TorchScript that open the
// file they name (every operator schema of torch._C._jit_get_all_schemas()
// with a file name argument): aten::save(t item, str filename) writes it,
// aten::from_file(str filename, bool? shared, int? size, ...) opens, creates
// or grows it (shared=True maps it writable).
inline constexpr std::string_view kFileBuiltinNames[] = {"save", "from_file"};
// kFileBuiltinOperators: the same as qualified operator names, as a mobile
// module's operator table (bytecode.pkl, a flatbuffer) spells them.
inline constexpr std::string_view kFileBuiltinOperators[] = {"aten::save", "aten::from_file"};

// IsFileBuiltinOperator: `name` is one of kFileBuiltinOperators.
bool IsFileBuiltinOperator(std::string_view name);

// FileBuiltinUse is one place where code reaches a file builtin.
struct FileBuiltinUse {
  uint64_t offset = 0;   // in the code text: the name token, or getattr's string literal
  std::string builtin;   // "save" or "from_file"
  std::string how;       // what was found, e.g. "torch.save", "getattr(..., \"save\")"
};

// kMaxFileBuiltinUses: the most FileBuiltinUse FindFileBuiltins reports per
// code text (the first is enough to refuse a file; a few help a reader).
inline constexpr size_t kMaxFileBuiltinUses = 8;

// FindFileBuiltins tokenizes `code` as TorchScript's lexer does and returns
// the places where it reaches a file builtin: an attribute `.save` or
// `.from_file` of a builtin module (`torch`, `ops`, `aten`, a name
// assigned from one: `t = torch`, `t = ops.aten`), whatever the receiver's
// spelling (parenthesised, through getattr, through a call's result of
// getattr); or getattr(<such a module>, "<file builtin>") with the name as
// adjacent string literals and their escapes. A method of a scripted
// class named `save` called on `self` or on a local (`(self).save(x, )`,
// `(sub).save(x, )`, as torch.jit.save prints calls) is not one.
// Nothing recurses; each pass is linear in the tokens (a receiver walk is
// bounded by kMaxReceiverSteps, past which the use is reported). Charges
// `budget` (when set) the code's length as read bytes per pass.
// Tokens take 12 bytes each, at most one per byte of code, so the code's
// length is bounded first: `max_code_len` (ContainerLimits's
// max_torchscript_code_len, at most 1 GiB).
// Failure: kLimitExceeded (the code is longer than max_code_len, or the
// budget ran out).
Result<std::vector<FileBuiltinUse>> FindFileBuiltins(std::string_view code, uint64_t max_code_len,
                                                     Budget* budget = nullptr);

}  // namespace ckptguard

#endif  // CKPTGUARD_FORMATS_TORCHSCRIPT_CODE_H_
