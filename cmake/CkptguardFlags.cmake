# Warnings, hardening and sanitizers as INTERFACE targets that each target
# links PRIVATE, never as global flags.

add_library(ckptguard_warnings INTERFACE)
target_compile_options(ckptguard_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
  -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
  -Wnull-dereference -Wimplicit-fallthrough -Werror=return-type)

# Executables are position independent (PIE, linked -pie); libraries are
# PIC, so that the same static libraries link into the executables and into
# the Python extension (a shared object). -fno-semantic-interposition keeps
# PIC code as fast as PIE: calls between the library's own functions are not
# made interposable (no extension needs to interpose them).
add_library(ckptguard_hardening INTERFACE)
set(_ckg_is_exe "$<STREQUAL:$<TARGET_PROPERTY:TYPE>,EXECUTABLE>")
target_compile_options(ckptguard_hardening INTERFACE
  -fstack-protector-strong
  $<IF:${_ckg_is_exe},-fPIE,-fPIC>
  $<$<NOT:${_ckg_is_exe}>:-fno-semantic-interposition>
  $<$<NOT:$<CONFIG:Debug>>:-D_FORTIFY_SOURCE=2>)
target_compile_definitions(ckptguard_hardening INTERFACE
  $<$<CONFIG:Debug>:_GLIBCXX_ASSERTIONS>)
# Sanitized executables are linked -no-pie. At -O0, ASan and UBSan give each
# object megabytes of check data full of pointers: the test CLI carried 81 MB
# of relocations, which the loader applied at every start (0.4 s of the 0.9 s
# `ckptguard --version` took), and the test suites start the CLI thousands of
# times. Released builds stay PIE.
if(CKPTGUARD_SANITIZE)
  set(_ckg_exe_link -no-pie)
else()
  set(_ckg_exe_link -pie)
endif()
target_link_options(ckptguard_hardening INTERFACE $<${_ckg_is_exe}:${_ckg_exe_link}> -Wl,-z,relro,-z,now)

add_library(ckptguard_sanitize INTERFACE)
if(CKPTGUARD_SANITIZE)
  list(JOIN CKPTGUARD_SANITIZE "," _ckg_san)
  target_compile_options(ckptguard_sanitize INTERFACE
    -fsanitize=${_ckg_san} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_compile_definitions(ckptguard_sanitize INTERFACE _GLIBCXX_ASSERTIONS)
  # GCC's ASan also pads and registers every UBSan check record as a global:
  # at -O0 that made 92 MB of data in the test CLI (2.9 MB per object, 4x the
  # records themselves), which every process registers, poisons and, at exit,
  # LeakSanitizer scans (0.3 s of each CLI start; the suites start it
  # thousands of times). So the GCC build leaves globals unpadded; heap, stack
  # and use-after-free checks are unchanged, and the fuzz build (clang, which
  # never pads its own check records) still checks global overflows.
  if("address" IN_LIST CKPTGUARD_SANITIZE AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(ckptguard_sanitize INTERFACE --param=asan-globals=0)
  endif()
  target_link_options(ckptguard_sanitize INTERFACE -fsanitize=${_ckg_san})
endif()

if(CKPTGUARD_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "CKPTGUARD_FUZZ=ON needs clang (libFuzzer); configure with the 'fuzz' preset")
  endif()
  # Coverage instrumentation for everything the fuzz targets link.
  target_compile_options(ckptguard_sanitize INTERFACE -fsanitize=fuzzer-no-link)
endif()

# ckptguard_defaults bundles the three for project targets.
add_library(ckptguard_defaults INTERFACE)
target_link_libraries(ckptguard_defaults INTERFACE
  ckptguard_warnings ckptguard_hardening ckptguard_sanitize)
