"""``ibfab completion``: a bash completion script made from the command line's own parser, so it
knows every command, option and choice that this install has (node software's included).

    eval "$(ibfab completion)"           # this shell
    ibfab completion > /etc/bash_completion.d/ibfab

Fabric names after ``--name`` come from the run base (``IBFAB_RUN_BASE``, or ``/tmp/ibfab-UID``),
node names after a node argument from the running fabric's ``fabric.json``, without starting Python.
"""

from __future__ import annotations

import argparse
import shlex

_HEAD = r'''# bash completion for ibfab (made by `ibfab completion`; regenerate after an upgrade)
_ibfab_base() { echo "${IBFAB_RUN_BASE:-${TMPDIR:-/tmp}/ibfab-$(id -u)}"; }
_ibfab_fabrics() { local d; for d in "$(_ibfab_base)"/*/fabric.json; do [[ -e "$d" ]] && basename "$(dirname "$d")"; done; }
_ibfab_nodes() {
    # the devices of the fabric named on the command line (or "default"), from its fabric.json
    local name=default i
    for ((i=1; i<${#COMP_WORDS[@]}; i++)); do
        [[ "${COMP_WORDS[i]}" == --name ]] && name="${COMP_WORDS[i+1]}"
    done
    local f="$(_ibfab_base)/$name/fabric.json"
    [[ -r "$f" ]] && tr -d ' \n' < "$f" | grep -o '"devices":\[[^]]*\]' | grep -o '"[^"]*"' | grep -v devices | tr -d '"'
}
_ibfab() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" cmd="" i npos=0
    for ((i=1; i<COMP_CWORD; i++)); do
        case "${COMP_WORDS[i]}" in
            --) return 0 ;;  # the rest is another program's command line
            -*) ;;
            *) if [[ -z "$cmd" ]]; then cmd="${COMP_WORDS[i]}";
               elif [[ " $(_ibfab_flags "$cmd") " != *" ${COMP_WORDS[i-1]} "* ]]; then
                   npos=$((npos+1)); fi ;;  # not the value of an option before it: a positional
        esac
    done
    if [[ -z "$cmd" ]]; then
        COMPREPLY=($(compgen -W "__COMMANDS__ --debug --help" -- "$cur")); return 0
    fi
    if [[ "$prev" == --name ]]; then COMPREPLY=($(compgen -W "$(_ibfab_fabrics)" -- "$cur")); return 0; fi
    local choices
    choices="$(_ibfab_choices "$cmd" "$prev")"
    if [[ -n "$choices" ]]; then COMPREPLY=($(compgen -W "$choices" -- "$cur")); return 0; fi
    if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$(_ibfab_opts "$cmd")" -- "$cur")); return 0; fi
    case "$(_ibfab_positional "$cmd" "$npos")" in
        node) COMPREPLY=($(compgen -W "$(_ibfab_nodes)" -- "$cur")) ;;
        file) COMPREPLY=($(compgen -f -- "$cur")) ;;
        "") ;;
        *) COMPREPLY=($(compgen -W "$(_ibfab_positional "$cmd" "$npos")" -- "$cur")) ;;
    esac
    return 0
}
'''

# positional arguments whose values are node names, and those that are files
_NODE_DESTS = {"node", "src", "dst", "device", "SRC", "DST"}
_FILE_DESTS = {"topology", "file"}


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return dict(a.choices)
    return {}


def script(parser: argparse.ArgumentParser) -> str:
    """The completion script for ``parser`` (ibfab's)."""
    subs = _subcommands(parser)
    opts, flags, choices, positional = [], [], [], []
    for name, sp in sorted(subs.items()):
        words, takes_value, n = [], [], 0
        for a in sp._actions:
            if a.option_strings:
                words += a.option_strings
                if a.nargs != 0:
                    takes_value += a.option_strings
                if a.choices is not None:
                    for flag in a.option_strings:
                        choices.append(f"        {name}:{flag}) echo {shlex.quote(' '.join(map(str, a.choices)))} ;;")
            else:
                if a.choices is not None:
                    what = " ".join(map(str, a.choices))
                elif a.dest in _NODE_DESTS:
                    what = "node"
                elif a.dest in _FILE_DESTS:
                    what = "file"
                else:
                    what = ""
                if what:
                    positional.append(f"        {name}:{n}) echo {shlex.quote(what)} ;;")
                n += 1
        opts.append(f"        {name}) echo {shlex.quote(' '.join(sorted(words)))} ;;")
        flags.append(f"        {name}) echo {shlex.quote(' '.join(sorted(takes_value)))} ;;")
    out = [_HEAD.replace("__COMMANDS__", " ".join(sorted(subs)))]
    out.append('_ibfab_opts() {\n    case "$1" in\n' + "\n".join(opts) + "\n    esac\n}")
    out.append('_ibfab_flags() {\n    case "$1" in\n' + "\n".join(flags) + "\n    esac\n}")
    out.append('_ibfab_choices() {\n    case "$1:$2" in\n' + "\n".join(choices) + "\n    esac\n}")
    out.append('_ibfab_positional() {\n    case "$1:$2" in\n' + "\n".join(positional) + "\n    esac\n}")
    out.append("complete -F _ibfab ibfab\n")
    return "\n".join(out)


def cmd_completion(args) -> int:
    from . import build_parser

    print(script(build_parser()), end="")
    return 0


def register(sub, common) -> None:
    p = common.add("completion", cmd_completion, "print a bash completion script: eval \"$(ibfab completion)\"",
                   named=False)
    p.add_argument("shell", nargs="?", choices=["bash"], default="bash", help="the shell (bash)")
