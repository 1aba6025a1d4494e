"""Where a deployment is: a CloudFormation stack's outputs, or ids given by hand.

`lambda/template.yaml` outputs everything a device needs (region, user pool,
app client, identity pool, endpoint, bucket); the client secret is not an
output and is read from Cognito by the command that needs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from omprog_forwarder.errors import AdminError, UsageError

#: Template output name -> Deployment field.
OUTPUTS = {
    "Region": "region",
    "UserPoolId": "user_pool_id",
    "UserPoolClientId": "client_id",
    "IdentityPoolId": "identity_pool_id",
    "EndpointUrl": "endpoint_url",
    "BucketName": "bucket",
}


class Deployment(NamedTuple):
    """The ids of one deployment (stack) that devices and operators need."""

    region: str
    user_pool_id: str
    client_id: str = ""
    identity_pool_id: str = ""
    endpoint_url: str = ""
    bucket: str = ""
    stack: str = ""


def region_of_pool(user_pool_id: str) -> str:
    """`eu-west-1_AbC` -> `eu-west-1` (a user pool id starts with its region)."""
    return user_pool_id.split("_", 1)[0] if "_" in user_pool_id else ""


def from_outputs(stack: str, outputs: Mapping[str, str], region: str) -> Deployment:
    values = {OUTPUTS[k]: v for k, v in outputs.items() if k in OUTPUTS}
    missing = [k for k in ("UserPoolId", "UserPoolClientId") if OUTPUTS[k] not in values]
    if missing:
        raise AdminError(
            f"stack {stack!r} has no output {' or '.join(missing)}: is it a deployment of "
            "lambda/template.yaml?"
        )
    values.setdefault("region", region or region_of_pool(values["user_pool_id"]))
    return Deployment(stack=stack, **values)


def resolve(
    session: Any,
    *,
    stack: Optional[str] = None,
    region: Optional[str] = None,
    user_pool_id: Optional[str] = None,
    client_id: Optional[str] = None,
    identity_pool_id: Optional[str] = None,
    endpoint_url: Optional[str] = None,
    need_client: bool = True,
) -> Deployment:
    """The deployment named by `--stack`, or by explicit ids (which override the stack's)."""
    explicit = {
        "user_pool_id": user_pool_id,
        "client_id": client_id,
        "identity_pool_id": identity_pool_id,
        "endpoint_url": endpoint_url,
    }
    region = region or (session.region_name if session is not None else None) or ""
    if stack:
        dep = from_outputs(stack, stack_outputs(session, stack, region), region)
        dep = dep._replace(**{k: v for k, v in explicit.items() if v})
    else:
        if not user_pool_id:
            raise UsageError("name the deployment: --stack NAME, or --user-pool-id (and more)")
        dep = Deployment(
            region=region or region_of_pool(user_pool_id),
            **{k: v or "" for k, v in explicit.items()},
        )
    if need_client:
        missing = [
            f"--{k.replace('_', '-')}"
            for k in ("client_id", "identity_pool_id", "endpoint_url")
            if not getattr(dep, k)
        ]
        if missing:
            raise UsageError(f"a device config needs {', '.join(missing)} (or --stack NAME)")
    if not dep.region:
        raise UsageError("no AWS region: pass --region or set AWS_REGION")
    return dep


def stack_outputs(session: Any, stack: str, region: str) -> dict[str, str]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        cf = session.client("cloudformation", region_name=region or None)
        stacks = cf.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", "")
        if code == "ValidationError" and "does not exist" in message:
            raise AdminError(
                f"no CloudFormation stack {stack!r} in {region or 'this region'}"
            ) from None
        raise AdminError(f"cannot read stack {stack!r}: {code}: {message}") from None
    except BotoCoreError as exc:
        raise AdminError(f"cannot read stack {stack!r}: {exc}") from None
    if not stacks:
        raise AdminError(f"no CloudFormation stack {stack!r}")
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
