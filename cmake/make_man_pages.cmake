# make_man_pages.cmake: man pages from the commands' own --help (help2man),
# so they never drift from the program: ckptguard(1), one
# ckptguard-COMMAND(1) per subcommand (listed by `ckptguard --help`), and
# ckptguardd(1); gzipped (-n: no time stamp) as Debian installs them.
# Usage: cmake -DHELP2MAN=... -DCLI=... -DDAEMON=... -DVERSION=... -DOUT=... -P make_man_pages.cmake
file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}")

function(man_page program name description output)
  execute_process(
    COMMAND "${HELP2MAN}" --no-info --no-discard-stderr "--version-string=${VERSION}" "--name=${description}"
            "--output=${OUT}/${output}" "${program}"
    RESULT_VARIABLE rc ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "help2man ${program}: ${err}")
  endif()
  # help2man heads a subcommand's page with the command's name: name the page
  # as it is installed (CKPTGUARD-SCAN).
  string(TOUPPER "${name}" upper)
  file(READ "${OUT}/${output}" text)
  string(REGEX REPLACE "\n\\.TH [^ ]+ " "\n.TH ${upper} " text "${text}")
  file(WRITE "${OUT}/${output}" "${text}")
  execute_process(COMMAND gzip -9nf "${OUT}/${output}" RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "gzip ${output} failed")
  endif()
endfunction()

man_page("${CLI}" ckptguard "scan, inspect, load and convert untrusted PyTorch checkpoints without running them" ckptguard.1)
man_page("${DAEMON}" ckptguardd "the ckptguard signed checkpoint registry server" ckptguardd.1)
execute_process(COMMAND "${CLI}" --help OUTPUT_VARIABLE help RESULT_VARIABLE rc)
string(REGEX REPLACE ".*\nSubcommands:\n" "" subcommands "${help}")
string(REGEX MATCHALL "\n?  [a-z][a-z-]*" lines "${subcommands}")
foreach(line IN LISTS lines)
  string(STRIP "${line}" sub)
  # The first line of the subcommand's help says what it does.
  execute_process(COMMAND "${CLI}" "${sub}" --help OUTPUT_VARIABLE sub_help)
  string(REGEX MATCH "^[^\n]+" what "${sub_help}")
  man_page("${CLI} ${sub}" "ckptguard-${sub}" "${what}" "ckptguard-${sub}.1")
endforeach()
file(TOUCH "${OUT}/.stamp")
