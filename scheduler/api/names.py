"""The syntax of names Kubernetes defines: DNS-1123 labels and subdomains,
qualified names (label and annotation keys), label values, IANA service names
(port names) and environment variable names.

Each `why_not_*` function returns None for a good value, or one line saying
what is wrong with it, quoting the value, for the caller to put after the
field's path.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_IANA_SVC_NAME = re.compile(r"[-a-z0-9]+")
_HAS_LETTER = re.compile(r"[a-z]")
_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
IANA_SVC_NAME_MAX = 15


def why_not_dns1123_label(value: str) -> str | None:
    if len(value) > DNS1123_LABEL_MAX:
        return f'"{value}" is longer than {DNS1123_LABEL_MAX} characters'
    if not _DNS1123_LABEL.fullmatch(value):
        return (f'"{value}" is not a DNS-1123 label (lowercase letters, digits and "-", '
                "starting and ending with a letter or digit)")
    return None


def why_not_dns1123_subdomain(value: str) -> str | None:
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f'"{value}" is longer than {DNS1123_SUBDOMAIN_MAX} characters'
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        return (f'"{value}" is not a DNS-1123 subdomain (lowercase letters, digits, "-" and '
                '".", each part starting and ending with a letter or digit)')
    return None


def why_not_generate_name(value: str) -> str | None:
    """A generateName prefix: a DNS-1123 subdomain that may end with "-"."""
    masked = value[:-1] + "a" if value.endswith("-") else value
    if why_not_dns1123_subdomain(masked) is not None:
        return (f'"{value}" is not the start of a DNS-1123 subdomain (lowercase letters, '
                'digits, "-" and ".")')
    return None


def why_not_qualified_name(value: str) -> str | None:
    """A label or annotation key: [prefix/]name, the prefix a DNS-1123 subdomain."""
    prefix, slash, name = value.rpartition("/")
    if slash:
        if not prefix:
            return f'"{value}" has an empty prefix before "/"'
        why = why_not_dns1123_subdomain(prefix)
        if why is not None:
            return f'the prefix of "{value}" is wrong: {why}'
    if not name:
        return f'"{value}" has an empty name' if value else "must not be empty"
    if len(name) > QUALIFIED_NAME_MAX:
        return f'the name part of "{value}" is longer than {QUALIFIED_NAME_MAX} characters'
    if not _QUALIFIED_PART.fullmatch(name):
        return (f'"{value}" is not a qualified name (letters, digits, "-", "_" and ".", '
                'starting and ending with a letter or digit, after an optional "prefix/")')
    return None


def why_not_label_value(value: str) -> str | None:
    if len(value) > LABEL_VALUE_MAX:
        return f'label value "{value}" is longer than {LABEL_VALUE_MAX} characters'
    if value and not _QUALIFIED_PART.fullmatch(value):
        return (f'"{value}" is not a label value (empty, or letters, digits, "-", "_" and ".", '
                "starting and ending with a letter or digit)")
    return None


def why_not_port_name(value: str) -> str | None:
    """An IANA service name, as a container port's name (and a targetPort by name)."""
    if len(value) > IANA_SVC_NAME_MAX:
        return f'port name "{value}" is longer than {IANA_SVC_NAME_MAX} characters'
    if (not _IANA_SVC_NAME.fullmatch(value) or value.startswith("-") or value.endswith("-")
            or "--" in value or not _HAS_LETTER.search(value)):
        return (f'"{value}" is not a port name (lowercase letters, digits and single "-" '
                "inside, at least one letter)")
    return None


def why_not_env_var_name(value: str) -> str | None:
    if not _ENV_VAR_NAME.fullmatch(value):
        return (f'"{value}" is not an environment variable name (letters, digits, "_", "-" '
                'and ".", not starting with a digit)')
    return None
