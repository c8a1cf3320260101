"""Error codes as data.

The codes are those of the Twilio Video preflight API (docs/references.md#twilio-video-preflight),
so apps that switch to rtcprobe keep their error handling. One code is ours: :data:`STOPPED`, for a test the caller
stopped before it completed (Twilio Video's preflight API had no code for that).

Two kinds of error exist in rtcprobe (docs/architecture.md#the-sans-io-contract):

* misuse by the caller raises at once (:class:`ConfigError`, :class:`UsageError`);
* anything the network or the peer does wrong never raises: it becomes a terminal
  ``Failed(error, report)`` event carrying one :class:`PreflightErrorInfo` from this table.
"""

from __future__ import annotations

from typing import Final

import attrs


@attrs.frozen
class PreflightErrorInfo:
    """One entry of the code table: what a failure carries."""

    code: int
    name: str
    message: str

    def with_message(self, message: str) -> PreflightErrorInfo:
        """The same code and name with a more specific message."""
        return attrs.evolve(self, message=message)

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "name": self.name, "message": self.message}


def _e(code: int, name: str, message: str) -> PreflightErrorInfo:
    return PreflightErrorInfo(code, name, message)


ACCESS_TOKEN_INVALID: Final = _e(20101, "AccessTokenInvalidError", "Invalid Access Token")
ACCESS_TOKEN_ISSUER_INVALID: Final = _e(
    20103, "AccessTokenIssuerInvalidError", "Invalid Access Token issuer/subject"
)
ACCESS_TOKEN_EXPIRED: Final = _e(
    20104, "AccessTokenExpiredError", "Access Token expired or expiration date invalid"
)
ACCESS_TOKEN_NOT_YET_VALID: Final = _e(20105, "AccessTokenNotYetValidError", "Access Token not yet valid")
ACCESS_TOKEN_SIGNATURE_INVALID: Final = _e(
    20107, "AccessTokenSignatureInvalidError", "Invalid Access Token signature"
)
SIGNALING_CONNECTION: Final = _e(
    53000, "SignalingConnectionError", "Signaling connection error: could not reach the signaling server"
)
SIGNALING_DISCONNECTED: Final = _e(
    53001, "SignalingConnectionDisconnectedError", "Signaling connection disconnected"
)
SIGNALING_TIMEOUT: Final = _e(
    53002, "SignalingConnectionTimeoutError", "Signaling connection timed out (signaling or TURN step)"
)
MEDIA_CONNECTION: Final = _e(
    53405, "MediaConnectionError", "Media connection failed or media never started"
)
MEDIA_DTLS_FAILED: Final = _e(
    53407, "MediaDTLSTransportFailedError", "Media connection failed due to DTLS handshake failure"
)
STOPPED: Final = _e(99000, "PreflightStoppedError", "The preflight test was stopped before it completed")

ERRORS: Final[dict[int, PreflightErrorInfo]] = {
    e.code: e
    for e in (
        ACCESS_TOKEN_INVALID,
        ACCESS_TOKEN_ISSUER_INVALID,
        ACCESS_TOKEN_EXPIRED,
        ACCESS_TOKEN_NOT_YET_VALID,
        ACCESS_TOKEN_SIGNATURE_INVALID,
        SIGNALING_CONNECTION,
        SIGNALING_DISCONNECTED,
        SIGNALING_TIMEOUT,
        MEDIA_CONNECTION,
        MEDIA_DTLS_FAILED,
        STOPPED,
    )
}


def error_for_code(code: int, message: str | None = None) -> PreflightErrorInfo:
    """The table entry for ``code`` (a server may pass through a code we do not know)."""
    info = ERRORS.get(code)
    if info is None:
        info = PreflightErrorInfo(code, "PreflightError", message or f"Error {code}")
    return info if message is None else info.with_message(message)


class ConfigError(ValueError):
    """Invalid configuration given by the caller: raised at construction, never later."""


class UsageError(RuntimeError):
    """The caller used an object out of its protocol (e.g. starting a test twice)."""


class PreflightError(Exception):
    """Raised by the high-level APIs (``await test.wait()``) when a preflight failed.

    Carries the error's ``code`` and the partial ``report`` (a PreflightReport).
    """

    def __init__(self, error: PreflightErrorInfo, report: object = None) -> None:
        super().__init__(f"{error.code} {error.name}: {error.message}")
        self.error = error
        self.code = error.code
        self.report = report
