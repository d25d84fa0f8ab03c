"""The Dockerfile parser and the word rules (quotes, escapes, $VAR substitution)."""

from __future__ import annotations

import pytest

from runtime.images.dockerfile import DockerfileError, Instruction, parse
from runtime.images.shellwords import WordError, expand, expand_all, split_words


def one(text: str, keyword: str = "") -> Instruction:
    ins = parse("FROM scratch\n" + text).instructions[1]
    assert not keyword or ins.keyword == keyword
    return ins


# --- words and substitution -------------------------------------------------------------

ENV = {"A": "alpha", "EMPTY": "", "P": "/usr/bin"}


@pytest.mark.parametrize("word, want", [
    ("$A", "alpha"),
    ("${A}", "alpha"),
    ("x${A}y", "xalphay"),
    ("$A/$P", "alpha//usr/bin"),
    ("$NOPE", ""),
    ("${NOPE:-dflt}", "dflt"),
    ("${EMPTY:-dflt}", "dflt"),
    ("${EMPTY-dflt}", ""),
    ("${NOPE-dflt}", "dflt"),
    ("${A:+set}", "set"),
    ("${EMPTY:+set}", ""),
    ("${EMPTY+set}", "set"),
    ("${NOPE:-${A}}", "alpha"),
    ("'$A'", "$A"),
    ('"$A b"', "alpha b"),
    ("\\$A", "$A"),
    ('"a\\"b"', 'a"b'),
    ("a$", "a$"),
    ("$1x", ""),
])
def test_expand(word: str, want: str) -> None:
    assert expand(word, ENV) == want


def test_expand_with_backtick_escape() -> None:
    assert expand("`$A", ENV, escape="`") == "$A"
    assert expand("C:\\dir", ENV, escape="`") == "C:\\dir"


def test_required_variable_error() -> None:
    with pytest.raises(WordError, match="NOPE: must be set"):
        expand("${NOPE:?must be set}", ENV)
    assert expand("${A:?x}", ENV) == "alpha"


def test_bad_substitution() -> None:
    with pytest.raises(WordError, match="bad substitution"):
        expand("${}", ENV)
    with pytest.raises(WordError, match="unsupported modifier"):
        expand("${A/x/y}", ENV)


def test_split_words_keeps_quotes_together() -> None:
    assert split_words('a "b c" \'d e\' f\\ g') == ['a', '"b c"', "'d e'", "f\\ g"]
    assert expand_all('a "b c" $A', ENV) == ["a", "b c", "alpha"]
    with pytest.raises(WordError, match="unmatched"):
        split_words('a "b')


# --- the parser --------------------------------------------------------------------------


def test_from_forms() -> None:
    df = parse("FROM busybox\nFROM busybox:1 AS build\nfrom --platform=linux/amd64 x as y\n")
    a, b, c = df.instructions
    assert a.words == ("busybox",)
    assert b.words == ("busybox:1", "AS", "build")
    assert c.keyword == "FROM" and c.flag("platform") == "linux/amd64"
    assert c.words[2] == "y"


def test_run_shell_and_exec_forms() -> None:
    shell = one("RUN echo hi && ls", "RUN")
    assert not shell.exec_form and shell.text == "echo hi && ls"
    exe = one('RUN ["echo", "hi there"]')
    assert exe.exec_form and exe.words == ("echo", "hi there")
    # Not valid JSON: Docker takes it as a shell command.
    broken = one("RUN [echo, hi]")
    assert not broken.exec_form and broken.text == "[echo, hi]"


def test_cmd_entrypoint_shell() -> None:
    assert one('CMD ["sh"]').exec_form
    assert one("ENTRYPOINT top -b").text == "top -b"
    assert one('SHELL ["/bin/bash", "-c"]').words == ("/bin/bash", "-c")
    with pytest.raises(DockerfileError, match="line 2: SHELL: needs a non-empty JSON array"):
        parse("FROM scratch\nSHELL /bin/bash\n")


def test_env_forms() -> None:
    assert one("ENV A b c").pairs == (("A", "b c"),)
    assert one('ENV A=1 B="two words" C=$A').pairs == (
        ("A", "1"), ("B", '"two words"'), ("C", "$A"))
    with pytest.raises(DockerfileError, match="line 2: ENV: 'A' has no value"):
        parse("FROM scratch\nENV A\n")
    with pytest.raises(DockerfileError, match="is not key=value"):
        parse("FROM scratch\nENV A=1 B\n")


def test_arg_label_expose_volume() -> None:
    assert one("ARG V=1 W").pairs == (("V", "1"), ("W", None))
    assert one('LABEL a=b "c d"="e f"').pairs == (("a", "b"), ('"c d"', '"e f"'))
    assert one("LABEL old style value").pairs == (("old", "style value"),)
    assert one("EXPOSE 80 53/udp").words == ("80", "53/udp")
    assert one('VOLUME ["/data", "/logs"]').words == ("/data", "/logs")
    assert one("VOLUME /data").words == ("/data",)
    with pytest.raises(DockerfileError, match="'1A' is not a variable name"):
        parse("FROM scratch\nARG 1A\n")


def test_copy_add_forms_and_flags() -> None:
    c = one("COPY --chown=1:2 --from=build a b /dst/", "COPY")
    assert c.flag("chown") == "1:2" and c.flag("from") == "build"
    assert c.words == ("a", "b", "/dst/")
    assert one('COPY ["a b", "/c"]').words == ("a b", "/c")
    with pytest.raises(DockerfileError, match="line 2: COPY: want COPY source... destination"):
        parse("FROM scratch\nCOPY onlyone\n")
    with pytest.raises(DockerfileError, match="line 2: COPY: unknown flag --nope"):
        parse("FROM scratch\nCOPY --nope=1 a b\n")


def test_workdir_user_need_an_argument() -> None:
    assert one("WORKDIR /a b").text == "/a b"
    with pytest.raises(DockerfileError, match="line 2: WORKDIR: needs an argument"):
        parse("FROM scratch\nWORKDIR\n")
    with pytest.raises(DockerfileError, match="USER: takes exactly one argument"):
        parse("FROM scratch\nUSER a b\n")


def test_continuations_comments_and_line_numbers() -> None:
    text = (
        "# a comment\n"
        "FROM busybox\n"
        "\n"
        "RUN echo a \\\n"
        "    # a comment inside\n"
        "\n"
        "    && echo b\n"
        "ENV X=1\n"
    )
    df = parse(text)
    run, env = df.instructions[1], df.instructions[2]
    assert run.line == 4 and run.text == "echo a     && echo b"
    assert env.line == 8


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM scratch\nRUN dir c:\\ `\n  && echo\n")
    assert df.escape == "`"
    assert df.instructions[1].text == "dir c:\\   && echo"


def test_directives_only_at_the_top() -> None:
    # After an instruction a directive is just a comment.
    df = parse("FROM scratch\n# escape=`\nRUN a \\\n b\n")
    assert df.escape == "\\" and df.instructions[1].text == "a  b"
    assert parse("# syntax=docker/dockerfile:1\nFROM scratch\n").instructions[0].line == 2
    with pytest.raises(DockerfileError, match="line 1: escape directive"):
        parse("# escape=x\nFROM scratch\n")


def test_unknown_instruction_names_line_and_word() -> None:
    with pytest.raises(DockerfileError) as e:
        parse("FROM busybox\nRUN true\n\nFOOBAR baz\n", "ctx/Dockerfile")
    assert str(e.value) == "ctx/Dockerfile line 4: unknown instruction 'FOOBAR'"
    assert e.value.line == 4


def test_unsupported_and_malformed() -> None:
    with pytest.raises(DockerfileError, match="line 2: HEALTHCHECK is not supported"):
        parse("FROM scratch\nHEALTHCHECK CMD true\n")
    with pytest.raises(DockerfileError, match="line 1: FROM: want FROM image"):
        parse("FROM a b\n")
    with pytest.raises(DockerfileError, match="no FROM"):
        parse("# nothing\n")
    with pytest.raises(DockerfileError, match="line 2: RUN before the first FROM"):
        parse("ARG X\nRUN true\nFROM scratch\n")
    with pytest.raises(DockerfileError, match="line 2: RUN: needs a command"):
        parse("FROM scratch\nRUN\n")


def test_keywords_are_case_insensitive() -> None:
    assert one("run true").keyword == "RUN"
    assert str(one("copy --chown=1 a b")) == "COPY --chown=1 a b"


def test_braces_keep_blanks_in_one_word() -> None:
    assert split_words("A=${B:-x y} C=1") == ["A=${B:-x y}", "C=1"]
    assert expand_all("A=${NOPE:-x y} '${' z", ENV) == ["A=x y", "${", "z"]
