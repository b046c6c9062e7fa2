# Warnings, hardening and sanitizers as INTERFACE targets that each target
# links PRIVATE, never as global flags.

add_library(ckptguard_warnings INTERFACE)
target_compile_options(ckptguard_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wno-sign-conversion
  -Wnon-virtual-dtor -Wold-style-cast -Wcast-align -Woverloaded-virtual
  -Wnull-dereference -Wimplicit-fallthrough -Werror=return-type)

add_library(ckptguard_hardening INTERFACE)
target_compile_options(ckptguard_hardening INTERFACE
  -fstack-protector-strong -fPIE
  $<$<NOT:$<CONFIG:Debug>>:-D_FORTIFY_SOURCE=2>)
target_compile_definitions(ckptguard_hardening INTERFACE
  $<$<CONFIG:Debug>:_GLIBCXX_ASSERTIONS>)
target_link_options(ckptguard_hardening INTERFACE -pie -Wl,-z,relro,-z,now)

add_library(ckptguard_sanitize INTERFACE)
if(CKPTGUARD_SANITIZE)
  list(JOIN CKPTGUARD_SANITIZE "," _ckg_san)
  target_compile_options(ckptguard_sanitize INTERFACE
    -fsanitize=${_ckg_san} -fno-sanitize-recover=all -fno-omit-frame-pointer)
  target_compile_definitions(ckptguard_sanitize INTERFACE _GLIBCXX_ASSERTIONS)
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
