"""lambda/template.yaml, deployed onto moto: the same resources, names and settings.

moto cannot run a SAM template (no transform; Cognito, Glue and API Gateway
are skipped by its CloudFormation). This module reads the template and
creates, through the moto server's APIs, each resource the local stack
needs, with the template's own properties resolved from its parameters:

    AWS::Cognito::UserPool          create_user_pool (password policy, admin-only sign-up, ...)
    AWS::Cognito::UserPoolClient    create_user_pool_client (secret, SRP + refresh flows)
    AWS::Cognito::IdentityPool      create_identity_pool (authenticated only, this client)
    AWS::S3::Bucket                 create_bucket (+ encryption, public access block)
    AWS::SecretsManager::Secret     create_secret (the Slack webhook: the local sink's URL)
    AWS::DynamoDB::Table            create_table (keys, billing mode)

The rest (roles, API Gateway, the function itself, log groups, Glue) is
either what the devstack does in-process (the gateway verifies SigV4, the
handler runs in this process) or has no local effect; `skipped` lists them
with the reason. Then it records a CloudFormation stack on moto whose
outputs are the template's outputs, resolved (the endpoint is the local
gateway's), so `omprog-forwarder provision --stack NAME` works unchanged.
The function's environment is resolved the same way: the handler runs with
exactly the variables the template gives it.

The resolver knows the intrinsic functions the template uses (Ref, GetAtt,
Sub, If, Equals, Not, And, Or, Join, Select); an unknown one is an error
naming it, so a template change cannot silently go unemulated.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(REPO_ROOT, "lambda", "template.yaml")
FUNCTION = "IngestFunction"
SCHEDULED_FUNCTION = "ScheduledFunction"
NO_VALUE = object()

#: What each skipped resource type is, locally.
EMULATED = {
    "AWS::Serverless::Function": "runs in-process behind the local gateway",
    "AWS::Lambda::Function": "runs in-process behind the local gateway",
    "AWS::ApiGateway::RestApi": "the local gateway (devstack/gateway.py)",
    "AWS::ApiGateway::Resource": "the local gateway serves POST /STAGE/logs",
    "AWS::ApiGateway::Method": "the local gateway verifies SigV4 (AWS_IAM)",
    "AWS::ApiGateway::Deployment": "the local gateway",
    "AWS::ApiGateway::Stage": "the local gateway",
    "AWS::ApiGateway::Account": "no access logs locally",
    "AWS::Lambda::Permission": "the gateway calls the handler directly",
    "AWS::IAM::Role": "IAM is not enforced locally (moto does not evaluate policies)",
    "AWS::Cognito::IdentityPoolRoleAttachment": "the IdentityBroker issues the credentials",
    "AWS::Logs::LogGroup": "logs go to this terminal",
    "AWS::S3::BucketPolicy": "moto serves plain HTTP on loopback",
    "AWS::Glue::Database": "DuckDB reads the archive with the table's columns",
    "AWS::Glue::Table": "DuckDB reads the archive with the table's columns",
    "AWS::CloudFormation::WaitConditionHandle": "nothing to wait for",
    "AWS::Events::Rule": "the devstack runs scheduled functions itself",
    "AWS::Scheduler::Schedule": "the devstack runs scheduled functions itself",
}


class TemplateError(Exception):
    """The template uses something this emulation does not know."""


def load_template(path: str = TEMPLATE) -> dict[str, Any]:
    """The template as plain dicts, short tags (`!Ref`) in their long form."""
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(path)))


@dataclass
class Resolver:
    """Resolves intrinsic functions against parameters, pseudo parameters and resources."""

    template: dict[str, Any]
    parameters: dict[str, Any]
    pseudo: dict[str, str]
    refs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[tuple[str, str], Any] = field(default_factory=dict)

    def condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions", {})
        if name not in conditions:
            raise TemplateError(f"unknown condition {name!r}")
        return bool(self.value(conditions[name]))

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, arg),) = node.items()
            fn = _FUNCTIONS.get(key)
            if fn is not None:
                return fn(self, arg)
            if key.startswith("Fn::") or key == "Condition":
                raise TemplateError(f"intrinsic function {key} is not emulated")
        out = {}
        for key, value in node.items():
            resolved = self.value(value)
            if resolved is not NO_VALUE:
                out[key] = resolved
        return out

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise TemplateError(f"Ref {name!r}: not a parameter or an emulated resource")

    def getatt(self, name: str, attr: str) -> Any:
        if (name, attr) not in self.attrs:
            raise TemplateError(f"GetAtt {name}.{attr} is not emulated")
        return self.attrs[(name, attr)]

    def sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.value(arg[1]))

        def one(m: re.Match[str]) -> str:
            expr = m.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"  # ${!x} is a literal ${x}
            if expr in extra:
                return str(extra[expr])
            if "." in expr and not expr.startswith("AWS::"):
                return str(self.getatt(*expr.split(".", 1)))
            return str(self.ref(expr))

        return re.sub(r"\$\{([^}]+)\}", one, text)


def _if(r: Resolver, arg: list[Any]) -> Any:
    return r.value(arg[1] if r.condition(arg[0]) else arg[2])


_FUNCTIONS: dict[str, Callable[[Resolver, Any], Any]] = {
    "Ref": lambda r, a: r.ref(a),
    "Fn::GetAtt": lambda r, a: r.getatt(*(a if isinstance(a, list) else a.split(".", 1))),
    "Fn::Sub": lambda r, a: r.sub(a),
    "Fn::If": _if,
    "Fn::Equals": lambda r, a: str(r.value(a[0])) == str(r.value(a[1])),
    "Fn::Not": lambda r, a: not r.value(a[0]),
    "Fn::And": lambda r, a: all(r.value(x) for x in a),
    "Fn::Or": lambda r, a: any(r.value(x) for x in a),
    "Fn::Join": lambda r, a: str(a[0]).join(str(x) for x in r.value(a[1])),
    "Fn::Select": lambda r, a: r.value(a[1])[int(r.value(a[0]))],
    "Condition": lambda r, a: r.condition(a),
}


@dataclass(frozen=True)
class LocalFunction:
    """One function of the template: its handler, resolved environment and timeout."""

    name: str
    handler: str
    env: dict[str, str]
    timeout: float


@dataclass
class LocalDeployment:
    """What `deploy` made: the stack's outputs, the functions' environments, the ids."""

    stack: str
    region: str
    outputs: dict[str, str]
    functions: dict[str, LocalFunction]
    refs: dict[str, Any]
    created: list[str]
    skipped: dict[str, str]
    client_secret: str = ""

    @property
    def bucket(self) -> str:
        return self.outputs["BucketName"]

    @property
    def function_env(self) -> dict[str, str]:
        """The ingest function's environment (the one behind the API)."""
        return self.functions[FUNCTION].env

    @property
    def function_timeout(self) -> float:
        return self.functions[FUNCTION].timeout


def deploy(
    moto: Any,
    *,
    stack: str,
    endpoint_url: str,
    parameters: Optional[Mapping[str, Any]] = None,
    template_path: str = TEMPLATE,
) -> LocalDeployment:
    """Create the template's resources on `moto` (a devstack.aws.MotoServer)."""
    template = load_template(template_path)
    params = {
        name: spec.get("Default", "") for name, spec in template.get("Parameters", {}).items()
    }
    for name, value in (parameters or {}).items():
        if name not in params:
            raise TemplateError(f"the template has no parameter {name!r}")
        params[name] = value
    resolver = Resolver(
        template,
        params,
        {
            "AWS::Region": moto.region,
            "AWS::AccountId": "123456789012",
            "AWS::Partition": "aws",
            "AWS::StackName": stack,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{moto.region}:123456789012:stack/{stack}/x",
        },
    )
    created, skipped = [], {}
    resources = template.get("Resources", {})
    for name, spec in _in_dependency_order(resources):
        kind = spec["Type"]
        if "Condition" in spec and not resolver.condition(spec["Condition"]):
            skipped[name] = f"condition {spec['Condition']} is false"
            continue
        maker = _MAKERS.get(kind)
        if maker is None:
            if kind not in EMULATED:
                raise TemplateError(f"resource {name} of type {kind} is not emulated")
            skipped[name] = EMULATED[kind]
            resolver.refs[name] = _local_name(resolver, name, spec)
            resolver.attrs[(name, "Arn")] = (
                f"arn:aws:local:{moto.region}:123456789012:{name.lower()}"
            )
            continue
        props = resolver.value(spec.get("Properties", {}))
        maker(moto, name, props, resolver, stack)
        created.append(f"{name} ({kind})")
    functions = {}
    for name, spec in resources.items():
        if spec["Type"] in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            props = spec["Properties"]
            env = resolver.value(props.get("Environment", {}).get("Variables", {}))
            functions[name] = LocalFunction(
                name=name,
                handler=str(props.get("Handler", "")),
                env={k: str(v) for k, v in env.items()},
                timeout=float(props.get("Timeout", 3)),
            )
    outputs = {k: str(resolver.value(v["Value"])) for k, v in template.get("Outputs", {}).items()}
    outputs["EndpointUrl"] = endpoint_url  # the local gateway stands for the stage URL
    _record_stack(moto, stack, outputs)
    return LocalDeployment(
        stack=stack,
        region=moto.region,
        outputs=outputs,
        functions=functions,
        refs=dict(resolver.refs),
        created=created,
        skipped=skipped,
        client_secret=str(resolver.attrs.get(("UserPoolClient", "ClientSecret"), "")),
    )


def _local_name(resolver: Resolver, name: str, spec: dict[str, Any]) -> str:
    """What Ref of a resource that is not created locally names: its own name when the
    template gives one (a Glue database or table), else a placeholder."""
    props = spec.get("Properties", {})
    for holder in ("DatabaseInput", "TableInput"):
        if holder in props and "Name" in props[holder]:
            return str(resolver.value(props[holder]["Name"]))
    return f"local-{name.lower()}"


def _in_dependency_order(resources: dict[str, Any]) -> list[tuple[str, Any]]:
    """Resources sorted so that whatever one names (Ref, GetAtt, Sub) comes first."""
    names = set(resources)

    def deps(node: Any) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "Ref" and value in names:
                    found.add(value)
                elif key == "Fn::GetAtt":
                    target = value[0] if isinstance(value, list) else value.split(".")[0]
                    found.add(target)
                elif key == "Fn::Sub":
                    text = value if isinstance(value, str) else value[0]
                    found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                found |= deps(value)
        elif isinstance(node, list):
            for value in node:
                found |= deps(value)
        return found & names

    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise TemplateError(f"circular reference at {name}")
        visiting.add(name)
        for dep in sorted(deps(resources[name]) | set(_depends_on(resources[name]))):
            visit(dep)
        visiting.discard(name)
        order.append(name)

    for name in sorted(resources):
        visit(name)
    return [(n, resources[n]) for n in order]


def _depends_on(spec: dict[str, Any]) -> list[str]:
    value = spec.get("DependsOn", [])
    return [value] if isinstance(value, str) else list(value)


# ---------------------------------------------------------------- makers


def _user_pool(moto: Any, name: str, p: dict[str, Any], r: Resolver, stack: str) -> None:
    args = {"PoolName": p.pop("UserPoolName", f"{stack}-{name}")}
    for key in (
        "Policies",
        "UsernameConfiguration",
        "AdminCreateUserConfig",
        "MfaConfiguration",
        "AccountRecoverySetting",
        "AliasAttributes",
        "UsernameAttributes",
        "AutoVerifiedAttributes",
    ):
        if key in p:
            args[key] = p[key]
    pool = moto.client("cognito-idp").create_user_pool(**args)["UserPool"]
    r.refs[name] = pool["Id"]
    r.attrs[(name, "Arn")] = pool["Arn"]
    r.attrs[(name, "ProviderName")] = f"cognito-idp.{moto.region}.amazonaws.com/{pool['Id']}"
    r.attrs[(name, "ProviderURL")] = f"https://cognito-idp.{moto.region}.amazonaws.com/{pool['Id']}"


def _user_pool_client(moto: Any, name: str, p: dict[str, Any], r: Resolver, stack: str) -> None:
    for key in ("AccessTokenValidity", "IdTokenValidity", "RefreshTokenValidity"):
        if key in p:
            p[key] = int(p[key])
    client = moto.client("cognito-idp").create_user_pool_client(**p)["UserPoolClient"]
    r.refs[name] = client["ClientId"]
    r.attrs[(name, "ClientSecret")] = client.get("ClientSecret", "")
    r.attrs[(name, "Name")] = client.get("ClientName", "")


def _identity_pool(moto: Any, name: str, p: dict[str, Any], r: Resolver, stack: str) -> None:
    p.setdefault("IdentityPoolName", f"{stack}{name}".replace("-", "_"))
    for provider in p.get("CognitoIdentityProviders", []):
        provider["ServerSideTokenCheck"] = bool(provider.get("ServerSideTokenCheck", False))
    pool = moto.client("cognito-identity").create_identity_pool(**p)
    r.refs[name] = pool["IdentityPoolId"]
    r.attrs[(name, "Name")] = pool["IdentityPoolName"]


def _bucket(moto: Any, name: str, p: dict[str, Any], r: Resolver, stack: str) -> None:
    bucket = p.get("BucketName") or f"{stack}-{name}-{secrets.token_hex(4)}".lower()
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": moto.region})
    if "BucketEncryption" in p:
        rules = [
            {
                "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                "BucketKeyEnabled": bool(rule.get("BucketKeyEnabled", False)),
            }
            for rule in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": rules})
    if "PublicAccessBlockConfiguration" in p:
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"]
        )
    r.refs[name] = bucket
    r.attrs[(name, "Arn")] = f"arn:aws:s3:::{bucket}"


def _secret(moto: Any, name: str, p: dict[str, Any], r: Resolver, stack: str) -> None:
    # Without a Name CloudFormation makes one up from the logical id and a random suffix.
    default = f"{name}-{secrets.token_hex(6)}"
    args = {"Name": p.get("Name") or default, "SecretString": str(p["SecretString"])}
    if p.get("Description"):
        args["Description"] = p["Description"]
    arn = moto.client("secretsmanager").create_secret(**args)["ARN"]
    r.refs[name] = arn
    r.attrs[(name, "Id")] = arn


def _table(moto: Any, name: str, p: dict[str, Any], r: Resolver, stack: str) -> None:
    args = {
        # Without a TableName CloudFormation makes one up: STACK-NAME-RANDOM.
        "TableName": p.get("TableName") or f"{stack}-{name}-{secrets.token_hex(6).upper()}",
        "AttributeDefinitions": p["AttributeDefinitions"],
        "KeySchema": p["KeySchema"],
        "BillingMode": p.get("BillingMode", "PAY_PER_REQUEST"),
    }
    for key in ("GlobalSecondaryIndexes", "ProvisionedThroughput"):
        if key in p:
            args[key] = p[key]
    table = moto.client("dynamodb").create_table(**args)["TableDescription"]
    r.refs[name] = table["TableName"]
    r.attrs[(name, "Arn")] = table["TableArn"]


_MAKERS: dict[str, Callable[[Any, str, dict[str, Any], Resolver, str], None]] = {
    "AWS::Cognito::UserPool": _user_pool,
    "AWS::Cognito::UserPoolClient": _user_pool_client,
    "AWS::Cognito::IdentityPool": _identity_pool,
    "AWS::S3::Bucket": _bucket,
    "AWS::SecretsManager::Secret": _secret,
    "AWS::DynamoDB::Table": _table,
}


def _record_stack(moto: Any, stack: str, outputs: dict[str, str]) -> None:
    """A CloudFormation stack on moto holding the outputs (one stand-in resource)."""
    body = {
        "Description": "devstack: outputs of lambda/template.yaml as deployed on moto",
        "Resources": {
            "StandIn": {
                "Type": "AWS::SSM::Parameter",
                "Properties": {"Name": f"/{stack}/devstack", "Type": "String", "Value": stack},
            }
        },
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    cf = moto.client("cloudformation")
    # moto's state is per process: a stack of this name from an earlier LocalStack in the
    # same process (tests) is replaced, as a redeploy would replace its outputs.
    if any(
        s["StackName"] == stack
        for s in cf.list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    ):
        cf.delete_stack(StackName=stack)
    cf.create_stack(StackName=stack, TemplateBody=json.dumps(body))
