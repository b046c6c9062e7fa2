// How Boost.Test prints ckptguard's enums in failed assertions: by their
// stable names. Found by ADL, so these live in namespace ckptguard.
#ifndef CKPTGUARD_TESTS_PRINT_TYPES_H_
#define CKPTGUARD_TESTS_PRINT_TYPES_H_

#include <ostream>

#include "ckptguard/container.h"
#include "ckptguard/error.h"

namespace ckptguard {

inline std::ostream& boost_test_print_type(std::ostream& os, ContainerFormat f) { return os << ContainerFormatName(f); }
inline std::ostream& boost_test_print_type(std::ostream& os, ErrorCode e) { return os << ErrorCodeName(e); }

}  // namespace ckptguard

#endif  // CKPTGUARD_TESTS_PRINT_TYPES_H_
