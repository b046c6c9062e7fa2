#include "ckptguard/pickle_disasm.h"

#include <algorithm>
#include <cstdio>
#include <set>
#include <vector>

#include "py_text.h"

namespace ckptguard {
namespace {

std::string OpcodeColumn(Opcode code) {
  auto byte = static_cast<uint8_t>(code);
  if (byte >= 0x20 && byte < 0x7f) return std::string(1, static_cast<char>(byte));
  char buf[8];
  std::snprintf(buf, sizeof(buf), "\\x%02x", byte);
  return buf;
}

std::string Cut(std::string text, size_t max_chars) {
  if (max_chars == 0 || text.size() <= max_chars) return text;
  const size_t more = text.size() - max_chars;
  text.resize(max_chars);
  return text + "...(" + std::to_string(more) + " more chars)";
}

// MemoKey normalises a memo index the way Python dict keys compare (False == 0).
std::string MemoKey(const PickleArg& arg) {
  switch (arg.type) {
    case PickleArgType::kUInt: return std::to_string(arg.uint_value);
    case PickleArgType::kInt:
    case PickleArgType::kBool: return std::to_string(arg.int_value);
    case PickleArgType::kBigInt: {
      py::PyInt v;
      v.big = true;
      v.twos_le = std::string(arg.Data());
      return py::ReprInt(v);
    }
    default: return "None";
  }
}

}  // namespace

std::string ArgRepr(const PickleOp& op, size_t max_chars) {
  const PickleArg& arg = op.arg;
  std::string repr;
  switch (arg.type) {
    case PickleArgType::kNone: return {};
    case PickleArgType::kUInt: repr = std::to_string(arg.uint_value); break;
    case PickleArgType::kInt: repr = std::to_string(arg.int_value); break;
    case PickleArgType::kBool: repr = arg.int_value != 0 ? "True" : "False"; break;
    case PickleArgType::kBigInt: {
      py::PyInt v;
      v.big = true;
      v.twos_le = std::string(arg.Data());
      repr = py::ReprInt(v);
      break;
    }
    case PickleArgType::kFloat: repr = py::ReprFloat(arg.float_value); break;
    case PickleArgType::kString: repr = py::ReprStr(arg.Data()); break;
    case PickleArgType::kGlobal: {
      std::string joined(arg.Data());
      joined += ' ';
      joined += arg.Name();
      repr = py::ReprStr(joined);
      break;
    }
    case PickleArgType::kBytes:
      switch (op.code) {
        case Opcode::kByteArray8: repr = py::ReprByteArray(arg.Data()); break;
        case Opcode::kBinString:
        case Opcode::kShortBinString: repr = py::ReprLatin1(arg.Data()); break;
        case Opcode::kString: {
          // pickletools decodes STRING as ASCII; other bytes stay bytes.
          const std::string_view d = arg.Data();
          const bool ascii = std::all_of(d.begin(), d.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; });
          repr = ascii ? py::ReprLatin1(d) : py::ReprBytes(d);
          break;
        }
        default: repr = py::ReprBytes(arg.Data()); break;
      }
      break;
  }
  return Cut(std::move(repr), max_chars);
}

std::vector<std::span<const PickleOp>> SplitPickles(const DecodedStream& stream) {
  std::vector<std::span<const PickleOp>> out;
  size_t begin = 0;
  for (size_t i = 0; i < stream.ops.size(); ++i) {
    if (i + 1 == stream.ops.size() || stream.ops[i + 1].pickle_index != stream.ops[i].pickle_index) {
      out.emplace_back(stream.ops.data() + begin, i + 1 - begin);
      begin = i + 1;
    }
  }
  return out;
}

std::string DisassemblePickle(std::span<const PickleOp> ops, bool complete, const DisasmOptions& options) {
  // A crude emulation of the unpickler stack, as pickletools keeps it: only
  // whether each slot is a MARK matters, for indentation and "(MARK at N)".
  std::vector<bool> stack;  // true = MARK
  std::vector<uint64_t> mark_positions;
  std::set<std::string> memo;
  int max_proto = -1;
  std::string out;
  const std::string indent_chunk(static_cast<size_t>(std::max(options.indent, 0)), ' ');
  for (const PickleOp& op : ops) {
    const OpcodeInfo& info = op.Info();
    std::string line;
    char pos[32];
    std::snprintf(pos, sizeof(pos), "%5llu: ", static_cast<unsigned long long>(op.offset));
    line += pos;
    std::string code = OpcodeColumn(op.code);
    code.resize(std::max<size_t>(code.size(), 4), ' ');
    line += code;
    line += ' ';
    for (size_t i = 0; i < mark_positions.size(); ++i) line += indent_chunk;
    line += info.name;
    max_proto = std::max<int>(max_proto, info.proto);

    size_t num_to_pop = info.num_before;
    std::string mark_msg, error_msg;
    const bool pops_mark = info.mark_index >= 0 || (op.code == Opcode::kPop && !stack.empty() && stack.back());
    if (pops_mark) {
      if (!mark_positions.empty()) {
        mark_msg = "(MARK at " + std::to_string(mark_positions.back()) + ")";
        mark_positions.pop_back();
        while (!stack.empty() && !stack.back()) stack.pop_back();
        if (!stack.empty()) stack.pop_back();
        num_to_pop = info.mark_index >= 0 ? static_cast<size_t>(info.mark_index) : 0;
      } else {
        error_msg = mark_msg = "no MARK exists on stack";
      }
    }
    switch (op.code) {
      case Opcode::kPut:
      case Opcode::kBinPut:
      case Opcode::kLongBinPut:
      case Opcode::kMemoize: {
        const std::string key = op.code == Opcode::kMemoize ? std::to_string(memo.size()) : MemoKey(op.arg);
        if (op.code == Opcode::kMemoize) mark_msg = "(as " + key + ")";
        if (memo.contains(key)) {
          error_msg = "memo key " + (op.code == Opcode::kMemoize ? std::string("None") : ArgRepr(op)) +
                      " already defined";
        } else if (stack.empty()) {
          error_msg = "stack is empty -- can't store into memo";
        } else if (stack.back()) {
          error_msg = "can't store markobject in the memo";
        } else {
          memo.insert(key);
        }
        break;
      }
      case Opcode::kGet:
      case Opcode::kBinGet:
      case Opcode::kLongBinGet:
        if (!memo.contains(MemoKey(op.arg))) {
          error_msg = "memo key " + ArgRepr(op) + " has never been stored into";
        }
        break;
      default: break;
    }
    const std::string arg = ArgRepr(op, options.max_arg_chars);
    if (op.arg.type != PickleArgType::kNone || !mark_msg.empty()) {
      line.append(info.name.size() < 10 ? 10 - info.name.size() : 0, ' ');
      if (op.arg.type != PickleArgType::kNone) line += " " + arg;
      if (!mark_msg.empty()) line += " " + mark_msg;
    }
    out += line;
    out += '\n';
    if (!error_msg.empty()) out += "!! " + error_msg + "\n";

    if (stack.size() < num_to_pop) {
      out += "!! tries to pop " + std::to_string(num_to_pop) + " items from stack with only " +
             std::to_string(stack.size()) + " items\n";
      num_to_pop = stack.size();
    }
    stack.resize(stack.size() - num_to_pop);
    if (op.code == Opcode::kMark) {
      mark_positions.push_back(op.offset);
      stack.push_back(true);
    } else {
      // GET pushes a memo slot, which never holds a MARK.
      stack.insert(stack.end(), info.num_after, false);
    }
  }
  if (complete) {
    out += "highest protocol among opcodes = " + std::to_string(max_proto) + "\n";
    if (!stack.empty()) {
      out += "!! stack not empty after STOP: " + std::to_string(stack.size()) + " items\n";
    }
  }
  return out;
}

}  // namespace ckptguard
