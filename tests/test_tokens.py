"""Access tokens (mint/verify → error codes) and TURN REST API credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rtcprobe.core.errors import ConfigError
from rtcprobe.drivers.aiortc.turn_client import parse_turn_url

from rtcprobe.server.credentials import build_ice_servers, check_turn_config, mint_turn_credentials
from rtcprobe.server.tokens import (
    EXPIRED,
    INVALID,
    ISSUER_INVALID,
    NOT_YET_VALID,
    SIGNATURE_INVALID,
    TokenError,
    generate_secret,
    mint_token,
    verify_token,
)

SECRET = "a-test-secret-that-is-long-enough-for-hs256"
NOW = 1_700_000_000.0


def craft(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256", **headers: Any) -> str:
    """A token with exactly these claims (bypassing mint_token's checks)."""
    return jwt.encode(claims, secret, algorithm=algorithm, headers=headers or None)


def good_claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": "rtcprobe", "sub": "acct", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j1",
        "grants": {"identity": "alice", "video": {}},
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not ...}


def code_of(token: str, *, now: float = NOW, secret: str = SECRET, issuer: str = "rtcprobe") -> int:
    with pytest.raises(TokenError) as info:
        verify_token(token, secret, now=now, issuer=issuer)
    return info.value.code


def test_mint_then_verify_round_trip() -> None:
    token = mint_token(SECRET, "alice", now=NOW, ttl=600, jti="abc")
    claims = verify_token(token, SECRET, now=NOW + 1)
    assert (claims.identity, claims.subject, claims.issuer, claims.expires, claims.jti) == (
        "alice", "alice", "rtcprobe", NOW + 600, "abc")
    raw = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False})
    assert raw["grants"] == {"identity": "alice", "video": {}}
    assert raw["iat"] == int(NOW) and isinstance(raw["jti"], str)


def test_mint_with_custom_issuer_subject_and_nbf() -> None:
    token = mint_token(SECRET, "bob", now=NOW, issuer="acme", subject="ACxx", not_before=NOW + 5)
    assert code_of(token, issuer="acme", now=NOW + 1) == NOT_YET_VALID
    claims = verify_token(token, SECRET, now=NOW + 6, issuer="acme")
    assert (claims.identity, claims.subject) == ("bob", "ACxx")


def test_every_mint_gets_its_own_jti() -> None:
    a, b = (jwt.decode(mint_token(SECRET, "x", now=NOW), options={"verify_signature": False}) for _ in range(2))
    assert a["jti"] != b["jti"]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", INVALID),
        ("garbage", INVALID),
        ("a.b.c", INVALID),
        (craft(good_claims(), secret=SECRET * 2, algorithm="HS512"), INVALID),  # only HS256 is accepted
        (craft(good_claims(), secret="another-secret-of-sufficient-length-000"), SIGNATURE_INVALID),
        (craft(good_claims(iss="someone-else")), ISSUER_INVALID),
        (craft(good_claims(iss=...)), ISSUER_INVALID),
        (craft(good_claims(sub="")), ISSUER_INVALID),
        (craft(good_claims(sub=...)), ISSUER_INVALID),
        (craft(good_claims(sub=7)), ISSUER_INVALID),
        (craft(good_claims(exp=...)), INVALID),  # exp is required
        (craft(good_claims(exp=int(NOW) - 1)), EXPIRED),
        (craft(good_claims(exp=int(NOW))), EXPIRED),  # valid strictly before exp
        (craft(good_claims(exp="tomorrow")), EXPIRED),  # "expiration date invalid"
        (craft(good_claims(nbf=int(NOW) + 30)), NOT_YET_VALID),
        (craft(good_claims(nbf="soon")), INVALID),
        (craft(good_claims(grants=...)), INVALID),
        (craft(good_claims(grants="all")), INVALID),
        (craft(good_claims(grants={"video": {}})), INVALID),
        (craft(good_claims(grants={"identity": "", "video": {}})), INVALID),
        (craft(good_claims(grants={"identity": "alice"})), INVALID),  # no video grant
        (craft(good_claims(grants={"identity": "alice", "video": True})), INVALID),
    ],
)
def test_each_bad_token_gets_its_code(token: str, code: int) -> None:
    assert code_of(token) == code


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode(good_claims(), None, algorithm="none")
    assert code_of(unsigned) == INVALID


def test_signature_is_checked_before_claims() -> None:
    # An expired token with a wrong issuer signed by someone else: the signature decides.
    forged = craft(good_claims(exp=1, iss="x"), secret="forger-secret-forger-secret-forger-1234")
    assert code_of(forged) == SIGNATURE_INVALID


def test_verification_uses_the_given_clock() -> None:
    token = mint_token(SECRET, "alice", now=NOW, ttl=60)
    assert verify_token(token, SECRET, now=NOW + 59.9).identity == "alice"
    assert code_of(token, now=NOW + 60) == EXPIRED


@given(st.text(max_size=200))
def test_arbitrary_text_never_raises_anything_but_token_error(text: str) -> None:
    try:
        verify_token(text, SECRET, now=NOW)
    except TokenError as exc:
        assert exc.code in {INVALID, ISSUER_INVALID, EXPIRED, NOT_YET_VALID, SIGNATURE_INVALID}


@pytest.mark.parametrize(
    "kwargs",
    [{"secret": ""}, {"identity": ""}, {"ttl": 0}, {"ttl": float("inf")}, {"issuer": ""}],
)
def test_mint_refuses_bad_arguments(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"secret": SECRET, "identity": "alice", "now": NOW, **kwargs}
    with pytest.raises(ConfigError):
        mint_token(args.pop("secret"), args.pop("identity"), **args)


def test_generated_secrets_are_long_and_distinct() -> None:
    a, b = generate_secret(), generate_secret()
    assert a != b and len(a.encode()) >= 32


# --- TURN REST API credentials -------------------------------------------------------------------


def test_turn_credentials_known_vector() -> None:
    # Reference computed with: printf %s "1700003600:alice" | openssl dgst -sha1 -hmac turn-shared-secret
    # -binary | base64
    assert mint_turn_credentials("turn-shared-secret", "alice", 3600, NOW) == (
        "1700003600:alice", "NT6MdRpcXYd2/BSFDz9lHArmh+Y=")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=30),
       st.integers(1, 10**6), st.floats(0, 4e9))
def test_turn_credentials_follow_the_rest_api_scheme(secret: str, identity: str, ttl: int, now: float) -> None:
    username, password = mint_turn_credentials(secret, identity, ttl, now)
    expiry, _, user = username.partition(":")
    assert int(expiry) == int(now + ttl) and user == identity
    assert base64.b64decode(password) == hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()


def test_ice_servers_share_one_set_of_credentials() -> None:
    urls = check_turn_config(["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"], "s")
    (server,) = build_ice_servers(urls, "s", "alice", 600, NOW)
    assert server.urls == ("turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp")
    assert (server.username, server.credential) == mint_turn_credentials("s", "alice", 600, NOW)
    assert build_ice_servers((), None, "alice", 600, NOW) == ()


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=udp"),
        ("turn:127.0.0.1", "turn:127.0.0.1:3478?transport=udp"),
        ("TURN:example.org:3479?transport=TCP", "turn:example.org:3479?transport=tcp"),
        ("turns:example.org", "turns:example.org:5349?transport=tcp"),
        ("turn:[::1]:3478", "turn:[::1]:3478?transport=udp"),
    ],
)
def test_turn_urls_parse(url: str, normalized: str) -> None:
    assert parse_turn_url(url).url == normalized


@pytest.mark.parametrize(
    "url",
    ["stun:127.0.0.1:3478", "http://x", "turn:", "turn://127.0.0.1:3478", "turn:127.0.0.1:0",
     "turn:127.0.0.1:99999", "turn:127.0.0.1:abc", "turn:127.0.0.1?transport=sctp",
     "turn:127.0.0.1?foo=bar", "turns:127.0.0.1?transport=udp", "turn:[::1", "127.0.0.1:3478"],
)
def test_malformed_turn_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="TURN URL"):
        parse_turn_url(url)


def test_turn_needs_a_secret_and_a_secret_needs_turn() -> None:
    with pytest.raises(ConfigError, match="--turn-secret"):
        check_turn_config(["turn:127.0.0.1"], None)
    with pytest.raises(ConfigError, match="without any --turn"):
        check_turn_config([], "s")
