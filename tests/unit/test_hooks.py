"""OCI hooks without root: config.json conversion and validation, and the runner
(``runtime.hooks``) on small real programs (busybox sh) as the current user."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from runtime import channel, hooks
from runtime.errors import ConfigError, SetupError
from runtime.spec import convert, default_config, validate
from runtime.spec.model import Hook, Hooks
from tests.conftest import need

BUSYBOX = "/bin/busybox"
STATE = {"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 42,
         "bundle": "/b", "annotations": {"k": "v"}}


def sh(script: str, **kwargs: Any) -> Hook:
    """busybox acting as sh because argv[0] says so: proves args[0] is argv[0]."""
    need(Path(BUSYBOX).exists(), "needs busybox at /bin/busybox")
    return Hook(path=BUSYBOX, args=("sh", "-c", script), **kwargs)


def config_with(hooks_json: dict[str, Any]) -> dict[str, Any]:
    data = default_config(["true"])
    data["root"]["path"] = "/"
    data["hooks"] = hooks_json
    return data


# -- conversion and validation ---------------------------------------------------


def test_every_point_is_converted_in_order(tmp_path: Path) -> None:
    entry = {"path": "/bin/true", "args": ["true", "-x"], "env": ["A=1"], "timeout": 5}
    names = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart",
             "poststop"]
    data = config_with({name: [dict(entry, args=[name])] for name in names})
    converted = convert(data, tmp_path)
    assert not converted.warnings
    h = converted.config.hooks
    fields = [h.prestart, h.create_runtime, h.create_container, h.start_container,
              h.poststart, h.poststop]
    for name, field in zip(names, fields, strict=True):
        assert field == (Hook("/bin/true", (name,), ("A=1",), 5),)


def test_absent_hooks_are_none_and_a_hook_without_options_has_defaults(tmp_path: Path) -> None:
    assert convert(config_with({}), tmp_path).config.hooks == Hooks()
    data = config_with({"poststop": [{"path": "/bin/true"}]})
    assert convert(data, tmp_path).config.hooks.poststop == (Hook("/bin/true"),)


def test_unknown_hook_fields_only_warn(tmp_path: Path) -> None:
    data = config_with({"poststop": [{"path": "/bin/true", "later": 1}], "onSomething": []})
    warnings = convert(data, tmp_path).warnings
    assert any("hooks.poststop[0].later" in w for w in warnings)
    assert any("hooks.onSomething" in w for w in warnings)


@pytest.mark.parametrize("hooks_json, field, words", [
    ({"createRuntime": [{"path": 5}]}, "hooks.createRuntime[0].path", "string"),
    ({"poststart": {"path": "/bin/true"}}, "hooks.poststart", "list"),
    ({"poststop": [{"path": "/bin/true", "timeout": "5"}]}, "hooks.poststop[0].timeout",
     "integer"),
    ({"prestart": [{"path": "/bin/true", "args": [1]}]}, "hooks.prestart[0].args[0]", "string"),
])
def test_badly_typed_hooks_are_named(tmp_path: Path, hooks_json: dict[str, Any], field: str,
                                     words: str) -> None:
    with pytest.raises(ConfigError) as info:
        convert(config_with(hooks_json), tmp_path)
    assert info.value.field == field
    assert words in str(info.value)


@pytest.mark.parametrize("hooks_json, field, words", [
    ({"createRuntime": [{"path": "bin/true"}]}, "hooks.createRuntime[0].path", "absolute"),
    ({"createContainer": [{"path": "/no/such/hook"}]}, "hooks.createContainer[0].path",
     "no such file or directory"),
    ({"poststart": [{"path": "/bin/true", "timeout": 0}]}, "hooks.poststart[0].timeout",
     "above zero"),
    ({"poststop": [{"path": "/bin/true"}, {"path": "/bin/true", "timeout": -3}]},
     "hooks.poststop[1].timeout", "above zero"),
    ({"prestart": [{"path": "/bin/true", "env": ["NOEQUALS"]}]}, "hooks.prestart[0].env[0]",
     "NAME=VALUE"),
    ({"startContainer": [{"path": "relative"}]}, "hooks.startContainer[0].path", "absolute"),
])
def test_invalid_hooks_are_named(tmp_path: Path, hooks_json: dict[str, Any], field: str,
                                 words: str) -> None:
    config = convert(config_with(hooks_json), tmp_path).config
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert info.value.field == field
    assert words in str(info.value)


def test_start_container_path_is_not_looked_for_on_the_host(tmp_path: Path) -> None:
    # It resolves in the container's root, which does not exist yet.
    config = convert(config_with({"startContainer": [{"path": "/in/the/image"}]}),
                     tmp_path).config
    validate(config)


# -- the runner ------------------------------------------------------------------


def test_state_goes_to_stdin_and_args_and_env_are_exactly_as_given(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook = sh(f"cat > {out}.stdin; cat /proc/$$/cmdline > {out}.argv; "
              # Through a pipe: a forked cat reads the environment sh was given.
              f"cat /proc/$$/environ | cat > {out}.env", env=("A=1", "B=two words"))
    hook = hook._replace(args=hook.args + ("first", "second"))
    hooks.run_hooks("createRuntime", (hook,), STATE)
    assert json.loads(Path(f"{out}.stdin").read_text()) == STATE
    assert Path(f"{out}.argv").read_bytes().split(b"\0")[:-1] == [a.encode() for a in hook.args]
    assert Path(f"{out}.env").read_bytes().split(b"\0")[:-1] == [b"A=1", b"B=two words"]


def test_a_failing_hook_says_where_how_and_its_last_lines(tmp_path: Path) -> None:
    hook = sh("echo one >&2; echo two; echo three >&2; echo four >&2; exit 3")
    with pytest.raises(SetupError) as info:
        hooks.run_hooks("createContainer", (Hook("/bin/true"), hook), STATE)
    message = str(info.value)
    assert message.startswith("hooks.createContainer[1]: /bin/busybox exited with status 3")
    assert message.endswith("two | three | four")
    assert "\n" not in message


def test_the_first_failure_stops_the_rest(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    with pytest.raises(SetupError):
        hooks.run_hooks("prestart", (sh("exit 1"), sh(f"touch {mark}")), STATE)
    assert not mark.exists()


def test_a_missing_program_is_no_such_file(tmp_path: Path) -> None:
    with pytest.raises(SetupError) as info:
        hooks.run_hook(Hook(str(tmp_path / "nope")), b"{}", "hooks.poststart[0]")
    assert str(info.value) == f"hooks.poststart[0]: {tmp_path / 'nope'}: no such file or directory"


def test_a_hook_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="killed by SIGTERM"):
        hooks.run_hook(sh("kill -TERM $$"), b"{}", "hooks.poststart[0]")


def test_a_hook_past_its_timeout_is_killed_with_what_it_started(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    hook = sh(f"echo started >&2; sleep 30 & echo $! > {child}; wait", timeout=1)
    began = time.monotonic()
    with pytest.raises(SetupError) as info:
        hooks.run_hook(hook, b"{}", "hooks.createRuntime[0]")
    assert time.monotonic() - began < 5
    assert "did not finish within its timeout of 1s: killed: started" in str(info.value)
    pid = int(child.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the hook's own child outlived the timeout"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


def test_a_big_state_reaches_a_reader_and_does_not_block_a_non_reader(tmp_path: Path) -> None:
    state = dict(STATE, annotations={"big": "x" * 300_000})
    out = tmp_path / "stdin"
    hooks.run_hooks("poststart", (sh(f"cat > {out}"), sh("exit 0")), state)
    assert json.loads(out.read_text()) == state


def test_a_hook_that_leaves_a_child_holding_its_output_does_not_hang(tmp_path: Path) -> None:
    child = tmp_path / "child.pid"
    began = time.monotonic()
    hooks.run_hook(sh(f"sleep 30 & echo $! > {child}"), b"{}", "hooks.poststart[0]")
    assert time.monotonic() - began < 5
    os.kill(int(child.read_text()), 9)


def test_warning_hooks_all_run_and_each_failure_is_a_warning(tmp_path: Path) -> None:
    mark = tmp_path / "ran"
    warnings: list[str] = []
    hooks.run_hooks_warning("poststop", (sh("echo bad >&2; exit 2"), sh(f"touch {mark}")),
                            STATE, warnings.append)
    assert mark.exists()
    assert warnings == ["hooks.poststop[0]: /bin/busybox exited with status 2: bad"]


# -- the create and start points, and hooks kept for start and delete ------------


def test_without_create_or_start_hooks_the_init_makes_no_round_trip() -> None:
    # Bad fds: any I/O at all would raise.
    only_later = Hooks(poststart=(Hook("/bin/true"),), poststop=(Hook("/bin/true"),))
    assert hooks.init_create_point(only_later, -1, -1) is None
    hooks.init_start_point(only_later, None, -1)


def test_the_create_point_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hk = Hooks(prestart=(sh(f"echo prestart >> {out}"),),
               create_runtime=(sh(f"cat >> {out}; echo >> {out}"),),
               create_container=(sh(f"echo createContainer >> {out}"),))
    sync_r, sync_w = os.pipe()
    go_r, go_w = os.pipe()
    try:
        hooks.caller_create_point(hk, STATE, go_w)  # what the caller answers...
        state = hooks.init_create_point(hk, sync_w, go_r)  # ...and the init receives
        os.close(sync_w)
        assert list(channel.messages(sync_r)) == [{"hooks": True}]
    finally:
        for fd in (sync_r, go_r, go_w):
            os.close(fd)
    assert state == STATE
    lines = out.read_text().splitlines()
    assert lines[0] == "prestart" and json.loads(lines[1]) == STATE
    assert lines[2] == "createContainer"


def test_the_init_fails_if_the_caller_goes_away() -> None:
    sync_r, sync_w = os.pipe()
    go_r, go_w = os.pipe()
    os.close(go_w)
    try:
        with pytest.raises(SetupError, match="createRuntime"):
            hooks.init_create_point(Hooks(create_runtime=(Hook("/bin/true"),)), sync_w, go_r)
    finally:
        for fd in (sync_r, sync_w, go_r):
            os.close(fd)


def test_poststart_and_poststop_are_kept_for_later(tmp_path: Path) -> None:
    assert hooks.load(tmp_path) == Hooks()
    hooks.save(tmp_path, Hooks(create_runtime=(Hook("/bin/true"),)))
    assert not (tmp_path / hooks.HOOKS_FILE).exists()  # nothing for start or delete
    kept = Hooks(poststart=(Hook("/a", ("a", "b"), ("X=1",), 3),),
                 poststop=(Hook("/b"), Hook("/c")))
    hooks.save(tmp_path, kept._replace(create_container=(Hook("/bin/true"),)))
    assert hooks.load(tmp_path) == kept
