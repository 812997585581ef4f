"""Every error Proctor answers with has a stable ``code`` and a message that says
what to do next. The tree:

    ProctorError                 (500, internal_error)
    ├── InvalidRequest           (400, invalid_request and friends: the client's body)
    ├── SessionNotFound          (404, session_not_found)
    ├── UpstreamUnavailable      (502, upstream_unavailable: could not connect / cut)
    ├── UpstreamTimeout          (504, upstream_timeout)
    └── ConfigError              (startup only: a setting is wrong)
"""

from __future__ import annotations


class ProctorError(Exception):
    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequest(ProctorError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class SessionNotFound(ProctorError):
    status = 404
    code = "session_not_found"
    type = "not_found_error"


class UpstreamUnavailable(ProctorError):
    status = 502
    code = "upstream_unavailable"
    type = "upstream_error"


class UpstreamTimeout(ProctorError):
    status = 504
    code = "upstream_timeout"
    type = "upstream_error"


class ConfigError(ProctorError):
    code = "config_error"
