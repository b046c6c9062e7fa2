// Untrusted text (keys, names, strings and paths from a file) made safe to
// print on a terminal.
#ifndef CKPTGUARD_PRINTABLE_H_
#define CKPTGUARD_PRINTABLE_H_

#include <string>
#include <string_view>

#include "ckptguard/export.h"

CKPTGUARD_API_BEGIN
namespace ckptguard {

// AppendPrintable appends `text` for a terminal: C0 controls (newline and
// tab included), DEL, C1 controls and bytes that are not well-formed UTF-8 as
// \xNN; the bidirectional formatting characters (CVE-2021-42574) as \u{NNNN};
// everything else as it is. A checkpoint can then neither set the terminal's
// title or colours, move the cursor, overwrite or forge lines, nor reorder
// what a line shows.
void AppendPrintable(std::string& out, std::string_view text);

// Printable returns `text` escaped as AppendPrintable does.
std::string Printable(std::string_view text);

// AppendJsonString appends `text` as a JSON string literal, as Python's
// json.dumps(ensure_ascii=False) writes the str it holds: `text` is UTF-8
// with lone surrogates kept (CPython's "surrogatepass", as the pickle
// decoder keeps them), which become \udXXX escapes; controls are escaped;
// bytes that are not part of such UTF-8 (a zip entry name, a path) become
// U+FFFD. JSON output is then lossless for every str a pickle can hold.
void AppendJsonString(std::string& out, std::string_view text);

}  // namespace ckptguard

CKPTGUARD_API_END

#endif  // CKPTGUARD_PRINTABLE_H_
