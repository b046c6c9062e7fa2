# CkptguardPackage.cmake: what the commands bring besides themselves (man
# pages, shell completions, the systemd unit, the licence) and the Debian
# packages CPack makes of it all:
#
#   ckptguard          the commands, man pages, completions, ckptguardd.service
#   libckptguard-dev   the C++ package (component "lib": docs/cpp.md)
#
#   cmake --preset release -DCMAKE_INSTALL_PREFIX=/usr && cmake --build --preset release
#   (cd build/release && cpack -G DEB)       # or: bash scripts/package.sh
#
# tests/packaging/deb_test.sh builds both packages, checks what they hold,
# and (as root) installs them with dpkg, uses them and purges them.

# Man pages, made from the commands' --help by help2man (Debian: help2man).
find_program(CKPTGUARD_HELP2MAN help2man)
set(CKPTGUARD_MAN_DIR "${PROJECT_BINARY_DIR}/man")
if(CKPTGUARD_HELP2MAN)
  add_custom_command(
    OUTPUT "${CKPTGUARD_MAN_DIR}/.stamp"
    COMMAND ${CMAKE_COMMAND} -DHELP2MAN=${CKPTGUARD_HELP2MAN} -DCLI=$<TARGET_FILE:ckptguard>
            -DDAEMON=$<TARGET_FILE:ckptguardd> -DVERSION=${PROJECT_VERSION} -DOUT=${CKPTGUARD_MAN_DIR}
            -P ${PROJECT_SOURCE_DIR}/cmake/make_man_pages.cmake
    DEPENDS ckptguard ckptguardd ${PROJECT_SOURCE_DIR}/cmake/make_man_pages.cmake
    COMMENT "Man pages from --help (help2man)"
    VERBATIM)
  add_custom_target(ckptguard_man ALL DEPENDS "${CKPTGUARD_MAN_DIR}/.stamp")
  install(DIRECTORY "${CKPTGUARD_MAN_DIR}/" DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT cli
          FILES_MATCHING PATTERN "*.1.gz")
else()
  message(STATUS "help2man not found: no man pages (bash scripts/setup.sh installs it)")
endif()

# Shell completions (read subcommands and options from --help at completion time).
install(FILES ${PROJECT_SOURCE_DIR}/packaging/completions/ckptguard.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME ckptguard COMPONENT cli)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/completions/ckptguard.bash
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME ckptguardd COMPONENT cli)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/completions/_ckptguard
        DESTINATION ${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions COMPONENT cli)
install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME copyright COMPONENT cli)

# The systemd unit names /usr/bin/ckptguardd: it is for the prefix /usr (the
# Debian package), and installed only when asked for (--component service).
install(FILES ${PROJECT_SOURCE_DIR}/packaging/ckptguardd.service
        DESTINATION lib/systemd/system COMPONENT service EXCLUDE_FROM_ALL)

# Debian packages.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ckptguard)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "ckptguard developers")
set(CPACK_PACKAGE_CONTACT "ckptguard developers")
set(CPACK_RESOURCE_FILE_LICENSE "${PROJECT_SOURCE_DIR}/LICENSE")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_COMPONENTS_ALL cli service lib)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_GROUPING ONE_PER_GROUP)
set(CPACK_COMPONENT_CLI_GROUP tools)
set(CPACK_COMPONENT_SERVICE_GROUP tools)
set(CPACK_COMPONENT_LIB_GROUP dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME ckptguard)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_TOOLS_DESCRIPTION "load and scan untrusted PyTorch checkpoints without running them
ckptguard reads PyTorch checkpoints (.pt, .pth, .bin, .ckpt), safetensors,
numpy and joblib files with hardened parsers and never executes anything
from them: `ckptguard scan` finds what loading a file would run (text, JSON
and SARIF reports), `inspect`, `convert` and `check` load tensors through a
restricted pickle machine, `sign` and `verify-signature` use OpenSSF model
signing, and ckptguardd (ckptguardd.service, not enabled on install) keeps a
signed registry of scanned models.")
set(CPACK_DEBIAN_TOOLS_PACKAGE_CONTROL_EXTRA
    "${PROJECT_SOURCE_DIR}/packaging/debian/postinst;${PROJECT_SOURCE_DIR}/packaging/debian/prerm;${PROJECT_SOURCE_DIR}/packaging/debian/postrm")
set(CPACK_DEBIAN_TOOLS_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libckptguard-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_DESCRIPTION "C++ library to load and scan untrusted PyTorch checkpoints (development files)
The ckptguard loader, writers, scanner, model signing and registry client as
static libraries (or shared, when built so), with headers, a CMake package
(find_package(ckptguard), target ckptguard::ckptguard) and ckptguard.pc.")
# The static libraries link these; a consumer needs their headers and archives.
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libssl-dev, zlib1g-dev, libbz2-dev, liblzma-dev, libarchive-dev, libre2-dev, libdeflate-dev, pkg-config")
include(CPack)
