"""Store and validation errors as gRPC status codes, in one place."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc

from scheduler.api.selectors import SelectorError
from scheduler.api.validation import Invalid
from scheduler.objects import UnknownKind
from scheduler.store.base import AlreadyExists, Conflict, NotFound, StoreError

log = logging.getLogger("podium.scheduler")

_CODES: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Conflict, grpc.StatusCode.ABORTED),
    (Invalid, grpc.StatusCode.INVALID_ARGUMENT),
    (UnknownKind, grpc.StatusCode.INVALID_ARGUMENT),
    (SelectorError, grpc.StatusCode.INVALID_ARGUMENT),
    (StoreError, grpc.StatusCode.INTERNAL),
)


class Denied(Exception):
    """An agent asked to touch what is not its own."""


class Precondition(Exception):
    """The request is well formed but the object is not in a state for it."""


_CODES = ((Denied, grpc.StatusCode.PERMISSION_DENIED),
          (Precondition, grpc.StatusCode.FAILED_PRECONDITION), *_CODES)
# What a method may raise for abort() to answer; anything else is a bug and
# becomes INTERNAL through abort() too, with its traceback logged.
_KNOWN: tuple[type[Exception], ...] = (*(kind for kind, _ in _CODES), ValueError)


def abort(context: grpc.ServicerContext, error: Exception) -> NoReturn:
    for kind, code in _CODES:
        if isinstance(error, kind):
            context.abort(code, str(error))
    log.exception("internal error: %s", error)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {error}")


F = TypeVar("F", bound=Callable[..., Any])


def unary(method: F) -> F:
    """Turns the errors a unary method raises into their status codes."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except _KNOWN as error:
            abort(context, error)

    return wrapper  # type: ignore[return-value]


def streaming(method: F) -> F:
    """As unary(), for a method that yields responses."""

    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except _KNOWN as error:
            abort(context, error)

    return wrapper  # type: ignore[return-value]
