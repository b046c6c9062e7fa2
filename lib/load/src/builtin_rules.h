// The built-in rules files, generated into the build tree from rules/ by
// lib/CMakeLists.txt (see builtin_rules.cc.in).
#ifndef CKPTGUARD_LIB_SRC_BUILTIN_RULES_H_
#define CKPTGUARD_LIB_SRC_BUILTIN_RULES_H_

#include <string_view>

namespace ckptguard {

// kBuiltinAllowlistToml is the text of rules/allowlist.toml.
extern const std::string_view kBuiltinAllowlistToml;
// kBuiltinCallablesToml is the text of rules/callables.toml.
extern const std::string_view kBuiltinCallablesToml;

}  // namespace ckptguard

#endif  // CKPTGUARD_LIB_SRC_BUILTIN_RULES_H_
