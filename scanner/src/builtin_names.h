// The built-in rules/pickle_names.toml, generated
// into the build tree by scanner/CMakeLists.txt.
#ifndef CKPTGUARD_SCANNER_SRC_BUILTIN_NAMES_H_
#define CKPTGUARD_SCANNER_SRC_BUILTIN_NAMES_H_

#include <string_view>

namespace ckptguard::scanner {

// kBuiltinPickleNamesToml is the text of rules/pickle_names.toml.
extern const std::string_view kBuiltinPickleNamesToml;

}  // namespace ckptguard::scanner

#endif  // CKPTGUARD_SCANNER_SRC_BUILTIN_NAMES_H_
