// Disassembly of pickles in the layout of CPython's pickletools.dis.
//
// The Disassemble functions print them as pickletools.dis does: offset, opcode byte, MARK
// indentation, opcode name, Python repr of the operand, "(MARK at N)" and
// "(as N)" notes, and "highest protocol among opcodes = N" after STOP. Where
// pickletools would raise (a memo key used before it is stored, a missing
// MARK, a stack underflow) a line starting with "!!" says so and the
// disassembly goes on.
#ifndef CKPTGUARD_PICKLE_DISASM_H_
#define CKPTGUARD_PICKLE_DISASM_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ckptguard/pickle_decoder.h"
#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

struct DisasmOptions {
  // Blanks per MARK level (pickletools' indentlevel).
  int indent = 4;
  // Operand reprs longer than this are cut with "...(N more chars)"; 0 keeps
  // them whole, as pickletools does.
  size_t max_arg_chars = 0;
};

// ArgRepr is the operand of `op` as pickletools shows it (Python repr of its
// decoded value), or "" for opcodes without one.
std::string ArgRepr(const PickleOp& op, size_t max_chars = 0);

// DisassemblePickle renders one pickle's ops (all with the same pickle_index,
// in order). `complete` says the last op is its STOP; then the
// "highest protocol" line is added.
std::string DisassemblePickle(std::span<const PickleOp> ops, bool complete,
                              const DisasmOptions& options = {});

// SplitPickles returns, for each pickle of `stream`, the span of its ops.
std::vector<std::span<const PickleOp>> SplitPickles(const DecodedStream& stream);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_PICKLE_DISASM_H_
