"""One Cognito user per device: provision, rotate, deprovision, list.

A device is a user of the deployment's user pool whose username is its device
id. `provision` creates it without any message (`MessageAction=SUPPRESS`),
sets a random password that meets the pool's policy as permanent (no
temporary password, no NEW_PASSWORD_REQUIRED on the device), reads the app
client's secret and renders the device's `forwarder.conf`. The password
exists only in that file (0600) or on stdout with `--out -`: it is never
logged and never kept here. `--rotate` gives an existing device a new
password and signs out its sessions; `deprovision` disables the user and
signs it out. AWS credentials the device already holds stay valid until they
expire (up to an hour): say so, since an operator cutting off a stolen
device must know it.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import string
import time
from collections.abc import Iterator
from typing import Any, Callable, NamedTuple, Optional

from omprog_forwarder.admin.stack import Deployment
from omprog_forwarder.config import DEFAULT_SPOOL_DIR, DEVICE_ID_RE
from omprog_forwarder.errors import AdminError, UsageError
from omprog_forwarder.spool import write_file_atomic

#: Symbols Cognito counts as special characters, minus those that need quoting
#: in an INI or .env file (quotes, backslash, `$`, `#`, `;`, space).
PASSWORD_SYMBOLS = "!%*+-.=?@^_~"
PASSWORD_LENGTH = 32
DEVICE_CONF_ON_DEVICE = "/etc/omprog-forwarder/forwarder.conf"
STILL_VALID_NOTE = (
    "AWS credentials the device already holds stay valid until they expire "
    "(up to an hour); its refresh tokens no longer work."
)


class DeviceInfo(NamedTuple):
    """One provisioned device as the user pool knows it."""

    device_id: str
    enabled: bool
    status: str
    created: str
    modified: str


class Provisioned(NamedTuple):
    device_id: str
    config_text: str
    rotated: bool
    re_enabled: bool


def check_device_id(device_id: str) -> str:
    """The id, or UsageError saying why the Lambda (or the pool) would refuse it."""
    if not DEVICE_ID_RE.match(device_id):
        raise UsageError(
            f"bad device id {device_id!r}: the API takes 1-128 characters of "
            "A-Z a-z 0-9 . _ -, starting with a letter or digit (it becomes an S3 key part)"
        )
    if device_id != device_id.lower():
        raise UsageError(
            f"bad device id {device_id!r}: use lower case ({device_id.lower()!r}); the user "
            "pool ignores case, so two ids that differ only in case would be one device"
        )
    return device_id


def new_password(policy: dict[str, Any], rand: Any = secrets) -> str:
    """A random password with every character class, at least the policy's length."""
    length = max(PASSWORD_LENGTH, int(policy.get("MinimumLength") or 0))
    classes = [string.ascii_uppercase, string.ascii_lowercase, string.digits, PASSWORD_SYMBOLS]
    alphabet = "".join(classes)
    chars = [rand.choice(c) for c in classes]
    chars += [rand.choice(alphabet) for _ in range(length - len(chars))]
    # Shuffle with the same source of randomness, so the classes are not in front.
    for i in range(len(chars) - 1, 0, -1):
        j = rand.randbelow(i + 1)
        chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


def render_config(
    dep: Deployment,
    device_id: str,
    client_secret: str,
    password: str,
    when: float,
    spool_dir: str = DEFAULT_SPOOL_DIR,
) -> str:
    """The device's forwarder.conf (INI, `[forwarder]`), with where it came from."""
    stamp = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    source = f"stack {dep.stack}" if dep.stack else f"user pool {dep.user_pool_id}"
    lines = [
        f"# omprog-forwarder device {device_id}, provisioned {stamp} from {source}.",
        "# Holds the device's password and the app client's secret: keep it mode 0600,",
        f"# at {DEVICE_CONF_ON_DEVICE} (root), and run `omprog-forwarder check`.",
        "[forwarder]",
        f"spool_dir = {spool_dir}",
        f"endpoint_url = {dep.endpoint_url}",
        f"region = {dep.region}",
        f"user_pool_id = {dep.user_pool_id}",
        f"client_id = {dep.client_id}",
        f"client_secret = {client_secret}",
        f"identity_pool_id = {dep.identity_pool_id}",
        f"username = {device_id}",
        f"password = {password}",
    ]
    return "\n".join(lines) + "\n"


def check_config_target(path: str, force: bool = False) -> None:
    """UsageError unless `path` can take a new config (an existing file needs `force`)."""
    if os.path.lexists(path) and not force:
        raise UsageError(f"{path} exists: pass --force to replace it, or --out another file")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"cannot write {path}: folder {folder} does not exist")


def write_config(path: str, text: str, force: bool = False) -> None:
    """Write the config 0600 (atomically); an existing file is kept unless `force`."""
    check_config_target(path, force)
    try:
        write_file_atomic(path, text.encode("utf-8"), mode=0o600)
        os.chmod(path, 0o600)  # an existing file replaced keeps no looser mode
    except OSError as exc:
        raise AdminError(f"cannot write {path}: {exc.strerror}") from None


class Fleet:
    """The devices of one deployment's user pool, through the operator's boto3 session."""

    def __init__(
        self, session: Any, dep: Deployment, clock: Callable[[], float] = time.time
    ) -> None:
        self.dep = dep
        self.clock = clock
        self._session = session
        self._idp: Any = None

    @property
    def idp(self) -> Any:
        if self._idp is None:
            self._idp = self._session.client("cognito-idp", region_name=self.dep.region)
        return self._idp

    # -- commands -------------------------------------------------------

    def provision(
        self, device_id: str, *, rotate: bool = False, spool_dir: str = DEFAULT_SPOOL_DIR
    ) -> Provisioned:
        check_device_id(device_id)
        pool = self.dep.user_pool_id
        policy = self._call("describe_user_pool", UserPoolId=pool)["UserPool"]
        password = new_password(policy.get("Policies", {}).get("PasswordPolicy", {}))
        secret = self._client_secret()
        existing = self._user(device_id)
        re_enabled = False
        if existing is None:
            self._call(
                "admin_create_user",
                UserPoolId=pool,
                Username=device_id,
                MessageAction="SUPPRESS",
            )
            try:
                self._set_password(device_id, password)
            except AdminError:
                # A user without a usable password is no device: leave nothing behind.
                self._call("admin_delete_user", UserPoolId=pool, Username=device_id)
                raise
            text = render_config(self.dep, device_id, secret, password, self.clock(), spool_dir)
            return Provisioned(device_id, text, False, False)
        if not rotate:
            raise UsageError(
                f"device {device_id!r} is already provisioned in {pool}: pass --rotate to give "
                "it a new password and sign out its sessions"
            )
        if existing.get("Enabled") is False:
            self._call("admin_enable_user", UserPoolId=pool, Username=device_id)
            re_enabled = True
        self._set_password(device_id, password)
        self._call("admin_user_global_sign_out", UserPoolId=pool, Username=device_id)
        text = render_config(self.dep, device_id, secret, password, self.clock(), spool_dir)
        return Provisioned(device_id, text, True, re_enabled)

    def deprovision(self, device_id: str) -> bool:
        """Disable and sign out; False when it was disabled already."""
        user = self._user(device_id)
        if user is None:
            raise AdminError(f"no device {device_id!r} in user pool {self.dep.user_pool_id}")
        was_enabled = user.get("Enabled", True) is not False
        pool = self.dep.user_pool_id
        self._call("admin_disable_user", UserPoolId=pool, Username=device_id)
        self._call("admin_user_global_sign_out", UserPoolId=pool, Username=device_id)
        return was_enabled

    def devices(self) -> list[DeviceInfo]:
        return sorted(self._list(), key=lambda d: d.device_id)

    # -- helpers --------------------------------------------------------

    def _set_password(self, device_id: str, password: str) -> None:
        # Permanent: the user is CONFIRMED at once, no NEW_PASSWORD_REQUIRED challenge.
        self._call(
            "admin_set_user_password",
            UserPoolId=self.dep.user_pool_id,
            Username=device_id,
            Password=password,
            Permanent=True,
        )

    def _list(self) -> Iterator[DeviceInfo]:
        token: Optional[str] = None
        while True:
            args = {"UserPoolId": self.dep.user_pool_id, "Limit": 60}
            if token:
                args["PaginationToken"] = token
            page = self._call("list_users", **args)
            for u in page.get("Users", []):
                yield DeviceInfo(
                    u["Username"],
                    u.get("Enabled", True) is not False,
                    str(u.get("UserStatus", "")),
                    _iso(u.get("UserCreateDate")),
                    _iso(u.get("UserLastModifiedDate")),
                )
            token = page.get("PaginationToken")
            if not token:
                return

    def _client_secret(self) -> str:
        if not self.dep.client_id:
            raise UsageError("a device config needs the app client id (--client-id or --stack)")
        client = self._call(
            "describe_user_pool_client",
            UserPoolId=self.dep.user_pool_id,
            ClientId=self.dep.client_id,
        )["UserPoolClient"]
        return str(client.get("ClientSecret") or "")

    def _user(self, device_id: str) -> Optional[dict[str, Any]]:
        try:
            return self._call(
                "admin_get_user", UserPoolId=self.dep.user_pool_id, Username=device_id
            )
        except _NotFound:
            return None

    def _call(self, name: str, **kwargs: Any) -> Any:
        """One Cognito call; its errors become AdminError / UsageError naming what failed."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self.idp, name)(**kwargs)
        except NoCredentialsError:
            raise AdminError(
                "no AWS credentials for the operator: configure them (aws configure, "
                "AWS_PROFILE); provisioning runs with admin credentials, not on a device"
            ) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", "")
            if code == "UserNotFoundException":
                raise _NotFound() from None
            if code == "ResourceNotFoundException":
                raise AdminError(
                    f"{name}: {message} (is user_pool_id/client_id from this deployment?)"
                ) from None
            if code in ("AccessDeniedException", "UnrecognizedClientException"):
                raise AdminError(
                    f"AWS refused {name} for the operator's credentials ({code}): {message}"
                ) from None
            raise AdminError(f"{name} failed: {code}: {message}") from None
        except BotoCoreError as exc:
            raise AdminError(f"{name} failed: {exc}") from None


class _NotFound(Exception):
    """Internal: Cognito has no such user."""


def _iso(value: Any) -> str:
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).isoformat(timespec="seconds")
    return "" if value is None else str(value)


def devices_json(devices: list[DeviceInfo]) -> str:
    return json.dumps([d._asdict() for d in devices], indent=2)


def devices_text(devices: list[DeviceInfo]) -> str:
    if not devices:
        return "no devices provisioned"
    width = max(9, *(len(d.device_id) for d in devices))
    rows = [f"{'device':<{width}}  {'state':<8}  {'status':<21}  created"]
    for d in devices:
        state = "enabled" if d.enabled else "disabled"
        rows.append(f"{d.device_id:<{width}}  {state:<8}  {d.status:<21}  {d.created}")
    return "\n".join(rows)
