# bash completion for ckptguard and ckptguardd (installed as
# /usr/share/bash-completion/completions/ckptguard and .../ckptguardd).
# Subcommands and options are read from the commands' own --help, so the
# completion never lags behind the program; values of the options that take
# a fixed set, and paths for everything else.

# _ckptguard_words CMD... prints the subcommands (lines under "Subcommands:")
# and the long options of `CMD... --help`.
_ckptguard_words() {
  "$@" --help 2>/dev/null | awk '
    /^Subcommands:/ { sub_ = 1; next }
    /^[^ ]/ { sub_ = 0 }
    sub_ && /^  [a-z]/ { print $1 }
    { while (match($0, /--[A-Za-z0-9][A-Za-z0-9-]*/)) { print substr($0, RSTART, RLENGTH); $0 = substr($0, RSTART + RLENGTH) } }' | sort -u
}

_ckptguard() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  local prog=${COMP_WORDS[0]}
  case $prev in
    --format) COMPREPLY=($(compgen -W "text json sarif" -- "$cur")); return ;;
    --fail-on) COMPREPLY=($(compgen -W "safe suspicious dangerous" -- "$cur")); return ;;
    --symlinks) COMPREPLY=($(compgen -W "follow skip" -- "$cur")); return ;;
    --to) COMPREPLY=($(compgen -W "safetensors pt" -- "$cur")); return ;;
  esac
  # The subcommand path typed so far (words that are not options or paths).
  local cmd=("$prog") i
  for ((i = 1; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -*) ;;
      *) if _ckptguard_words "${cmd[@]}" | grep -qx -- "${COMP_WORDS[i]}"; then cmd+=("${COMP_WORDS[i]}"); fi ;;
    esac
  done
  local words
  words=$(_ckptguard_words "${cmd[@]}")
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$(grep -- '^-' <<<"$words")" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$(grep -v -- '^-' <<<"$words")" -- "$cur"))
    if [[ ${#COMPREPLY[@]} -eq 0 ]]; then
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -f -- "$cur"))
    fi
  fi
}
complete -F _ckptguard ckptguard ckptguardd
