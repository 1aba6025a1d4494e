"""A deployment as lambda/template.yaml makes it, on moto (server mode): devstack's.

`make_deployment` deploys the template onto the moto server with
devstack.template (the template's own user pool, app client, identity pool,
bucket and outputs, recorded as a CloudFormation stack), under a fresh stack
name, and returns what an operator's `--stack` lookup yields plus the app
client's secret.
"""

from __future__ import annotations

import secrets
from typing import Any

from devstack.template import deploy, load_template
from omprog_forwarder.admin.stack import Deployment

REGION = "eu-west-1"
#: The user pool's password policy, as the template declares it.
POLICY = load_template()["Resources"]["UserPool"]["Properties"]["Policies"]["PasswordPolicy"]


def make_deployment(
    moto: Any, endpoint_url: str = "https://api.invalid/prod/logs"
) -> tuple[Deployment, str]:
    """The deployment's ids and the app client's secret."""
    local = deploy(moto, stack=f"omprog-{secrets.token_hex(3)}", endpoint_url=endpoint_url)
    out = local.outputs
    dep = Deployment(
        region=out["Region"],
        user_pool_id=out["UserPoolId"],
        client_id=out["UserPoolClientId"],
        identity_pool_id=out["IdentityPoolId"],
        endpoint_url=out["EndpointUrl"],
        bucket=out["BucketName"],
        stack=local.stack,
    )
    return dep, local.client_secret
