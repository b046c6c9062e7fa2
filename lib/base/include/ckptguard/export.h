// What a shared ckptguard library exports: exactly what its public headers
// declare. The libraries are compiled with hidden visibility (CMake:
// CXX_VISIBILITY_PRESET hidden, ckptguard_library_properties in
// CMakeLists.txt), and every public header wraps its declarations in
// CKPTGUARD_API_BEGIN / CKPTGUARD_API_END, so functions and classes that
// only .cc files or private headers (src/) declare stay inside the library.
// A static library is unaffected: its symbols link as before.
#ifndef CKPTGUARD_EXPORT_H_
#define CKPTGUARD_EXPORT_H_

#define CKPTGUARD_API_BEGIN _Pragma("GCC visibility push(default)")
#define CKPTGUARD_API_END _Pragma("GCC visibility pop")

#endif  // CKPTGUARD_EXPORT_H_
