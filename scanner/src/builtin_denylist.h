// The built-in denylist, generated into the build tree from
// rules/denylist.toml by scanner/CMakeLists.txt.
#ifndef CKPTGUARD_SCANNER_SRC_BUILTIN_DENYLIST_H_
#define CKPTGUARD_SCANNER_SRC_BUILTIN_DENYLIST_H_

#include <string_view>

namespace ckptguard::scanner {

// kBuiltinDenylistToml is the text of rules/denylist.toml.
extern const std::string_view kBuiltinDenylistToml;

}  // namespace ckptguard::scanner

#endif  // CKPTGUARD_SCANNER_SRC_BUILTIN_DENYLIST_H_
