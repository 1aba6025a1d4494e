"""A deployment as lambda/template.yaml makes it, on moto (server mode).

A user pool with the template's password policy, an app client with a
secret and the SRP + refresh flows, an identity pool, and a CloudFormation
stack whose outputs name them (moto cannot run the SAM template itself, so
the stack holds one stand-in resource and the outputs).
"""

from __future__ import annotations

import json
import secrets

from omprog_forwarder.admin.stack import Deployment
from support.moto_cognito import MotoCognito

REGION = "eu-west-1"
POLICY = {
    "MinimumLength": 20,
    "RequireUppercase": True,
    "RequireLowercase": True,
    "RequireNumbers": True,
    "RequireSymbols": True,
}


def make_deployment(
    moto: MotoCognito, endpoint_url: str = "https://api.invalid/prod/logs"
) -> tuple[Deployment, str]:
    """The deployment's ids and the app client's secret."""
    idp, ci = moto.client("cognito-idp"), moto.client("cognito-identity")
    pool = idp.create_user_pool(
        PoolName=f"devices-{secrets.token_hex(3)}",
        Policies={"PasswordPolicy": POLICY},
        AdminCreateUserConfig={"AllowAdminCreateUserOnly": True},
    )["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool,
        ClientName="device",
        GenerateSecret=True,
        ExplicitAuthFlows=["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]
    identity_pool = ci.create_identity_pool(
        IdentityPoolName=f"devices{secrets.token_hex(3)}",
        AllowUnauthenticatedIdentities=False,
        CognitoIdentityProviders=[
            {
                "ProviderName": f"cognito-idp.{REGION}.amazonaws.com/{pool}",
                "ClientId": client["ClientId"],
            }
        ],
    )["IdentityPoolId"]
    stack = f"omprog-{secrets.token_hex(3)}"
    outputs = {
        "Region": REGION,
        "UserPoolId": pool,
        "UserPoolClientId": client["ClientId"],
        "IdentityPoolId": identity_pool,
        "EndpointUrl": endpoint_url,
        "BucketName": "omprog-archive",
    }
    template = {
        "Resources": {
            "StandIn": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": f"/{stack}/stand-in", "Type": "String", "Value": "-"},
            }
        },
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    moto.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
    dep = Deployment(
        region=REGION,
        user_pool_id=pool,
        client_id=client["ClientId"],
        identity_pool_id=identity_pool,
        endpoint_url=endpoint_url,
        bucket="omprog-archive",
        stack=stack,
    )
    return dep, client["ClientSecret"]
