"""auth.CognitoAuth against moto in server mode.

moto quirks handled here: its SRP accepts any password, so the wrong-password
test uses USER_PASSWORD_AUTH (which moto does check); GetId hands out a new
identity id per call, so "the identity id did not change" proves GetId was
not called again; its credentials last 90 s, so expiry is driven by the
injected clock instead of sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time

import pytest
from botocore.exceptions import ClientError
from support.clock import FakeClock

from omprog_forwarder import config
from omprog_forwarder.errors import AuthError, AuthUnavailableError
from omprog_forwarder.ship.auth import CognitoAuth, Credentials, is_due, renew_margin


@pytest.fixture
def now():
    """The device's wall clock: real time (moto's tokens live in it), shifted by tests."""
    return FakeClock(0.0, follow=time.time)


@pytest.fixture
def cfg_for(device, spool):
    def make(**overrides):
        values = {
            **device.config_values(),
            "endpoint_url": "https://api.example/prod/logs",
            "spool_dir": spool.root,
            **overrides,
        }
        return config.load(None, values, environ={})

    return make


@pytest.fixture
def make_auth(cfg_for, spool, now):
    def make(login_flow="srp", **overrides):
        return CognitoAuth(
            cfg_for(**overrides),
            spool.state_path("credentials.json"),
            spool.state_path("credentials.lock"),
            now=now,
            login_flow=login_flow,
        )

    return make


def cache(spool):
    with open(spool.state_path("credentials.json")) as fh:
        return json.load(fh)


def test_renewal_margin_is_five_minutes_or_half_a_short_lifetime():
    assert renew_margin(0, 3600) == 300
    assert renew_margin(0, 90) == 45
    assert is_due(now=3301, obtained_at=0, expires_at=3600)
    assert not is_due(now=3299, obtained_at=0, expires_at=3600)
    assert not is_due(now=44, obtained_at=0, expires_at=90)
    assert is_due(now=46, obtained_at=0, expires_at=90)


def test_srp_login_then_identity_pool_credentials_cached_privately(make_auth, spool, device):
    auth = make_auth()
    creds = auth.credentials()
    assert creds.access_key == "TESTACCESSKEY12345" and creds.token == "ABC12345"
    assert 80 < creds.expiration - time.time() <= 90  # moto: 90 s
    assert auth.counts == {"logins": 1, "credential_renewals": 1}

    path = spool.state_path("credentials.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    c = cache(spool)
    assert c["bound_to"]["user_pool_id"] == device.user_pool_id
    assert (
        c["identity_id"]
        and c["tokens"]["refresh_token"]
        and c["credentials"]["token"] == "ABC12345"
    )
    assert device.password not in json.dumps(c) and device.client_secret not in json.dumps(c)


def test_a_new_process_uses_the_cache_without_calling_cognito(make_auth, device, monkeypatch):
    first = make_auth().credentials()
    # Cognito is now unreachable: only the cache can answer.
    monkeypatch.setattr(CognitoAuth, "_login", lambda *a: pytest.fail("logged in again"))
    monkeypatch.setattr(CognitoAuth, "_identity", lambda *a: pytest.fail("asked the identity pool"))
    second = make_auth()
    assert second.credentials() == first
    assert second.counts == {}


def test_due_credentials_are_renewed_from_the_cached_id_token(make_auth, spool, now):
    auth = make_auth()
    auth.credentials()
    identity = cache(spool)["identity_id"]
    now.advance(50)  # 40 s left of moto's 90: inside the 45 s margin
    auth.credentials()
    assert auth.counts == {"logins": 1, "credential_renewals": 2}
    assert cache(spool)["identity_id"] == identity  # GetId not called again


def test_credentials_not_yet_due_are_not_renewed(make_auth, now):
    auth = make_auth()
    auth.credentials()
    now.advance(40)
    auth.credentials()
    assert auth.counts == {"logins": 1, "credential_renewals": 1}


def test_due_tokens_are_renewed_with_the_refresh_token(make_auth, spool, now):
    auth = make_auth()
    auth.credentials()
    refresh = cache(spool)["tokens"]["refresh_token"]
    now.advance(3600 - 200)  # the hour-long ID token is within 5 minutes of expiry
    auth.credentials()
    assert auth.counts == {"logins": 1, "token_refreshes": 1, "credential_renewals": 2}
    assert cache(spool)["tokens"]["refresh_token"] == refresh  # no rotation: kept


def test_a_refused_refresh_token_falls_back_to_a_full_login(make_auth, spool, now):
    make_auth().credentials()
    c = cache(spool)
    c["tokens"]["refresh_token"] = "revoked-" + c["tokens"]["refresh_token"]
    with open(spool.state_path("credentials.json"), "w") as fh:
        json.dump(c, fh)
    now.advance(3600 - 200)
    auth = make_auth()
    auth.credentials()
    assert auth.counts == {"logins": 1, "credential_renewals": 1}


def test_renew_forces_new_credentials_even_when_the_cached_look_valid(make_auth):
    auth = make_auth()
    auth.credentials()
    auth.renew()
    assert auth.counts == {"logins": 1, "credential_renewals": 2}


def test_a_changed_config_never_uses_the_old_cache(make_auth, device, moto):
    make_auth().credentials()
    other = moto.provision("another-device")
    auth = make_auth(
        user_pool_id=other.user_pool_id,
        client_id=other.client_id,
        client_secret=other.client_secret,
        identity_pool_id=other.identity_pool_id,
        username=other.username,
        password=other.password,
    )
    auth.credentials()
    assert auth.counts["logins"] == 1


def test_password_flow_logs_in_with_the_right_password(make_auth):
    auth = make_auth(login_flow="password")
    assert auth.credentials().access_key == "TESTACCESSKEY12345"
    assert auth.counts["logins"] == 1


def test_wrong_password_is_an_auth_error_that_never_shows_the_password(make_auth, caplog):
    """Through USER_PASSWORD_AUTH: moto's SRP would accept any password."""
    caplog.set_level(logging.DEBUG, logger="omprog_forwarder")
    wrong = "Wrong-Passw0rd!-do-not-print"
    with pytest.raises(AuthError) as err:
        make_auth(login_flow="password", password=wrong).credentials()
    assert "NotAuthorizedException" in str(err.value)
    assert err.value.exit_code == 77
    assert wrong not in str(err.value) and wrong not in caplog.text


def test_wrong_client_secret_is_refused_even_through_srp(make_auth, device, caplog):
    caplog.set_level(logging.DEBUG, logger="omprog_forwarder")
    bad_secret = "x" * 40 + "not-the-secret"
    with pytest.raises(AuthError) as err:
        make_auth(client_secret=bad_secret).credentials()
    assert bad_secret not in str(err.value) and bad_secret not in caplog.text


def test_a_disabled_user_is_refused(make_auth, device, moto):
    moto.client("cognito-idp").admin_disable_user(
        UserPoolId=device.user_pool_id, Username=device.username
    )
    with pytest.raises(AuthError, match="disabled"):
        make_auth().credentials()


def test_a_user_without_a_permanent_password_is_explained(make_auth, device, moto):
    idp = moto.client("cognito-idp")
    idp.admin_create_user(
        UserPoolId=device.user_pool_id,
        Username="fresh-device",
        TemporaryPassword="Temp0rary!Passw0rd",
        MessageAction="SUPPRESS",
    )
    with pytest.raises(AuthError, match="permanent password"):
        make_auth(username="fresh-device", password="Temp0rary!Passw0rd").credentials()


def test_an_unreachable_cognito_is_transient(make_auth, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(AuthUnavailableError):
        make_auth().credentials()


def test_srp_not_allowed_by_the_app_client_falls_back_to_password_auth(
    make_auth, monkeypatch, caplog
):
    """Real Cognito refuses SRP for a how-to app client that only allows USER_PASSWORD_AUTH.

    moto does not enforce ExplicitAuthFlows, so Cognito's refusal is simulated.
    """
    import pycognito

    def refuse(self, password, client_metadata=None):
        raise ClientError(
            {
                "Error": {
                    "Code": "InvalidParameterException",
                    "Message": "USER_SRP_AUTH flow not enabled for this client",
                }
            },
            "InitiateAuth",
        )

    monkeypatch.setattr(pycognito.Cognito, "authenticate", refuse)
    caplog.set_level(logging.INFO, logger="omprog_forwarder")
    auth = make_auth()
    assert auth.credentials().access_key == "TESTACCESSKEY12345"
    assert "USER_PASSWORD_AUTH instead" in caplog.text
    assert "logged in to Cognito" in caplog.text and "(password)" in caplog.text


def test_no_secret_in_any_log_line_or_repr(make_auth, device, spool, now, caplog):
    caplog.set_level(logging.DEBUG, logger="omprog_forwarder")
    auth = make_auth()
    creds = auth.credentials()
    now.advance(3600 - 200)
    auth.credentials()
    auth.renew()
    c = cache(spool)
    secrets = [
        device.password,
        device.client_secret,
        c["tokens"]["id_token"],
        c["tokens"]["access_token"],
        c["tokens"]["refresh_token"],
        creds.secret_key,
        creds.token,
    ]
    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith("omprog_forwarder")
    )
    assert "logged in to Cognito" in ours
    for s in secrets:
        assert s not in ours
        assert s not in repr(creds) and s not in repr(auth.cfg)
    assert (
        repr(Credentials("AKID", "SECRET", "TOKEN", 1.0))
        == "Credentials(access_key='AKID', expiration=1.0)"
    )


def test_debug_logging_everywhere_still_shows_no_password(make_auth, device, caplog):
    """Even with the root logger at DEBUG (log_level = debug), botocore stays quiet."""
    caplog.set_level(logging.DEBUG)
    auth = make_auth(login_flow="password")
    auth.credentials()
    assert "logged in to Cognito" in caplog.text
    assert device.password not in caplog.text
    assert device.client_secret not in caplog.text
    assert cache_tokens_absent(caplog.text, auth)


def cache_tokens_absent(text, auth):
    tokens = auth._state["tokens"]
    return all(tokens[k] not in text for k in ("id_token", "access_token", "refresh_token"))


def test_the_one_call_helper_provisions_a_device_and_restores_the_environment(tmp_path):
    from support.moto_cognito import moto_cognito

    from omprog_forwarder.spool import Spool

    before = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "COGNITO_JWKS")}
    spool = Spool(str(tmp_path / "s")).create()
    with moto_cognito(username="helper-device") as dev:
        assert os.environ["AWS_ENDPOINT_URL"] == dev.endpoint
        cfg = config.load(None, {**dev.config_values(), "spool_dir": spool.root}, environ={})
        auth = CognitoAuth(cfg, spool.state_path("c.json"), spool.state_path("c.lock"))
        assert auth.credentials().access_key == "TESTACCESSKEY12345"
    assert {k: os.environ.get(k) for k in before} == before
