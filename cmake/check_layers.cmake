# check_layers.cmake: every include of a public ckptguard header in lib/<stage>
# names a header of that stage or of an earlier one (base < pickle < formats <
# load < write), and scanner/, signing/, daemon/ and cli/ include only
# headers of lib/ and of components before them. The build already refuses
# such an include (a stage's include path holds only the stages before it);
# this names the offending line instead of a "file not found".
# Usage: cmake -DSOURCE_DIR=<repo> -P cmake/check_layers.cmake
set(stages base pickle formats load write)
set(header_stage_map "")
foreach(stage IN LISTS stages)
  file(GLOB headers RELATIVE "${SOURCE_DIR}/lib/${stage}/include/ckptguard" "${SOURCE_DIR}/lib/${stage}/include/ckptguard/*.h")
  foreach(h IN LISTS headers)
    list(APPEND header_stage_map "${h}=${stage}")
  endforeach()
endforeach()

function(stage_of header out)
  foreach(pair IN LISTS header_stage_map)
    if(pair MATCHES "^${header}=(.*)$")
      set(${out} "${CMAKE_MATCH_1}" PARENT_SCOPE)
      return()
    endif()
  endforeach()
  set(${out} "" PARENT_SCOPE)
endfunction()

set(failures 0)
set(index 0)
foreach(stage IN LISTS stages)
  file(GLOB_RECURSE files "${SOURCE_DIR}/lib/${stage}/*.h" "${SOURCE_DIR}/lib/${stage}/*.cc" "${SOURCE_DIR}/lib/${stage}/*.in")
  foreach(f IN LISTS files)
    file(STRINGS "${f}" lines REGEX "^#include \"ckptguard/[a-z0-9_]+\\.h\"")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^#include \"ckptguard/([a-z0-9_]+\\.h)\".*" "\\1" header "${line}")
      stage_of("${header}" header_stage)
      if(header_stage STREQUAL "")
        continue()  # another component's header: the link line refuses it
      endif()
      list(FIND stages "${header_stage}" header_index)
      if(header_index GREATER index)
        file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
        message(SEND_ERROR "${rel}: includes ckptguard/${header} of stage '${header_stage}', after '${stage}' in the pipeline")
        math(EXPR failures "${failures} + 1")
      endif()
    endforeach()
  endforeach()
  math(EXPR index "${index} + 1")
endforeach()

# Components after lib/: the scanner and signing are independent of each
# other and of the daemon; the daemon may use both; the CLI everything.
foreach(component scanner signing)
  file(GLOB_RECURSE files "${SOURCE_DIR}/${component}/*.h" "${SOURCE_DIR}/${component}/*.cc")
  foreach(f IN LISTS files)
    file(STRINGS "${f}" lines REGEX "^#include \"ckptguard/(daemon|scanner|signing)/")
    foreach(line IN LISTS lines)
      if(NOT line MATCHES "ckptguard/${component}/")
        file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
        message(SEND_ERROR "${rel}: ${line}: ${component}/ may include only lib/ and its own headers")
        math(EXPR failures "${failures} + 1")
      endif()
    endforeach()
  endforeach()
endforeach()

if(failures GREATER 0)
  message(FATAL_ERROR "${failures} include(s) against the pipeline")
endif()
message(STATUS "layers: every include follows the pipeline")
