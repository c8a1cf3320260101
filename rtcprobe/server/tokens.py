"""Access tokens: JWT (HS256) minted and verified with a shared secret.

Claims (docs/signaling.md): ``iss`` (the server's issuer), ``sub`` (the account), ``iat``, ``nbf``
(optional), ``exp`` (required), ``jti``, and ``grants: {"identity": ..., "video": {}}`` — the shape
of a Twilio Video access token, so the error codes mean what they meant there
(docs/references.md#twilio-video-preflight). A video grant may name a room
(``"video": {"room": NAME}``): the token then joins that room only (docs/signaling.md#rooms); without
one it may join any room, as a Twilio token without a room grant may.

Verification takes ``now`` as an argument (the caller reads the clock) and checks in a fixed order,
so that one token always gets one code: structure and algorithm (20101), signature (20107), issuer
and subject (20103), expiry (20104), not-before (20105), then the grants (20101).
"""

from __future__ import annotations

import math
import secrets
import uuid
import warnings
from typing import Any, Final

import attrs
import jwt

from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc.protocol import ProtocolError

ALGORITHM: Final = "HS256"
DEFAULT_ISSUER: Final = "rtcprobe"
DEFAULT_TTL: Final = 3600  # s
MIN_SECRET_BYTES: Final = 32  # RFC 7518 section 3.2: an HS256 key at least as long as the hash

INVALID: Final = 20101
ISSUER_INVALID: Final = 20103
EXPIRED: Final = 20104
NOT_YET_VALID: Final = 20105
SIGNATURE_INVALID: Final = 20107


class TokenError(ProtocolError):
    """The token was refused; ``code`` is one of the 201xx codes above."""


@attrs.frozen
class TokenClaims:
    """What a verified token grants."""

    identity: str
    subject: str
    issuer: str
    expires: float  # unix s
    jti: str | None = None
    room: str | None = None  # the video grant's room: the only room this token may join


#: The longest room name a grant (and a room) may carry, as the longest identity a room takes.
MAX_ROOM_NAME: Final = 128


def check_room_name(name: object) -> str | None:
    """Why ``name`` cannot name a room (None when it can): a non-empty string of at most
    :data:`MAX_ROOM_NAME` printable characters."""
    if not isinstance(name, str) or not name:
        return "a room name must be a non-empty string"
    if len(name) > MAX_ROOM_NAME:
        return f"a room name must be at most {MAX_ROOM_NAME} characters"
    if not name.isprintable():
        return "a room name must hold printable characters only"
    return None


def generate_secret() -> str:
    """A fresh random secret, long enough for HS256."""
    return secrets.token_urlsafe(MIN_SECRET_BYTES)


def mint_token(
    secret: str,
    identity: str,
    *,
    now: float,
    ttl: float = DEFAULT_TTL,
    issuer: str = DEFAULT_ISSUER,
    subject: str | None = None,
    not_before: float | None = None,
    jti: str | None = None,
    room: str | None = None,
) -> str:
    """A signed access token for ``identity`` valid from ``now`` (unix s) for ``ttl`` s.

    ``subject`` defaults to the identity; ``room`` puts a room grant in the video grant (the token
    then joins that room only). Raises ConfigError for unusable arguments.
    """
    if not secret:
        raise ConfigError("the token secret must not be empty")
    if not identity:
        raise ConfigError("the identity must not be empty")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ConfigError(f"the token ttl must be a positive number of seconds, got {ttl}")
    if not issuer:
        raise ConfigError("the issuer must not be empty")
    if room is not None and (why := check_room_name(room)) is not None:
        raise ConfigError(why)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject if subject is not None else identity,
        "iat": int(now),
        "exp": int(now + ttl),
        "jti": jti if jti is not None else uuid.uuid4().hex,
        "grants": {"identity": identity, "video": {} if room is None else {"room": room}},
    }
    if not_before is not None:
        claims["nbf"] = int(not_before)
    return _encode(claims, secret)


def _encode(claims: dict[str, Any], secret: str) -> str:
    with warnings.catch_warnings():
        # Short secrets are the caller's choice (the CLI warns about them); the library's warning
        # would only add noise to every mint.
        warnings.simplefilter("ignore")
        return jwt.encode(claims, secret, algorithm=ALGORITHM)


def _number(claims: dict[str, Any], key: str) -> float | None:
    value = claims.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenError(EXPIRED if key == "exp" else INVALID, f"claim '{key}' must be a number of seconds")
    return float(value)


def verify_token(token: str, secret: str, *, now: float, issuer: str = DEFAULT_ISSUER) -> TokenClaims:
    """The claims of a valid token; raises :class:`TokenError` with the code that says why not."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError(INVALID, f"malformed access token: {exc}") from None
    if header.get("alg") != ALGORITHM:
        raise TokenError(INVALID, f"access token algorithm must be {ALGORITHM}, got {header.get('alg')!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Claims are checked below against the caller's ``now``; PyJWT only checks the signature.
            claims = jwt.decode(
                token, secret, algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                         "verify_iss": False, "verify_aud": False, "verify_sub": False,
                         "verify_jti": False},
            )
    except jwt.InvalidSignatureError:
        raise TokenError(SIGNATURE_INVALID, "access token signature is invalid") from None
    except jwt.PyJWTError as exc:
        raise TokenError(INVALID, f"malformed access token: {exc}") from None
    if not isinstance(claims, dict):
        raise TokenError(INVALID, "access token payload is not an object")

    iss = claims.get("iss")
    if iss != issuer:
        raise TokenError(ISSUER_INVALID, f"access token issuer must be {issuer!r}, got {iss!r}")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise TokenError(ISSUER_INVALID, "access token subject ('sub') is missing or empty")

    exp = _number(claims, "exp")
    if exp is None:
        raise TokenError(INVALID, "access token has no expiry ('exp')")
    if exp <= now:
        raise TokenError(EXPIRED, "access token expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and nbf > now:
        raise TokenError(NOT_YET_VALID, "access token is not valid yet ('nbf' in the future)")
    _number(claims, "iat")  # optional, but a number when present

    grants = claims.get("grants")
    if not isinstance(grants, dict):
        raise TokenError(INVALID, "access token has no 'grants'")
    identity = grants.get("identity")
    if not isinstance(identity, str) or not identity:
        raise TokenError(INVALID, "access token grants have no identity")
    video = grants.get("video")
    if not isinstance(video, dict):
        raise TokenError(INVALID, "access token has no video grant")
    room = video.get("room")
    if room is not None and (why := check_room_name(room)) is not None:
        raise TokenError(INVALID, f"access token video grant: {why}")
    jti = claims.get("jti")
    return TokenClaims(identity=identity, subject=sub, issuer=iss, expires=exp,
                       jti=jti if isinstance(jti, str) else None, room=room)
