"""Image names by Docker's rules."""

from __future__ import annotations

import pytest

from runtime.images import InvalidReference, normalize, parse_reference
from runtime.images.reference import registry_host

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("someone/app", "docker.io/someone/app:latest"),
        ("someone/app:v1.2-rc_3", "docker.io/someone/app:v1.2-rc_3"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/app:1", "localhost:5000/app:1"),
        ("127.0.0.1:5000/a/b/c:dev", "127.0.0.1:5000/a/b/c:dev"),
        ("example.test/team/app", "example.test/team/app:latest"),
        ("[::1]:5000/app", "[::1]:5000/app:latest"),
        ("Example/app", "Example/app:latest"),  # an upper-case first part is a host
        ("someone/a.b_c__d-e--f", "docker.io/someone/a.b_c__d-e--f:latest"),
        (f"busybox@{DIGEST}", f"docker.io/library/busybox@{DIGEST}"),
        (f"example.test:443/app:1@{DIGEST}", f"example.test:443/app:1@{DIGEST}"),
        ("host:5000", "docker.io/library/host:5000"),  # no slash: a name and a tag
    ],
)
def test_normalise(text: str, canonical: str) -> None:
    assert normalize(text) == canonical
    assert normalize(canonical) == canonical


def test_parts_and_familiar_form() -> None:
    ref = parse_reference("busybox")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (
        "docker.io", "library/busybox", "latest", None)
    assert ref.repository == "docker.io/library/busybox"
    assert ref.familiar == "busybox:latest"
    assert parse_reference("someone/app:1").familiar == "someone/app:1"
    assert parse_reference("example.test:5000/a:1").familiar == "example.test:5000/a:1"
    digested = parse_reference(f"example.test/a@{DIGEST}")
    assert digested.tag is None and digested.digest == DIGEST
    assert str(parse_reference("busybox").with_tag("1")) == "docker.io/library/busybox:1"


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("", "name"),
        ("Busybox", "path component 'Busybox'"),
        ("example.test/Team/app", "path component 'Team'"),
        ("busybox:", "tag ''"),
        ("busybox:-x", "tag '-x'"),
        ("busybox:" + "x" * 129, "tag"),
        ("busybox@sha256:abc", "digest 'sha256:abc'"),
        ("busybox@md5:" + "a" * 32, "digest"),
        ("busybox@sha256:" + "A" * 64, "digest"),
        ("busybox@", "digest ''"),
        ("example.test//app", "path"),
        ("example.test/app/", "path"),
        ("a..b/x", "domain 'a..b'"),
        ("someone/a..b", "path component 'a..b'"),
        ("-bad.host/app", "domain '-bad.host'"),
        ("app_/x", "path component 'app_'"),
        (" busybox", "name"),
        ("a" * 64, "name"),
        (":tag", "name"),
        ("example.test/" + "a" * 260, "name"),
    ],
)
def test_invalid_names_say_which_part(text: str, part: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert info.value.part.startswith(part), info.value.part
    assert repr(text)[:20].strip("'") in str(info.value) or text == ""
    assert isinstance(info.value, ValueError)


def test_registry_host_of_default_domain_differs_only_there() -> None:
    assert registry_host("example.test:5000") == "example.test:5000"
    assert registry_host("127.0.0.1:5000") == "127.0.0.1:5000"
    assert registry_host("docker.io") != "docker.io"
