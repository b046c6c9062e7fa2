// The same stage including its own and earlier stages' headers compiles
// (CTest: layering_allowed_by_build, the control for the test above).
#include "ckptguard/budget.h"
#include "ckptguard/pickle_decoder.h"
