// A source of the pickle stage that includes a header of a later stage
// (formats). The pickle stage's include path does not hold it: this must not
// compile (CTest: layering_refused_by_build).
#include "ckptguard/container.h"
#include "ckptguard/pickle_decoder.h"
