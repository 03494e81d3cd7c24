"""The error tree. Each class says how the API shows it and whether the reconciler retries.

`api/app.py` is the only place that turns `http_status` into a response; `reconciler.py` is the
only place that reads `retryable`. Messages are for people: they name the thing that went wrong.
"""

from __future__ import annotations


class SupervisorError(Exception):
    """Root of every error the supervisor raises on purpose."""

    http_status: int = 500
    retryable: bool = True

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.__class__.__name__

    def __str__(self) -> str:
        return self.message


class BadRequest(SupervisorError):
    """The client sent something we cannot use (malformed body, bad parameter)."""

    http_status = 400
    retryable = False


class TargetInvalid(BadRequest):
    """A target state failed validation. `path` is the JSON path of the offending field."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class Unauthorized(SupervisorError):
    http_status = 401
    retryable = False


class Forbidden(SupervisorError):
    http_status = 403
    retryable = False


class NotFound(SupervisorError):
    http_status = 404
    retryable = False


class Conflict(SupervisorError):
    http_status = 409
    retryable = False


class UpdatesLocked(SupervisorError):
    """A user update lock refuses a disruptive step (balena's 423)."""

    http_status = 423

    def __init__(self, message: str, *, app_id: int | None = None,
                 service: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.app_id = app_id
        self.service = service
        self.path = path


class EngineError(SupervisorError):
    """The container engine failed or cannot be reached."""

    http_status = 503


class EngineNotFound(EngineError):
    http_status = 404


class EngineConflict(EngineError):
    http_status = 409


class ImageNotFound(EngineNotFound):
    """An image cannot be found locally nor pulled."""


class StepFailed(SupervisorError):
    """A step of a plan failed; wraps the cause and carries the step for the log."""

    def __init__(self, step: object, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        self.retryable = getattr(cause, "retryable", True)
        super().__init__(f"{type(step).__name__} failed: {cause}")


class ConfigError(SupervisorError):
    """A setting or config.json value is unusable."""

    retryable = False


class InternalError(SupervisorError):
    http_status = 503
