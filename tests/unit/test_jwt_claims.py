"""JWT claim rules, with tokens minted by PyJWT (a library voicegate does not verify with).

Each rule is checked against a token that breaks only that rule, so a refusal is for the
reason named and not for another one the token happens to break too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from voicegate import jwtkeys
from voicegate.config import resolve
from voicegate.config_checks import validate
from voicegate.signaling import auth, jwt_access

SECRET = "jwt-unit-secret-0123456789abcdef"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _ring(audience: str = "") -> jwt_access.Keyring:
    static = jwtkeys.keys_from_pem(_pem(RSA_KEY) + _pem(EC_KEY))
    return jwt_access.Keyring(SECRET, static, audience=audience)


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 300, **extra}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """A token PyJWT refuses to make (it guards against these very attacks)."""
    signed = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{_b64(mac)}"


def _refused(token: str, reason: str, ring: jwt_access.Keyring | None = None) -> None:
    with pytest.raises(auth.AuthError) as err:
        (ring or _ring()).verify(token)
    assert err.value.reason == reason, err.value.message
    assert token not in err.value.message


def test_hs256_claims_become_voicegate_claims() -> None:
    token = jwt.encode(
        _claims(agent="support", max_call_seconds=90, aud=["x", "voice"]), SECRET, "HS256"
    )
    claims = _ring(audience="voice").verify(token)
    assert (claims.sub, claims.agent, claims.mcs, claims.aud) == ("alice", "support", 90.0, "voice")
    assert claims.pc is None and claims.exp - int(time.time()) in range(295, 301)


@pytest.mark.parametrize("key", [RSA_KEY, EC_KEY], ids=["RS256", "ES256"])
def test_public_key_tokens_verify(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> None:
    alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    # An identity provider's own kid, unknown to a PEM file: every key of the type is tried.
    token = jwt.encode(_claims(), key, alg, headers={"kid": "idp-2026-12"})
    assert _ring().verify(token).sub == "alice"
    other = (
        rsa.generate_private_key(65537, 2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    _refused(jwt.encode(_claims(), other, alg), "forged")


def test_alg_none_is_refused() -> None:
    token = jwt.encode(_claims(), None, algorithm="none")
    _refused(token, "wrong_algorithm")
    _refused(token + "c2ln", "wrong_algorithm")


def test_algorithm_confusion_is_refused() -> None:
    """An HS256 token "signed" with the public key, which anyone can read."""
    header = {"alg": "HS256", "typ": "JWT"}
    token = _hand_signed(header, _claims(), _pem(RSA_KEY).encode())
    _refused(token, "forged")
    # A server with only public keys and a secret of its own still never uses a key as a secret.
    rs_as_hs = _hand_signed({"alg": "RS256"}, _claims(), _pem(RSA_KEY).encode())
    _refused(rs_as_hs, "forged")


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS512", "PS256", "ES384"])
def test_unexpected_algorithms_are_refused(alg: str) -> None:
    key: Any = SECRET * 2 if alg.startswith("HS") else RSA_KEY
    if alg == "ES384":
        key = ec.generate_private_key(ec.SECP384R1())
    _refused(jwt.encode(_claims(), key, alg), "wrong_algorithm")


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": None}, "malformed"),
        ({"exp": int(time.time()) - 1}, "expired"),
        ({"exp": "soon"}, "malformed"),
        ({"nbf": int(time.time()) + 30 * 86400}, "not_yet_valid"),
        ({"iat": int(time.time()) + 30 * 86400}, "malformed"),
        ({"sub": ""}, "malformed"),
        ({"sub": "x" * 200}, "malformed"),
        ({"agent": "Not An Agent"}, "malformed"),
        ({"agent": 7}, "malformed"),
        ({"max_call_seconds": -1}, "malformed"),
        ({"max_call_seconds": True}, "malformed"),
        ({"mcs": 60}, "malformed"),
        ({"pc": "pc-123"}, "malformed"),
        ({"aud": 5}, "malformed"),
    ],
)
def test_claim_rules(claims: dict[str, Any], reason: str) -> None:
    body = {k: v for k, v in _claims(**claims).items() if v is not None}
    _refused(jwt.encode(body, SECRET, "HS256"), reason)


def test_audience_is_checked_when_configured() -> None:
    ring = _ring(audience="voice")
    _refused(jwt.encode(_claims(aud="other"), SECRET, "HS256"), "wrong_audience", ring)
    _refused(jwt.encode(_claims(), SECRET, "HS256"), "wrong_audience", ring)
    assert ring.verify(jwt.encode(_claims(aud="voice"), SECRET, "HS256")).aud == "voice"


def test_a_token_naming_its_own_key_is_refused() -> None:
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True)
    for header in ({"jwk": jwk}, {"jku": "https://evil.example/jwks"}, {"crit": ["exp"]}):
        token = jwt.encode(_claims(), RSA_KEY, "RS256", headers=header)
        with pytest.raises(auth.AuthError) as err:
            _ring().verify(token)
        assert err.value.reason in ("wrong_key", "malformed")


def test_harmless_header_fields_of_identity_providers_are_ignored() -> None:
    headers = {"kid": "a", "x5t": "thumb", "x5t#S256": "thumb2", "typ": "at+jwt"}
    token = jwt.encode(_claims(), RSA_KEY, "RS256", headers=headers)
    assert _ring().verify(token).sub == "alice"


def test_garbage_is_malformed_never_an_exception() -> None:
    for token in ("a.b", "a.b.c", "e30.e30.", "W10.e30.x", "é.x.y", "x" * 5000, "..", "eyJ.eyJ.x"):
        with pytest.raises(auth.AuthError):
            _ring().verify(token)


def test_unknown_kid_against_a_jwks_without_it() -> None:
    ring = jwt_access.Keyring(SECRET, [], "https://idp.example/jwks")
    token = jwt.encode(_claims(), RSA_KEY, "RS256", headers={"kid": "nope"})
    _refused(token, "unknown_key", ring)


def test_mint_is_read_by_pyjwt() -> None:
    token = jwt_access.mint(SECRET, 120, subject="bob", agent="sales", audience="voice")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="voice")
    assert (claims["sub"], claims["agent"]) == ("bob", "sales")
    assert claims["exp"] - claims["iat"] == 120
    with pytest.raises(ValueError, match="agent"):
        jwt_access.mint(SECRET, 60, agent="Bad Name")
    with pytest.raises(ValueError, match="secret"):
        jwt_access.mint("short", 60)


def test_key_configuration_is_checked_at_start(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(65537, 1024)
    files = {
        "weak.pem": _pem(weak),
        "p384.pem": _pem(ec.generate_private_key(ec.SECP384R1())),
        "empty.pem": "nothing here\n",
        "good.pem": _pem(RSA_KEY) + _pem(EC_KEY),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    base = resolve(None, env={"VOICEGATE_AUTH_SECRET": SECRET})

    def problems(**changes: str) -> list[str]:
        import dataclasses

        return [p for p in validate(dataclasses.replace(base, **changes)) if "jw" in p]

    assert problems(jwt_public_key_file=str(tmp_path / "good.pem")) == []
    for name in ("weak.pem", "p384.pem", "empty.pem", "missing.pem"):
        assert problems(jwt_public_key_file=str(tmp_path / name)), name
    assert problems(jwks_url="https://idp.example/.well-known/jwks.json") == []
    assert problems(jwks_url="http://127.0.0.1:8080/jwks") == []
    assert problems(jwks_url="http://idp.example/jwks")
    assert problems(jwks_url="ftp://idp.example/jwks")
    assert problems(jwks_url="https://idp.example/jwks", auth_secret="")


def test_env_vars_reach_the_config(tmp_path: Path) -> None:
    (tmp_path / "keys.pem").write_text(_pem(EC_KEY))
    config = resolve(
        None,
        env={
            "VOICEGATE_AUTH_SECRET": SECRET,
            "VOICEGATE_JWT_PUBLIC_KEY_FILE": str(tmp_path / "keys.pem"),
            "VOICEGATE_JWKS_URL": "https://idp.example/jwks",
        },
    )
    assert config.jwt_public_key_file.endswith("keys.pem")
    assert config.jwks_url == "https://idp.example/jwks"


_SEGMENT = st.one_of(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60
    ),
    st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "exp", "sub", "aud", "crit", "jku"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=8),
            st.lists(st.integers()),
            st.sampled_from(["RS256", "HS256", "ES256", "none"]),
        ),
        max_size=4,
    ).map(lambda d: _b64(json.dumps(d).encode())),
)


@given(st.tuples(_SEGMENT, _SEGMENT, _SEGMENT))
@settings(max_examples=300, deadline=None)
def test_any_three_segments_are_refused_with_a_reason(parts: tuple[str, str, str]) -> None:
    """Made-up headers and payloads (kid lists, alg numbers, ...) end in AuthError, never in
    another exception a request would turn into a 500."""
    ring = jwt_access.Keyring(SECRET, jwtkeys.keys_from_pem(_pem(RSA_KEY)), "https://i.example/j")
    with pytest.raises(auth.AuthError):
        ring.verify(".".join(parts))
