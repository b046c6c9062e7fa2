// InterpretDtypeString / InterpretDescr: numpy 1.24's dtype construction, as
// far as "does it hold objects, and how large is an item" goes. Sources:
// numpy/core/src/multiarray/descriptor.c (_convert_from_str,
// _check_for_commastring, _convert_from_commastring, _convert_from_tuple,
// _convert_from_list), numpy/core/_internal.py (_commastring), and
// numpy/lib/format.py (descr_to_dtype). Whatever is not followed exactly is
// kUnknown, which readers treat as "may hold objects".
#include <algorithm>
#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckptguard/npy_reader.h"

namespace ckptguard {
namespace {

using Holds = NumpyDtype::Holds;

// numpy's itemsize is a C int.
constexpr uint64_t kMaxItemSize = static_cast<uint64_t>(std::numeric_limits<int32_t>::max());
// The string forms nest at most three deep (a comma string's item may be a
// repeat string once more); anything deeper is not numpy's grammar.
constexpr int kMaxStringLevel = 4;
// Most items of a comma string worked out.
constexpr size_t kMaxCommaItems = 4096;

struct TypeName {
  std::string_view name;
  char kind;
  uint8_t size;
};
// np.sctypeDict's str keys in numpy 1.24.2 (x86_64), with dtype.kind and
// itemsize; plus 'c' (a one-letter code numpy reads as S1). A name is looked
// up as the whole string, byte-order prefix included (so '<float64' is no
// dtype); one-letter codes may carry a byte order.
constexpr TypeName kTypeNames[] = {
    {"?", 'b', 1}, {"B", 'u', 1}, {"D", 'c', 16}, {"F", 'c', 8}, {"G", 'c', 32}, {"H", 'u', 2}, {"I", 'u', 4},
    {"L", 'u', 8}, {"M", 'M', 8}, {"M8", 'M', 8}, {"O", 'O', 8}, {"P", 'u', 8}, {"Q", 'u', 8}, {"S", 'S', 0},
    {"U", 'U', 0}, {"V", 'V', 0}, {"a", 'S', 0}, {"b", 'i', 1}, {"b1", 'b', 1}, {"bool", 'b', 1},
    {"bool8", 'b', 1}, {"bool_", 'b', 1}, {"byte", 'i', 1}, {"bytes", 'S', 0}, {"bytes0", 'S', 0},
    {"bytes_", 'S', 0}, {"c", 'S', 1}, {"c16", 'c', 16}, {"c32", 'c', 32}, {"c8", 'c', 8}, {"cdouble", 'c', 16},
    {"cfloat", 'c', 16}, {"clongdouble", 'c', 32}, {"clongfloat", 'c', 32}, {"complex", 'c', 16},
    {"complex128", 'c', 16}, {"complex256", 'c', 32}, {"complex64", 'c', 8}, {"complex_", 'c', 16},
    {"csingle", 'c', 8}, {"d", 'f', 8}, {"datetime64", 'M', 8}, {"double", 'f', 8}, {"e", 'f', 2}, {"f", 'f', 4},
    {"f16", 'f', 16}, {"f2", 'f', 2}, {"f4", 'f', 4}, {"f8", 'f', 8}, {"float", 'f', 8}, {"float128", 'f', 16},
    {"float16", 'f', 2}, {"float32", 'f', 4}, {"float64", 'f', 8}, {"float_", 'f', 8}, {"g", 'f', 16},
    {"h", 'i', 2}, {"half", 'f', 2}, {"i", 'i', 4}, {"i1", 'i', 1}, {"i2", 'i', 2}, {"i4", 'i', 4}, {"i8", 'i', 8},
    {"int", 'i', 8}, {"int0", 'i', 8}, {"int16", 'i', 2}, {"int32", 'i', 4}, {"int64", 'i', 8}, {"int8", 'i', 1},
    {"int_", 'i', 8}, {"intc", 'i', 4}, {"intp", 'i', 8}, {"l", 'i', 8}, {"long", 'i', 8}, {"longcomplex", 'c', 32},
    {"longdouble", 'f', 16}, {"longfloat", 'f', 16}, {"longlong", 'i', 8}, {"m", 'm', 8}, {"m8", 'm', 8},
    {"object", 'O', 8}, {"object0", 'O', 8}, {"object_", 'O', 8}, {"p", 'i', 8}, {"q", 'i', 8}, {"short", 'i', 2},
    {"single", 'f', 4}, {"singlecomplex", 'c', 8}, {"str", 'U', 0}, {"str0", 'U', 0}, {"str_", 'U', 0},
    {"string_", 'S', 0}, {"timedelta64", 'm', 8}, {"u1", 'u', 1}, {"u2", 'u', 2}, {"u4", 'u', 4}, {"u8", 'u', 8},
    {"ubyte", 'u', 1}, {"uint", 'u', 8}, {"uint0", 'u', 8}, {"uint16", 'u', 2}, {"uint32", 'u', 4},
    {"uint64", 'u', 8}, {"uint8", 'u', 1}, {"uintc", 'u', 4}, {"uintp", 'u', 8}, {"ulong", 'u', 8},
    {"ulonglong", 'u', 8}, {"unicode", 'U', 0}, {"unicode_", 'U', 0}, {"ushort", 'u', 2}, {"void", 'V', 0},
    {"void0", 'V', 0},
};

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsByteOrder(char c) { return c == '<' || c == '>' || c == '|' || c == '='; }
bool IsCSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

NumpyDtype Unknown() { return NumpyDtype{}; }

NumpyDtype Objects() {
  NumpyDtype d;
  d.holds = Holds::kObjects;
  d.kind = 'O';
  d.item_size = 8;
  return d;
}

// StructuredObjects: fields or a subarray holding objects.
NumpyDtype StructuredObjects() {
  NumpyDtype d = Objects();
  d.kind = 'V';
  d.order = '|';
  d.item_size = 0;
  d.structured = true;
  return d;
}

// StructuredPlain: a structured (or subarray) dtype of plain fields, `size` bytes.
NumpyDtype StructuredPlain(uint64_t size) {
  NumpyDtype d;
  d.holds = Holds::kPlain;
  d.item_size = size;
  d.kind = 'V';
  d.order = '|';
  d.structured = true;
  return d;
}

NumpyDtype Simple(char kind, uint64_t size, char order) {
  if (kind == 'O') return Objects();
  NumpyDtype d;
  d.holds = Holds::kPlain;
  d.kind = kind;
  d.item_size = size;
  d.order = order;
  d.unsized = size == 0 && (kind == 'S' || kind == 'U' || kind == 'V');
  return d;
}

std::optional<TypeName> FindName(std::string_view s) {
  for (const TypeName& t : kTypeNames) {
    if (t.name == s) return t;
  }
  return std::nullopt;
}

// Shape is what numpy makes of the second item of (dtype, shape): an int n
// (n elements; unsized flexible bases read it as their size) or a sequence
// of non-negative ints (their product).
struct Shape {
  bool valid = false;
  bool is_int = false;  // a plain int, not a sequence
  uint64_t count = 1;
};

// Subarray is numpy.dtype((base, shape)).
NumpyDtype Subarray(const NumpyDtype& base, const Shape& shape) {
  if (base.holds == Holds::kObjects) {  // objects whatever the count
    return shape.valid && shape.is_int && shape.count == 1 ? base : StructuredObjects();
  }
  if (base.holds != Holds::kPlain || !shape.valid) return Unknown();
  if (base.unsized) {
    // ('S', 5) is S5, ('U', 3) is U3; a sequence there is not numpy's form.
    if (!shape.is_int) return Unknown();
    const uint64_t per = base.kind == 'U' ? 4 : 1;
    if (shape.count > kMaxItemSize / per) return Unknown();
    NumpyDtype d = base;
    d.item_size = shape.count * per;
    d.unsized = false;
    return d;
  }
  if (shape.is_int && shape.count == 1) return base;  // (type, 1) is the type (a FutureWarning)
  uint64_t size = 0;
  if (__builtin_mul_overflow(base.item_size, shape.count, &size) || size > kMaxItemSize) return Unknown();
  return StructuredPlain(size);
}

// Fields sums the field dtypes of a structured dtype.
class Fields {
 public:
  void Add(const NumpyDtype& field) {
    if (field.holds == Holds::kObjects) objects_ = true;
    if (field.holds == Holds::kUnknown || field.unsized) unknown_ = true;
    if (field.holds == Holds::kPlain && (__builtin_add_overflow(size_, field.item_size, &size_) || size_ > kMaxItemSize)) {
      unknown_ = true;
    }
  }
  NumpyDtype Result() const {
    if (objects_) return StructuredObjects();
    if (unknown_) return Unknown();
    return StructuredPlain(size_);
  }

 private:
  bool objects_ = false;
  bool unknown_ = false;
  uint64_t size_ = 0;
};

// ReadRepeats is ast.literal_eval of a repeat group of _commastring (spaces,
// parentheses, digits and commas only): an int, or a tuple of ints.
// nullopt for what literal_eval refuses or what is not an int or tuple of
// ints (conservatively: leading zeros such as '00' are refused).
std::optional<Shape> ReadRepeats(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  bool paren = false;
  if (!s.empty() && s.front() == '(') {
    if (s.back() != ')') return std::nullopt;
    paren = true;
    s = s.substr(1, s.size() - 2);
  } else if (!s.empty() && s.back() == ')') {
    return std::nullopt;
  }
  Shape shape;
  shape.valid = true;
  size_t num = 0;
  bool trailing_comma = false;
  size_t i = 0;
  while (true) {
    while (i < s.size() && s[i] == ' ') ++i;
    if (i >= s.size()) break;
    if (!IsDigit(s[i])) return std::nullopt;
    const size_t begin = i;
    uint64_t v = 0;
    while (i < s.size() && IsDigit(s[i])) {
      if (v > (kMaxItemSize * 10)) return std::nullopt;
      v = v * 10 + static_cast<uint64_t>(s[i++] - '0');
    }
    if (s[begin] == '0' && i - begin > 1) return std::nullopt;
    if (__builtin_mul_overflow(shape.count, v, &shape.count)) return std::nullopt;
    ++num;
    while (i < s.size() && s[i] == ' ') ++i;
    trailing_comma = false;
    if (i >= s.size()) break;
    if (s[i] != ',') return std::nullopt;
    trailing_comma = true;
    ++i;
  }
  if (num == 0) {
    if (!paren) return std::nullopt;  // '' or ' ': no expression
    shape.is_int = false;            // (): an empty tuple
    return shape;
  }
  // '2' and '(2)' are ints; '2,' '(2,)' and '2,3' are tuples.
  shape.is_int = num == 1 && !trailing_comma;
  return shape;
}

NumpyDtype FromString(std::string_view s, int level);

// CommaItem is one item _commastring returns: a str, or (str, repeats).
NumpyDtype CommaItem(std::string_view dtype, const std::optional<Shape>& repeats, int level) {
  const NumpyDtype base = FromString(dtype, level + 1);
  if (!repeats) return base;
  // '(1)O' is refused by numpy 1.24 where ('O', 1) is not: a repeat of one
  // is not worked out here.
  if (repeats->is_int && repeats->count == 1 && base.holds != Holds::kObjects) return Unknown();
  return Subarray(base, *repeats);
}

// CommaString is _convert_from_commastring: _commastring's items, one dtype
// when there is one item, else fields f0, f1, ... (sizes summed).
NumpyDtype CommaString(std::string_view s, int level) {
  size_t pos = 0;
  Fields fields;
  size_t num = 0;
  NumpyDtype single;
  while (pos < s.size()) {
    if (++num > kMaxCommaItems) return Unknown();
    // format_re: order1 [<>|=]?, repeats ' *[(]?[ ,0-9]*[)]? *', order2
    // [<>|=]?, dtype [A-Za-z0-9.?]* with an optional [ ... ] of
    // [a-zA-Z0-9,.]+ (each part greedy; nothing after it can fail).
    size_t i = pos;
    char order1 = 0;
    if (i < s.size() && IsByteOrder(s[i])) order1 = s[i++];
    const size_t rep_begin = i;
    while (i < s.size() && s[i] == ' ') ++i;
    if (i < s.size() && s[i] == '(') ++i;
    while (i < s.size() && (s[i] == ' ' || s[i] == ',' || IsDigit(s[i]))) ++i;
    if (i < s.size() && s[i] == ')') ++i;
    while (i < s.size() && s[i] == ' ') ++i;
    const std::string_view repeats = s.substr(rep_begin, i - rep_begin);
    char order2 = 0;
    if (i < s.size() && IsByteOrder(s[i])) order2 = s[i++];
    const size_t dt_begin = i;
    auto dtype_char = [](char c) {
      return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || IsDigit(c) || c == '.' || c == '?';
    };
    while (i < s.size() && dtype_char(s[i])) ++i;
    if (i < s.size() && s[i] == '[') {
      size_t j = i + 1;
      while (j < s.size() && (dtype_char(s[j]) && s[j] != '?' ? true : s[j] == ',')) ++j;
      if (j > i + 1 && j < s.size() && s[j] == ']') i = j + 1;
    }
    std::string dtype(s.substr(dt_begin, i - dt_begin));
    pos = i;
    if (pos < s.size()) {
      // Separator (\s*,\s*) or trailing whitespace (\s+$).
      size_t j = pos;
      while (j < s.size() && IsCSpace(s[j])) ++j;
      if (j == s.size() && j > pos) {
        pos = j;
      } else if (j < s.size() && s[j] == ',') {
        ++j;
        while (j < s.size() && IsCSpace(s[j])) ++j;
        pos = j;
      } else {
        return Unknown();  // "format number N is not recognized"
      }
    }
    // The byte order: the two must agree ('=' is the native '<' here);
    // '|', '=' and the native '<' are dropped.
    auto native = [](char o) { return o == '=' ? '<' : o; };
    char order = order2 == 0 ? order1 : order1 == 0 ? order2 : 0;
    if (order1 != 0 && order2 != 0) {
      if (native(order1) != native(order2)) return Unknown();
      order = native(order1);
    }
    if (order == '>') dtype.insert(dtype.begin(), '>');
    std::optional<Shape> rep;
    if (!repeats.empty()) {
      rep = ReadRepeats(repeats);
      if (!rep) return Unknown();
    }
    const NumpyDtype item = CommaItem(dtype, rep, level);
    if (num == 1) single = item;
    fields.Add(item);
  }
  if (num == 0) return Unknown();
  return num == 1 ? single : fields.Result();
}

// CheckForCommastring is numpy's _check_for_commastring.
bool CheckForCommastring(std::string_view s) {
  const size_t len = s.size();
  if (IsDigit(s[0]) || (len > 1 && IsByteOrder(s[0]) && IsDigit(s[1]))) return true;
  if ((len > 1 && s[0] == '(' && s[1] == ')') || (len > 3 && IsByteOrder(s[0]) && s[1] == '(' && s[2] == ')')) {
    return true;
  }
  int sqbracket = 0;
  for (char c : s) {
    if (c == ',' && sqbracket == 0) return true;
    if (c == '[') ++sqbracket;
    if (c == ']') --sqbracket;
  }
  return false;
}

// IsDatetime is numpy's is_datetime_typestr: M8/m8 or datetime64/timedelta64,
// alone or followed by a [unit].
bool IsDatetime(std::string_view t) {
  for (std::string_view prefix : {"M8", "m8", "datetime64", "timedelta64"}) {
    if (t.starts_with(prefix) && (t.size() == prefix.size() || t[prefix.size()] == '[')) return true;
  }
  return false;
}

// StrtolFull: C's strtol(t, &end, 10) consumed all of `t` (leading
// whitespace and a sign allowed), and its value.
std::optional<int64_t> StrtolFull(std::string_view t) {
  size_t i = 0;
  while (i < t.size() && IsCSpace(t[i])) ++i;
  bool negative = false;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) negative = t[i++] == '-';
  const size_t digits = i;
  int64_t v = 0;
  while (i < t.size() && IsDigit(t[i])) {
    if (v > std::numeric_limits<int32_t>::max()) return std::nullopt;  // beyond numpy's int: not followed
    v = v * 10 + (t[i++] - '0');
  }
  if (i == digits || i != t.size()) return std::nullopt;
  return negative ? -v : v;
}

// FromString is _convert_from_str.
NumpyDtype FromString(std::string_view s, int level) {
  if (level > kMaxStringLevel || s.empty()) return Unknown();
  if (CheckForCommastring(s)) return CommaString(s, level);
  const std::string_view whole = s;
  char order = '=';
  if (IsByteOrder(s[0])) {
    order = s[0];
    s.remove_prefix(1);
  }
  if (s.empty()) return Unknown();
  if (IsDatetime(s)) return Simple(s[0] == 'M' || s[0] == 'd' ? 'M' : 'm', 8, order);
  if (s.size() == 1) {
    if (std::optional<TypeName> t = FindName(s)) return Simple(t->kind, t->size, order);
  } else if (std::optional<int64_t> size = StrtolFull(s.substr(1))) {
    const int64_t n = *size;
    switch (s[0]) {
      case 'S': case 'a': return n < 0 ? Unknown() : Simple('S', static_cast<uint64_t>(n), order);
      case 'U':
        return n < 0 || static_cast<uint64_t>(n) > kMaxItemSize / 4 ? Unknown()
                                                                       : Simple('U', static_cast<uint64_t>(n) * 4, order);
      case 'V': return n < 0 ? Unknown() : Simple('V', static_cast<uint64_t>(n), order);
      default: {
        // PyArray_TypestrConvert(elsize, kind).
        const char k = s[0];
        const bool ok = (k == 'b' && n == 1) || ((k == 'i' || k == 'u') && (n == 1 || n == 2 || n == 4 || n == 8)) ||
                        (k == 'f' && (n == 2 || n == 4 || n == 8 || n == 16)) ||
                        (k == 'c' && (n == 8 || n == 16 || n == 32)) || (k == 'O' && (n == 4 || n == 8)) ||
                        ((k == 'M' || k == 'm') && n == 8);
        if (ok) return k == 'O' ? Objects() : Simple(k, static_cast<uint64_t>(n), order);
        break;  // then np.sctypeDict, below
      }
    }
  }
  // np.sctypeDict, looked up with the whole string.
  if (std::optional<TypeName> t = FindName(whole)) return Simple(t->kind, t->size, '=');
  return Unknown();
}

Shape ShapeOf(std::span<const DescrValue> values, const DescrValue& v) {
  Shape shape;
  if (v.kind == DescrValue::Kind::kInt) {
    if (v.is_bool || !v.number || *v.number < 0) return shape;
    shape.valid = true;
    shape.is_int = true;
    shape.count = static_cast<uint64_t>(*v.number);
    return shape;
  }
  if (v.kind != DescrValue::Kind::kTuple && v.kind != DescrValue::Kind::kList) return shape;
  for (uint32_t i : v.items) {
    const DescrValue& d = values[i];
    if (d.kind != DescrValue::Kind::kInt || d.is_bool || !d.number || *d.number < 0 ||
        __builtin_mul_overflow(shape.count, static_cast<uint64_t>(*d.number), &shape.count)) {
      return Shape{};
    }
  }
  shape.valid = true;
  return shape;
}

}  // namespace

NumpyDtype InterpretDtypeString(std::string_view s) { return FromString(s, 0); }

NumpyDtype InterpretDescr(std::span<const DescrValue> values) {
  if (values.empty()) return Unknown();
  // One pass in post-order: each node's descr_to_dtype, from its items'.
  std::vector<NumpyDtype> as_dtype(values.size());
  for (size_t n = 0; n < values.size(); ++n) {
    const DescrValue& v = values[n];
    for (uint32_t item : v.items) {
      if (item >= n) return Unknown();  // not post-order: not a tree we made
    }
    switch (v.kind) {
      case DescrValue::Kind::kStr:
        as_dtype[n] = InterpretDtypeString(v.text);
        break;
      case DescrValue::Kind::kTuple:
        // numpy.dtype((descr_to_dtype(t[0]), t[1])); items after t[1] are ignored.
        as_dtype[n] = v.items.size() < 2 ? Unknown()
                                          : Subarray(as_dtype[v.items[0]], ShapeOf(values, values[v.items[1]]));
        break;
      case DescrValue::Kind::kList: {
        Fields fields;
        for (uint32_t f : v.items) {
          const DescrValue& field = values[f];
          NumpyDtype dt;
          if ((field.kind == DescrValue::Kind::kTuple || field.kind == DescrValue::Kind::kList) &&
              (field.items.size() == 2 || field.items.size() == 3)) {
            dt = as_dtype[field.items[1]];
            if (field.items.size() == 3) dt = Subarray(dt, ShapeOf(values, values[field.items[2]]));
          } else if (field.kind == DescrValue::Kind::kStr && field.text.size() == 2 &&
                     static_cast<unsigned char>(field.text[1]) < 0x80) {
            // A two-character str unpacks into (name, descr).
            dt = InterpretDtypeString(field.text.substr(1));
          } else {
            dt = Unknown();
          }
          fields.Add(dt);
        }
        as_dtype[n] = fields.Result();
        break;
      }
      default:
        as_dtype[n] = Unknown();
        break;
    }
  }
  return as_dtype.back();
}

}  // namespace ckptguard
