"""``podium completion bash|zsh``: a shell completion script made from the parser.

The script's tables (commands, their flags, which flags take a value, what each
positional argument is) are read from the argparse parser when the script is
printed, so they cannot drift from the commands. Object names come from the
cluster as the user types: ``podium get KIND -o name``, with the ``-n`` and
``--server`` already on the line. zsh runs the same function through its
``bashcompinit``, with ksh's array and word-splitting rules switched on.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any

_HELP = "print a shell completion script (bash or zsh)"
_EXAMPLES = """examples:
  source <(podium completion bash)                  (in ~/.bashrc)
  podium completion bash > /etc/bash_completion.d/podium
  source <(podium completion zsh)                   (in ~/.zshrc)
"""

# What a positional argument is, by its dest: where its candidates come from.
_POSITIONAL = {"kind": "kind", "pod": "pod", "target": "target", "tarball": "file",
               "archive": "file", "context": "file"}
# And an option's value, by its dest.
_VALUE = {"filename": "file", "file": "file", "namespace": "namespace", "store": "file",
          "data": "file", "log_dir": "file", "run_dir": "file", "image_store": "file",
          "manifests": "file", "netns": "file"}


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("completion", help=_HELP, description=_HELP, parents=[common],
                       epilog=_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shell", choices=("bash", "zsh"))
    p.set_defaults(func=cmd_completion)


@dataclass
class Command:
    """One parser's part of the script; ``path`` is how it is typed: "podium image pull"."""
    path: str
    subcommands: dict[str, str] = field(default_factory=dict)  # typed name → path
    shown: list[str] = field(default_factory=list)  # primary names, in help order
    flags: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # flag taking a value → its kind
    positionals: list[str] = field(default_factory=list)  # kinds; "…*" repeats


def _value_kind(action: argparse.Action) -> str:
    if action.choices is not None:
        return "choice:" + ",".join(str(c) for c in action.choices)
    return _VALUE.get(action.dest, "-")


def walk(parser: argparse.ArgumentParser, path: str = "podium") -> list[Command]:
    """Every command reachable from ``parser``, parents before children."""
    here = Command(path)
    found = [here]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            primary: dict[int, str] = {}
            for name, child in action.choices.items():
                first = id(child) not in primary
                primary.setdefault(id(child), name)
                child_path = f"{path} {primary[id(child)]}"
                here.subcommands[name] = child_path
                if first:
                    here.shown.append(name)
                    found += walk(child, child_path)
        elif action.option_strings:
            if action.help == argparse.SUPPRESS:
                continue
            here.flags += action.option_strings
            if action.nargs != 0:
                for option in action.option_strings:
                    here.values[option] = _value_kind(action)
        else:
            here.positionals.append(_positional_kind(action, here.positionals, path))
    return found


def _positional_kind(action: argparse.Action, before: list[str], path: str) -> str:
    from client.api import ClientError, kind_info

    if action.choices is not None:
        kind = "choice:" + ",".join(str(c) for c in action.choices)
    elif action.dest in ("names", "name") and "kind" in before:
        kind = "name"
    elif action.dest in ("names", "name"):
        # Under a command named for a kind (``top pods``): names of that kind.
        try:
            kind = f"name:{kind_info(path.rsplit(' ', 1)[-1]).plural}"
        except ClientError:
            kind = "-"
    else:
        kind = _POSITIONAL.get(action.dest, "-")
    return kind + ("*" if action.nargs in ("*", "+") else "")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _table(name: str, items: dict[str, str]) -> str:
    body = "".join(f"\n    [{_quote(k)}]={_quote(v)}" for k, v in sorted(items.items()))
    return f"declare -gA {name}=({body}\n)\n"


def bash_script(parser: argparse.ArgumentParser) -> str:
    from client.api import KINDS

    commands = walk(parser)
    subs, go, flags, values, positionals = {}, {}, {}, {}, {}
    for c in commands:
        if c.shown:
            subs[c.path] = " ".join(c.shown)
        for typed, child in c.subcommands.items():
            go[f"{c.path}|{typed}"] = child
        flags[c.path] = " ".join(c.flags)
        for option, kind in c.values.items():
            values[f"{c.path}|{option}"] = kind
        positionals[c.path] = " ".join(c.positionals)
    kinds = " ".join(sorted(info.plural for info in KINDS.values()))
    return (_HEADER + _table("_podium_subs", subs) + _table("_podium_go", go)
            + _table("_podium_flags", flags) + _table("_podium_values", values)
            + _table("_podium_positionals", positionals)
            + f"_podium_kinds={_quote(kinds)}\n" + _FUNCTIONS)


def zsh_script(parser: argparse.ArgumentParser) -> str:
    return _ZSH_HEADER + bash_script(parser)


def cmd_completion(args: argparse.Namespace) -> int:
    from client.cli import build_parser

    parser = build_parser()
    sys.stdout.write(bash_script(parser) if args.shell == "bash" else zsh_script(parser))
    return 0


_HEADER = """\
# podium shell completion, printed by `podium completion bash`:
#   source <(podium completion bash)
"""

_ZSH_HEADER = """\
# podium shell completion for zsh, printed by `podium completion zsh`:
#   source <(podium completion zsh)
# It runs the bash completion function through zsh's bashcompinit.
(( $+functions[compdef] )) || { autoload -U +X compinit && compinit; }
autoload -U +X bashcompinit && bashcompinit
"""

# The tables above it say, for each command path ("podium image pull"):
# _podium_subs its subcommands; _podium_go "path|word" the path a word leads to;
# _podium_flags its flags; _podium_values "path|flag" what a flag's value is;
# _podium_positionals what each positional argument is (a trailing * repeats).
# Subscripts are written unquoted: zsh would take quotes in them literally.
_FUNCTIONS = r"""
_podium_names() {
    # Names of one kind's objects, as `podium get KIND -o name` prints them.
    local -a extra=()
    [[ -n $_podium_ns ]] && extra+=(--namespace "$_podium_ns")
    [[ -n $_podium_server ]] && extra+=(--server "$_podium_server")
    podium get "$1" -o name "${extra[@]}" 2>/dev/null
}

_podium_candidates() {
    local kind=$1 cur=$2 line list
    local -a words=()
    case $kind in
        choice:*) list=${kind#choice:}; words=(${list//,/ }) ;;
        kind) words=($_podium_kinds) ;;
        name) [[ -n $_podium_kind ]] || return
              for line in $(_podium_names "$_podium_kind"); do words+=("${line#*/}"); done ;;
        name:*) for line in $(_podium_names "${kind#name:}"); do words+=("${line#*/}"); done ;;
        pod) for line in $(_podium_names pods); do words+=("${line#*/}"); done ;;
        target) words=($(_podium_names deployments)) ;;
        namespace) for line in $(_podium_names namespaces); do words+=("${line#*/}"); done ;;
        *) return ;;  # files, or nothing known: the shell's default completion
    esac
    COMPREPLY=($(compgen -W "${words[*]}" -- "$cur"))
}

_podium() {
    [[ -n ${ZSH_VERSION-} ]] && emulate -L ksh
    local cur=${COMP_WORDS[COMP_CWORD]} node=podium word pending="" kind i n=0
    local _podium_ns="" _podium_server="" _podium_kind=""
    local -a types
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ -n $pending ]]; then
            case $pending in
                -n|--namespace) _podium_ns=$word ;;
                -s|--server) _podium_server=$word ;;
            esac
            pending=""
            continue
        fi
        case $word in
            --) return ;;  # what follows is a command's own words (exec)
            --*=*) continue ;;
            -*) [[ -n ${_podium_values[$node|$word]+x} ]] && pending=$word
                continue ;;
        esac
        if (( n == 0 )) && [[ -n ${_podium_go[$node|$word]+x} ]]; then
            node=${_podium_go[$node|$word]}
            continue
        fi
        types=(${_podium_positionals[$node]})
        (( n < ${#types[@]} )) && [[ ${types[n]} == kind* ]] && _podium_kind=$word
        n=$((n + 1))
    done
    if [[ -n $pending ]]; then
        _podium_candidates "${_podium_values[$node|$pending]}" "$cur"
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_podium_flags[$node]}" -- "$cur"))
        return
    fi
    if (( n == 0 )) && [[ -n ${_podium_subs[$node]+x} ]]; then
        COMPREPLY=($(compgen -W "${_podium_subs[$node]}" -- "$cur"))
        return
    fi
    types=(${_podium_positionals[$node]})
    kind=""
    if (( n < ${#types[@]} )); then
        kind=${types[n]}
    elif (( ${#types[@]} )) && [[ ${types[${#types[@]} - 1]} == *'*' ]]; then
        kind=${types[${#types[@]} - 1]}
    fi
    _podium_candidates "${kind%'*'}" "$cur"
}

complete -o default -F _podium podium
"""
