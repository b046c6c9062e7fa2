# CkptguardInstall.cmake: what `cmake --install` puts under the prefix.
#
#   component "lib"   the C++ libraries (static by default, shared with
#                     -DBUILD_SHARED_LIBS=ON: soname libckptguard_<stage>.so.MAJOR.MINOR),
#                     the public headers (include/ckptguard/...), the CMake
#                     package (lib/cmake/ckptguard: find_package(ckptguard)
#                     gives ckptguard::ckptguard) and lib/pkgconfig/ckptguard.pc
#   component "cli"   the ckptguard and ckptguardd commands
#   component "python" the Python package (python/CMakeLists.txt)
#
# docs/cpp.md says how to use the package; tests/consumer/ is the program the
# consumer test builds against an installed prefix.
include(CMakePackageConfigHelpers)

set(CKPTGUARD_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/ckptguard")
set(_ckg_libraries
    ckptguard_base ckptguard_pickle ckptguard_formats ckptguard_load ckptguard_write
    ckptguard_scanner ckptguard_signing ckptguard_registry_client)

# ckptguard::ckptguard: everything a consumer links, with C++23 required.
add_library(ckptguard_all INTERFACE)
add_library(ckptguard::ckptguard ALIAS ckptguard_all)
set_target_properties(ckptguard_all PROPERTIES EXPORT_NAME ckptguard)
target_link_libraries(ckptguard_all INTERFACE
  ckptguard::lib ckptguard::scanner ckptguard::signing ckptguard::registry_client)
target_compile_features(ckptguard_all INTERFACE cxx_std_23)

# The link helpers of CMakeLists.txt (static RE2 and libarchive when Debian
# ships their archives) go with the static libraries that name them.
set_target_properties(ckptguard_re2 PROPERTIES EXPORT_NAME re2_link)
set_target_properties(ckptguard_libarchive PROPERTIES EXPORT_NAME libarchive_link)
set_target_properties(ckptguard_libdeflate PROPERTIES EXPORT_NAME libdeflate_link)

install(TARGETS ${_ckg_libraries} ckptguard_lib ckptguard_all ckptguard_re2 ckptguard_libarchive ckptguard_libdeflate
  EXPORT ckptguardTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT lib NAMELINK_COMPONENT lib
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT lib
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# Public headers: every stage's include/ckptguard/*.h, the scanner's and the
# signer's subfolders, the registry client's header, the generated version.h.
foreach(stage base pickle formats load write)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/lib/${stage}/include/ckptguard
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT lib FILES_MATCHING PATTERN "*.h")
endforeach()
install(DIRECTORY ${PROJECT_SOURCE_DIR}/scanner/include/ckptguard ${PROJECT_SOURCE_DIR}/signing/include/ckptguard
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT lib FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_SOURCE_DIR}/daemon/include/ckptguard/daemon/client.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ckptguard/daemon COMPONENT lib)
install(FILES ${CKPTGUARD_GENERATED_INCLUDE_DIR}/ckptguard/version.h
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/ckptguard COMPONENT lib)

install(EXPORT ckptguardTargets NAMESPACE ckptguard:: DESTINATION ${CKPTGUARD_INSTALL_CMAKEDIR} COMPONENT lib)
if(BUILD_SHARED_LIBS)
  set(CKPTGUARD_PACKAGE_SHARED ON)
else()
  set(CKPTGUARD_PACKAGE_SHARED OFF)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/ckptguardConfig.cmake.in
  ${PROJECT_BINARY_DIR}/generated/ckptguardConfig.cmake
  INSTALL_DESTINATION ${CKPTGUARD_INSTALL_CMAKEDIR})
# 0.x: a minor release may break the API, so only the same MAJOR.MINOR matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/generated/ckptguardConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/generated/ckptguardConfig.cmake
              ${PROJECT_BINARY_DIR}/generated/ckptguardConfigVersion.cmake
        DESTINATION ${CKPTGUARD_INSTALL_CMAKEDIR} COMPONENT lib)

# pkg-config: static libraries need their dependencies on the plain --libs
# line (Requires), shared ones only for --static (Requires.private).
if(BUILD_SHARED_LIBS)
  set(CKPTGUARD_PC_REQUIRES "")
  set(CKPTGUARD_PC_REQUIRES_PRIVATE "libcrypto libssl zlib liblzma re2 libarchive libdeflate")
  set(CKPTGUARD_PC_LIBS_PRIVATE "-lbz2 -pthread")
  set(CKPTGUARD_PC_LIBS_EXTRA "")
else()
  set(CKPTGUARD_PC_REQUIRES "libcrypto libssl zlib liblzma re2 libdeflate")
  set(CKPTGUARD_PC_REQUIRES_PRIVATE "")
  set(CKPTGUARD_PC_LIBS_PRIVATE "")
  # libarchive.pc's --libs names only -larchive; its static archive (what
  # the static libraries link) also needs bzip2, liblzma and zlib.
  if(CKPTGUARD_LIBARCHIVE_STATIC)
    set(CKPTGUARD_PC_LIBS_EXTRA "${CKPTGUARD_LIBARCHIVE_STATIC} -lbz2 -pthread")
  else()
    set(CKPTGUARD_PC_LIBS_EXTRA "-larchive -lbz2 -pthread")
  endif()
  if(CKPTGUARD_RE2_IS_STATIC)
    set(CKPTGUARD_PC_REQUIRES "libcrypto libssl zlib liblzma libdeflate")
    set(CKPTGUARD_PC_LIBS_EXTRA "${CKPTGUARD_RE2_STATIC} ${CKPTGUARD_PC_LIBS_EXTRA}")
  endif()
endif()
# The prefix as seen from the .pc file's folder, so that an installed tree
# can move (cmake --install --prefix, DESTDIR, a .deb).
string(REGEX REPLACE "[^/]+" ".." CKPTGUARD_PC_UP "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
configure_file(${PROJECT_SOURCE_DIR}/cmake/ckptguard.pc.in ${PROJECT_BINARY_DIR}/generated/ckptguard.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/generated/ckptguard.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT lib)

# Built shared, the commands find the libraries from where they are installed.
if(BUILD_SHARED_LIBS)
  set_target_properties(ckptguard ckptguardd PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
endif()
install(TARGETS ckptguard ckptguardd RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)

include(CkptguardPackage)  # man pages, completions, the systemd unit, Debian packages
