"""Every deliberate non-200 answer of the function, as exceptions that carry it.

API Gateway turns an unhandled exception into a bare 502, which a device
cannot tell from a network fault and the how-to's users cannot debug. So each
failure is one of these, raised where it is found and turned into a JSON
response in one place (``handler.py``). Dependencies' exceptions (botocore,
zlib, json) are translated into these at the module boundary with
``raise ... from exc``.

::

    RequestError (status, code, message, field)
    ├── BadRequest              400  the body is not what the API takes: the device must not resend
    ├── Forbidden               403  the caller is not the device it claims, or has no identity
    ├── PayloadTooLarge         413  decompressed body over MAX_BATCH_BYTES (gzip bombs included)
    ├── UnsupportedMediaType    415  the body cannot be decoded (base64, gzip, UTF-8)
    ├── ConfigError             500  an environment variable is missing or wrong (operator)
    └── ServiceUnavailable      503  S3 or Cognito failed: the device keeps the batch and retries

A device treats 4xx (other than 403/429) as permanent and moves the batch to
``dead/``; 5xx is retried. The split above follows that policy.
"""

from __future__ import annotations

from typing import Any, Optional


class RequestError(Exception):
    """A failure with the HTTP status and JSON body it should be answered with."""

    status = 500
    code = "error"

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        """The JSON error body: a machine code, the field at fault, and a sentence."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class BadRequest(RequestError):
    status = 400
    code = "bad_request"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    status = 415
    code = "unsupported_media_type"


class ConfigError(RequestError):
    status = 500
    code = "configuration_error"


class ServiceUnavailable(RequestError):
    status = 503
    code = "service_unavailable"
