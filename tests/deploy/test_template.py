"""lambda/template.yaml: it lints clean, SAM transforms it offline, and the transformed
template has the properties the device, the function and the operator rely on.

Each property is a ``check_*`` function that returns the problems it finds. Every
check runs on the real template (no problems) and on a copy mutated to break it
(at least one problem), so none of them can pass by looking at nothing.

Offline: cfn-lint carries its schemas; the SAM translator gets a boto3 session
that only names a region (it never calls AWS) and a managed-policy map that
fails the test if it is ever needed (the template uses none).
"""

from __future__ import annotations

import copy
import gzip
import inspect
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import archive
import parsing
import pytest
import settings
from severity import severity_number

TEMPLATE = Path(__file__).resolve().parents[2] / "lambda" / "template.yaml"
REGION = "eu-west-1"
LINT_REGIONS = ["us-east-1", "eu-west-1"]
#: API Gateway's integration timeout for REST APIs, seconds.
API_GATEWAY_TIMEOUT = 29
NO_VALUE = {"Ref": "AWS::NoValue"}

Template = dict[str, Any]
Check = Callable[[Template], list[str]]


# --- loading, transforming, linting ---------------------------------------------------------


def load_source() -> Template:
    """The template as plain JSON data (``!Ref`` → ``{"Ref": ...}``)."""
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE))))


def _no_managed_policies() -> dict[str, str]:
    raise AssertionError(
        "the template names a managed policy by name; the translator would ask IAM"
    )


def sam_transform(source: Template) -> Template:
    """What CloudFormation deploys. ``CodeUri: .`` becomes an S3 location first, as
    ``sam package`` does; the translator itself only takes S3."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = copy.deepcopy(source)
    for resource in template["Resources"].values():
        if resource.get("Type") == "AWS::Serverless::Function":
            assert resource["Properties"]["CodeUri"] == "."
            resource["Properties"]["CodeUri"] = "s3://omprog-artifacts/ingest.zip"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=REGION))
    return translator.translate(
        template, parameter_values={}, get_managed_policy_map=_no_managed_policies
    )


def lint(text: str) -> list[str]:
    """cfn-lint findings (errors, warnings and informational) as readable lines."""
    from cfnlint.api import lint as cfn_lint
    from cfnlint.config import ManualArgs

    config = ManualArgs(regions=LINT_REGIONS, include_checks=["I"])
    return [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in cfn_lint(text, config=config)]


@pytest.fixture(scope="module")
def source() -> Template:
    return load_source()


@pytest.fixture(scope="module")
def transformed(source: Template) -> Template:
    return sam_transform(source)


@pytest.fixture
def mutable(transformed: Template) -> Template:
    """A copy of the transformed template that a test may break."""
    return copy.deepcopy(transformed)


# --- helpers over a template ----------------------------------------------------------------


def resources(t: Template, kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in t.get("Resources", {}).items() if v.get("Type") == kind}


def props(t: Template, name: str) -> dict[str, Any]:
    return t["Resources"][name].get("Properties", {})


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(document: dict[str, Any]) -> list[tuple[dict[str, Any], str | None]]:
    """A policy's statements with the condition each depends on (``Fn::If`` unwrapped)."""
    found: list[tuple[dict[str, Any], str | None]] = []
    for item in as_list(document.get("Statement", [])):
        if isinstance(item, dict) and set(item) == {"Fn::If"}:
            condition, yes, no = item["Fn::If"]
            found.append((yes, condition))
            if no != NO_VALUE:
                found.append((no, f"!{condition}"))
        else:
            found.append((item, None))
    return found


def attached_policies(t: Template, role: str) -> list[str]:
    """Stand-alone policies that attach themselves to ``role``."""
    kinds = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy")
    return [
        name
        for kind in kinds
        for name, r in resources(t, kind).items()
        if mentions(r.get("Properties", {}).get("Roles"), role)
        or mentions(r.get("Properties", {}).get("RoleName"), role)
    ]


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def mentions(node: Any, name: str) -> bool:
    """Does ``node`` refer to ``name`` (a parameter or resource) by Ref, GetAtt or Sub?"""
    for item in walk(node):
        if not isinstance(item, dict):
            continue
        if item.get("Ref") == name:
            return True
        getatt = item.get("Fn::GetAtt")
        if isinstance(getatt, list) and getatt[:1] == [name]:
            return True
        if isinstance(getatt, str) and getatt.split(".")[0] == name:
            return True
        sub = item.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) else sub
        if isinstance(text, str) and re.search(r"\$\{" + re.escape(name) + r"[}.]", text):
            return True
    return False


def execute_api_arn() -> dict[str, str]:
    """POST /logs on the template's API and stage, as IAM and Lambda name it."""
    account = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}"
    return {"Fn::Sub": account + ":${Api}/${StageName}/POST/logs"}


def expected_columns() -> list[tuple[str, str]]:
    """The archive record, in the order archive.py writes it, with its Glue types."""
    tail = json.loads("{" + archive.record_tail("d", "b")[1:])
    names = [*parsing.RECORD_FIELDS, *tail, *parsing.OPTIONAL_FIELDS]
    types = {"severity_num": "int", "ts_assumed_utc": "boolean"}
    return [(name, types.get(name, "string")) for name in names]


# --- the checks -----------------------------------------------------------------------------


def check_api(t: Template) -> list[str]:
    """POST /logs: AWS_IAM, Lambda proxy to the ingest function, gzip as binary."""
    problems = []
    methods = resources(t, "AWS::ApiGateway::Method")
    if list(methods) != ["PostLogsMethod"]:
        return [f"expected one method PostLogsMethod, found {sorted(methods)}"]
    method = props(t, "PostLogsMethod")
    if method.get("HttpMethod") != "POST":
        problems.append(f"method is {method.get('HttpMethod')}")
    if method.get("AuthorizationType") != "AWS_IAM":
        problems.append(f"AuthorizationType is {method.get('AuthorizationType')!r}, not AWS_IAM")
    if method.get("ApiKeyRequired") or method.get("AuthorizerId"):
        problems.append("the method has an API key or another authorizer")
    if method.get("ResourceId") != {"Ref": "LogsResource"}:
        problems.append("the method is not on LogsResource")
    resource = props(t, "LogsResource")
    if resource.get("PathPart") != "logs" or resource.get("ParentId") != {
        "Fn::GetAtt": ["Api", "RootResourceId"]
    }:
        problems.append("LogsResource is not /logs")
    integration = method.get("Integration", {})
    if integration.get("Type") != "AWS_PROXY" or integration.get("IntegrationHttpMethod") != "POST":
        problems.append(f"integration is {integration.get('Type')}, not AWS_PROXY POST")
    uri = "arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
    if integration.get("Uri") != {"Fn::Sub": uri + "${IngestFunction.Arn}/invocations"}:
        problems.append(f"integration URI is {integration.get('Uri')}")
    if "Credentials" in integration:
        problems.append("the integration invokes with credentials (caller's or a role's)")
    binary = [str(m).replace("~1", "/") for m in props(t, "Api").get("BinaryMediaTypes", [])]
    if "application/gzip" not in binary:
        problems.append(f"application/gzip is not a binary media type: {binary}")
    permission = props(t, "IngestFunctionApiPermission")
    if (
        permission.get("Principal") != "apigateway.amazonaws.com"
        or permission.get("FunctionName") != {"Fn::GetAtt": ["IngestFunction", "Arn"]}
        or permission.get("SourceArn") != execute_api_arn()
    ):
        problems.append("the invoke permission is not API Gateway's for POST /logs on the stage")
    if "PostLogsMethod" not in as_list(t["Resources"]["ApiDeployment"].get("DependsOn", [])):
        problems.append("the deployment does not depend on the method")
    return problems


def check_stage(t: Template) -> list[str]:
    """Throttled, access-logged to its own log group, with the account's CloudWatch role."""
    problems = []
    stage = props(t, "ApiStage")
    if stage.get("StageName") != {"Ref": "StageName"}:
        problems.append("stage name is not the StageName parameter")
    settings_ = stage.get("MethodSettings", [])
    wanted = {
        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
    }
    if not any(all(s.get(k) == v for k, v in wanted.items()) for s in settings_):
        problems.append("no method setting throttles with the parameters")
    if any(s.get("DataTraceEnabled") for s in settings_):
        problems.append("data trace would log request bodies")
    access = stage.get("AccessLogSetting", {})
    if not mentions(access.get("DestinationArn"), "ApiAccessLogGroup"):
        problems.append("access logs do not go to ApiAccessLogGroup")
    try:
        fields = json.loads(access.get("Format", ""))
    except ValueError:
        fields = {}
        problems.append("the access log format is not JSON")
    expected = {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "caller": "$context.identity.caller",
        "user": "$context.identity.user",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "resourcePath": "$context.resourcePath",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
    }
    if fields != expected and fields:
        problems.append(f"access log fields differ: {sorted(set(fields) ^ set(expected))}")
    group = props(t, "ApiAccessLogGroup")
    if group.get("RetentionInDays") != {"Ref": "ApiLogRetentionDays"}:
        problems.append("the access log group has no retention")
    account = t["Resources"].get("ApiGatewayAccount", {})
    if account.get("Condition") != "CreateAccountRole" or account.get("Properties", {}).get(
        "CloudWatchRoleArn"
    ) != {"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}:
        problems.append("AWS::ApiGateway::Account is missing or not behind CreateAccountRole")
    role = t["Resources"].get("ApiGatewayCloudWatchRole", {})
    managed = role.get("Properties", {}).get("ManagedPolicyArns", [])
    if role.get("Condition") != "CreateAccountRole" or not any(
        "AmazonAPIGatewayPushToCloudWatchLogs" in json.dumps(m) for m in managed
    ):
        problems.append("the CloudWatch role lacks AmazonAPIGatewayPushToCloudWatchLogs")
    if (
        t.get("Conditions", {}).get("CreateAccountRole")
        != {"Fn::Equals": [{"Ref": "CreateApiGatewayAccount"}, "true"]}
        or t["Parameters"].get("CreateApiGatewayAccount", {}).get("Default") != "true"
    ):
        problems.append("creating the account role is not a parameter defaulting to true")
    ready = t["Resources"].get("ApiAccountReady", {})
    if "ApiAccountReady" not in as_list(t["Resources"]["ApiStage"].get("DependsOn", [])) or not (
        mentions(ready.get("Metadata"), "ApiGatewayAccount")
    ):
        problems.append("the stage does not wait for the account's CloudWatch role")
    return problems


def check_identity_pool(t: Template) -> list[str]:
    """Authenticated user-pool identities only, enhanced flow, one role."""
    problems = []
    pool = props(t, "IdentityPool")
    if pool.get("AllowUnauthenticatedIdentities") is not False:
        problems.append("unauthenticated identities are allowed")
    if pool.get("AllowClassicFlow") is not False:
        problems.append("the classic (basic) flow is allowed")
    providers = [
        {
            "ClientId": {"Ref": "UserPoolClient"},
            "ProviderName": {"Fn::GetAtt": ["UserPool", "ProviderName"]},
            "ServerSideTokenCheck": True,
        }
    ]
    if pool.get("CognitoIdentityProviders") != providers:
        problems.append(f"identity providers are {pool.get('CognitoIdentityProviders')}")
    for other in ("SupportedLoginProviders", "OpenIdConnectProviderARNs", "SamlProviderARNs"):
        if pool.get(other):
            problems.append(f"the identity pool also trusts {other}")
    attachment = props(t, "IdentityPoolRoles")
    if attachment.get("IdentityPoolId") != {"Ref": "IdentityPool"}:
        problems.append("the role attachment is for another pool")
    if attachment.get("Roles") != {"authenticated": {"Fn::GetAtt": ["DeviceRole", "Arn"]}}:
        problems.append(f"attached roles are {attachment.get('Roles')}, not authenticated only")
    if attachment.get("RoleMappings"):
        problems.append("role mappings could pick another role")
    return problems


def check_device_role(t: Template) -> list[str]:
    """Assumable by this identity pool's authenticated identities; may POST /logs only."""
    problems = []
    role = props(t, "DeviceRole")
    trust = statements(role.get("AssumeRolePolicyDocument", {}))
    if len(trust) != 1:
        return [f"{len(trust)} trust statements, expected 1"]
    stmt = trust[0][0]
    condition = {
        "StringEquals": {"cognito-identity.amazonaws.com:aud": {"Ref": "IdentityPool"}},
        "ForAnyValue:StringLike": {"cognito-identity.amazonaws.com:amr": "authenticated"},
    }
    if stmt.get("Effect") != "Allow" or stmt.get("Principal") != {
        "Federated": "cognito-identity.amazonaws.com"
    }:
        problems.append(f"trust principal is {stmt.get('Principal')}")
    if set(as_list(stmt.get("Action"))) != {"sts:AssumeRoleWithWebIdentity", "sts:TagSession"}:
        problems.append(f"trust actions are {stmt.get('Action')}")
    if stmt.get("Condition") != condition:
        problems.append(f"trust condition is {stmt.get('Condition')}")
    if role.get("ManagedPolicyArns") or attached_policies(t, "DeviceRole"):
        problems.append("the device role has further policies")
    policies = role.get("Policies", [])
    granted = [s for p in policies for s, _ in statements(p.get("PolicyDocument", {}))]
    if len(granted) != 1:
        return [*problems, f"{len(granted)} permission statements, expected 1"]
    (grant,) = granted
    if grant.get("Effect") != "Allow" or set(grant) - {"Sid", "Effect", "Action", "Resource"}:
        problems.append(f"the statement is not a plain Allow: {sorted(grant)}")
    if as_list(grant.get("Action")) != ["execute-api:Invoke"]:
        problems.append(f"device actions are {grant.get('Action')}")
    if as_list(grant.get("Resource")) != [execute_api_arn()]:
        problems.append(f"device resource is {grant.get('Resource')}")
    return problems


STATE_TABLE_ARN = {"Fn::GetAtt": ["StateTable", "Arn"]}

#: Every action the function's role grants, with its one resource and its condition.
FUNCTION_GRANTS = {
    "logs:CreateLogStream": ({"Fn::GetAtt": ["IngestFunctionLogGroup", "Arn"]}, None),
    "logs:PutLogEvents": ({"Fn::GetAtt": ["IngestFunctionLogGroup", "Arn"]}, None),
    "s3:PutObject": ({"Fn::Sub": "${LogBucket.Arn}/${LogPrefix}/*"}, None),
    "cognito-idp:ListUsers": ({"Fn::GetAtt": ["UserPool", "Arn"]}, None),
    "secretsmanager:GetSecretValue": ({"Ref": "WebhookSecret"}, "HasWebhook"),
    # lambda/state.py: reads are GetItem, every write (also in a transaction) UpdateItem.
    "dynamodb:GetItem": (STATE_TABLE_ARN, None),
    "dynamodb:UpdateItem": (STATE_TABLE_ARN, None),
}

#: Every action the scheduled function's role grants: no S3 at all, and one Scan.
SCHEDULED_GRANTS = {
    "logs:CreateLogStream": ({"Fn::GetAtt": ["ScheduledFunctionLogGroup", "Arn"]}, None),
    "logs:PutLogEvents": ({"Fn::GetAtt": ["ScheduledFunctionLogGroup", "Arn"]}, None),
    "dynamodb:Scan": (STATE_TABLE_ARN, None),
    "dynamodb:GetItem": (STATE_TABLE_ARN, None),
    "dynamodb:UpdateItem": (STATE_TABLE_ARN, None),
    "cognito-idp:ListUsers": ({"Fn::GetAtt": ["UserPool", "Arn"]}, None),
    "secretsmanager:GetSecretValue": ({"Ref": "WebhookSecret"}, "HasWebhook"),
}


def check_function_role(t: Template) -> list[str]:
    """Exactly the function's needs, each on exactly its resource; no managed policies."""
    return role_problems(t, "IngestFunction", "IngestFunctionRole", FUNCTION_GRANTS)


def check_scheduled_role(t: Template) -> list[str]:
    """The scheduled function's own role: exactly its needs, nothing of the ingest's."""
    return role_problems(t, "ScheduledFunction", "ScheduledFunctionRole", SCHEDULED_GRANTS)


def role_problems(
    t: Template, function_name: str, role_name: str, wanted: dict[str, tuple[Any, Any]]
) -> list[str]:
    """``role_name`` is ``function_name``'s own, assumable by Lambda only, and grants
    exactly ``wanted`` (action → its one resource and condition)."""
    problems = []
    if function_name not in t["Resources"] or role_name not in t["Resources"]:
        return [f"{function_name} or {role_name} is missing"]
    function = props(t, function_name)
    if function.get("Role") != {"Fn::GetAtt": [role_name, "Arn"]}:
        problems.append(f"the function does not use {role_name}")
    role = props(t, role_name)
    trust = statements(role.get("AssumeRolePolicyDocument", {}))
    if [(s.get("Principal"), as_list(s.get("Action"))) for s, _ in trust] != [
        ({"Service": "lambda.amazonaws.com"}, ["sts:AssumeRole"])
    ]:
        problems.append("the function role is assumable by more than Lambda")
    if role.get("ManagedPolicyArns") or attached_policies(t, role_name):
        problems.append("the function role has policies beyond its own inline one")
    granted: dict[str, list[tuple[Any, str | None]]] = {}
    for policy in role.get("Policies", []):
        for stmt, condition in statements(policy.get("PolicyDocument", {})):
            if stmt.get("Effect") != "Allow" or "NotAction" in stmt or "NotResource" in stmt:
                problems.append(f"statement {stmt.get('Sid')} is not a plain Allow")
            for action in as_list(stmt.get("Action")):
                for resource in as_list(stmt.get("Resource")):
                    granted.setdefault(action, []).append((resource, condition))
    for action, grants in granted.items():
        if "*" in action:
            problems.append(f"wildcard action {action!r}")
        if any(resource == "*" for resource, _ in grants):
            problems.append(f"{action} on every resource")
    expected = {action: [grant] for action, grant in wanted.items()}
    if granted != expected:
        extra = sorted(set(granted) - set(expected))
        missing = sorted(set(expected) - set(granted))
        wrong = sorted(a for a in set(granted) & set(expected) if granted[a] != expected[a])
        problems.append(f"grants differ: extra {extra}, missing {missing}, wrong {wrong}")
    return problems


def check_bucket(t: Template) -> list[str]:
    """SSE-S3, no public access, owner-enforced, retained, TLS only, lifecycle on the prefix."""
    problems = []
    bucket = t["Resources"]["LogBucket"]
    p = bucket.get("Properties", {})
    if (bucket.get("DeletionPolicy"), bucket.get("UpdateReplacePolicy")) != ("Retain", "Retain"):
        problems.append("the bucket is not retained")
    rules = p.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    if rules != [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}
    ]:
        problems.append(f"encryption is {rules}")
    block = p.get("PublicAccessBlockConfiguration", {})
    names = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    if any(block.get(name) is not True for name in names):
        problems.append(f"public access block is {block}")
    if p.get("OwnershipControls") != {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}:
        problems.append("object ownership is not BucketOwnerEnforced")
    lifecycle = p.get("LifecycleConfiguration", {}).get("Rules", [])
    archive_rules = [r for r in lifecycle if r.get("Prefix") == {"Fn::Sub": "${LogPrefix}/"}]
    if len(archive_rules) != 1 or archive_rules[0].get("ExpirationInDays") != {
        "Ref": "ExpirationDays"
    }:
        problems.append("no expiration rule on the log prefix")
    elif archive_rules[0].get("Transitions", {}).get("Fn::If", [None])[0] != "HasTransition":
        problems.append("the transition is not behind HasTransition")
    if not any(
        r.get("AbortIncompleteMultipartUpload") == {"DaysAfterInitiation": 1}
        and r.get("Status") == "Enabled"
        for r in lifecycle
    ):
        problems.append("incomplete multipart uploads are not aborted after a day")
    deny_tls = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [{"Fn::GetAtt": ["LogBucket", "Arn"]}, {"Fn::Sub": "${LogBucket.Arn}/*"}],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    bucket_statements = [
        {key: value for key, value in stmt.items() if key != "Sid"}
        for policy in resources(t, "AWS::S3::BucketPolicy").values()
        if policy["Properties"].get("Bucket") == {"Ref": "LogBucket"}
        for stmt, _ in statements(policy["Properties"].get("PolicyDocument", {}))
    ]
    if deny_tls not in bucket_statements:
        problems.append("no statement denies non-TLS access to the bucket and its objects")
    if any(stmt.get("Effect") == "Allow" for stmt in bucket_statements):
        problems.append("the bucket policy allows something")
    return problems


def check_webhook(t: Template) -> list[str]:
    """The URL is a NoEcho parameter that only the secret ever sees."""
    problems = []
    param = t["Parameters"].get("SlackWebhookUrl", {})
    if param.get("NoEcho") is not True or param.get("Default") != "":
        problems.append("SlackWebhookUrl is not NoEcho with an empty default")
    if t.get("Conditions", {}).get("HasWebhook") != {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SlackWebhookUrl"}, ""]}]
    }:
        problems.append("HasWebhook is not 'SlackWebhookUrl is not empty'")
    users = [name for name, r in t["Resources"].items() if mentions(r, "SlackWebhookUrl")]
    if users != ["WebhookSecret"]:
        problems.append(f"SlackWebhookUrl is used by {users}, not only WebhookSecret")
    secret = t["Resources"].get("WebhookSecret", {})
    if (
        secret.get("Type") != "AWS::SecretsManager::Secret"
        or secret.get("Condition") != "HasWebhook"
        or secret.get("Properties", {}).get("SecretString") != {"Ref": "SlackWebhookUrl"}
    ):
        problems.append("WebhookSecret does not hold the parameter behind HasWebhook")
    if mentions(t.get("Outputs", {}), "SlackWebhookUrl"):
        problems.append("an output shows the webhook")
    for name, function in resources(t, "AWS::Lambda::Function").items():
        variables = function["Properties"].get("Environment", {}).get("Variables", {})
        if mentions(variables, "SlackWebhookUrl") or "WEBHOOK_URL" in variables:
            problems.append(f"{name}'s environment carries the webhook URL")
    for name in ("IngestFunction", "ScheduledFunction"):
        variables = props(t, name).get("Environment", {}).get("Variables", {})
        if variables.get("WEBHOOK_SECRET_ARN") != {
            "Fn::If": ["HasWebhook", {"Ref": "WebhookSecret"}, ""]
        }:
            problems.append(f"{name}'s WEBHOOK_SECRET_ARN is not the secret's ARN (or empty)")
    return problems


#: The outputs the provisioning command reads, and what each must be.
PROVISIONING_OUTPUTS = {
    "Region": {"Ref": "AWS::Region"},
    "UserPoolId": {"Ref": "UserPool"},
    "UserPoolClientId": {"Ref": "UserPoolClient"},
    "IdentityPoolId": {"Ref": "IdentityPool"},
    "EndpointUrl": {
        "Fn::Sub": "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}/${StageName}/logs"
    },
    "BucketName": {"Ref": "LogBucket"},
}
OTHER_OUTPUTS = {
    "LogPrefix",
    "GlueDatabase",
    "GlueTable",
    "FunctionName",
    "ScheduledFunctionName",
    "StateTableName",
}


def check_outputs(t: Template) -> list[str]:
    """Stable names with the right values; nothing secret."""
    problems = []
    outputs = t.get("Outputs", {})
    for name, value in PROVISIONING_OUTPUTS.items():
        if outputs.get(name, {}).get("Value") != value:
            problems.append(f"output {name} is {outputs.get(name)}")
    missing = OTHER_OUTPUTS - set(outputs)
    if missing:
        problems.append(f"outputs missing: {sorted(missing)}")
    for name, output in outputs.items():
        if mentions(output, "SlackWebhookUrl") or mentions(output, "WebhookSecret"):
            problems.append(f"output {name} refers to the webhook")
        if "ClientSecret" in json.dumps(output):
            problems.append(f"output {name} shows the app client's secret")
    return problems


def check_user_pool(t: Template) -> list[str]:
    """Username sign-in, admin-created, strong passwords; client with a secret, SRP + refresh."""
    problems = []
    pool = props(t, "UserPool")
    for alias in ("AliasAttributes", "UsernameAttributes"):
        if pool.get(alias):
            problems.append(f"{alias} is set: refresh with a client secret breaks with aliases")
    if pool.get("UsernameConfiguration") != {"CaseSensitive": False}:
        problems.append("usernames are case sensitive")
    if pool.get("AdminCreateUserConfig", {}).get("AllowAdminCreateUserOnly") is not True:
        problems.append("users can sign themselves up")
    policy = pool.get("Policies", {}).get("PasswordPolicy", {})
    if not isinstance(policy.get("MinimumLength"), int) or policy["MinimumLength"] < 20:
        problems.append(f"minimum password length is {policy.get('MinimumLength')}")
    for need in ("RequireUppercase", "RequireLowercase", "RequireNumbers", "RequireSymbols"):
        if policy.get(need) is not True:
            problems.append(f"{need} is not set")
    if pool.get("MfaConfiguration") != "OFF":
        problems.append("MFA is not off (a device cannot answer it)")
    recovery = pool.get("AccountRecoverySetting", {}).get("RecoveryMechanisms")
    if recovery != [{"Name": "admin_only", "Priority": 1}]:
        problems.append(f"account recovery is {recovery}")
    client = props(t, "UserPoolClient")
    if client.get("UserPoolId") != {"Ref": "UserPool"} or client.get("GenerateSecret") is not True:
        problems.append("the app client has no secret")
    flows = client.get("ExplicitAuthFlows", [])
    if sorted(flows) != ["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_SRP_AUTH"]:
        problems.append(f"auth flows are {flows}")
    if client.get("PreventUserExistenceErrors") != "ENABLED":
        problems.append("user existence errors are not prevented")
    if client.get("EnableTokenRevocation") is not True:
        problems.append("token revocation is off")
    lifetimes = {
        "AccessTokenValidity": "AccessTokenMinutes",
        "IdTokenValidity": "IdTokenMinutes",
        "RefreshTokenValidity": "RefreshTokenDays",
    }
    for prop, param in lifetimes.items():
        if client.get(prop) != {"Ref": param} or param not in t["Parameters"]:
            problems.append(f"{prop} is not the {param} parameter")
    units = {"AccessToken": "minutes", "IdToken": "minutes", "RefreshToken": "days"}
    if client.get("TokenValidityUnits") != units:
        problems.append(f"token validity units are {client.get('TokenValidityUnits')}")
    return problems


def check_glue(t: Template) -> list[str]:
    """The table's columns are the archive record; partitions are projected."""
    problems = []
    database = props(t, "GlueDatabase").get("DatabaseInput", {})
    if database.get("Name") != {"Ref": "GlueDatabaseName"}:
        problems.append("the database is not named by GlueDatabaseName")
    table = props(t, "GlueTable")
    if table.get("DatabaseName") != {"Ref": "GlueDatabase"}:
        problems.append("the table is not in GlueDatabase")
    table_input = table.get("TableInput", {})
    if table_input.get("Name") != "logs" or table_input.get("TableType") != "EXTERNAL_TABLE":
        problems.append("the table is not the external table logs")
    storage = table_input.get("StorageDescriptor", {})
    columns = [(c.get("Name"), c.get("Type")) for c in storage.get("Columns", [])]
    if columns != expected_columns():
        problems.append(f"columns differ from the archive record: {columns}")
    partitions = [(c.get("Name"), c.get("Type")) for c in table_input.get("PartitionKeys", [])]
    if partitions != [("dt", "string"), ("device", "string")]:
        problems.append(f"partition keys are {partitions}")
    if storage.get("Location") != {"Fn::Sub": "s3://${LogBucket}/${LogPrefix}/"}:
        problems.append(f"location is {storage.get('Location')}")
    formats = (
        storage.get("SerdeInfo", {}).get("SerializationLibrary"),
        storage.get("InputFormat"),
        storage.get("OutputFormat"),
    )
    if formats != (
        "org.openx.data.jsonserde.JsonSerDe",
        "org.apache.hadoop.mapred.TextInputFormat",
        "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
    ):
        problems.append(f"SerDe and formats are {formats}")
    parameters = table_input.get("Parameters", {})
    projection = {
        "projection.enabled": "true",
        "projection.dt.type": "date",
        "projection.dt.format": "yyyy-MM-dd",
        "projection.dt.range": {"Fn::Sub": "${ProjectionStart},NOW"},
        "projection.dt.interval": "1",
        "projection.dt.interval.unit": "DAYS",
        "projection.device.type": "injected",
        "storage.location.template": {
            "Fn::Sub": "s3://${LogBucket}/${LogPrefix}/dt=${!dt}/device=${!device}/"
        },
    }
    for key, value in projection.items():
        if parameters.get(key) != value:
            problems.append(f"table parameter {key} is {parameters.get(key)!r}")
    if t["Parameters"].get("ProjectionStart", {}).get("Default") != "2024-01-01":
        problems.append("ProjectionStart does not default to 2024-01-01")
    return problems


#: The EventBridge schedule of the scheduled function, seconds.
SCHEDULE_SECONDS = 300

#: The function's environment, exactly.
FUNCTION_ENVIRONMENT = {
    "BUCKET_NAME": {"Ref": "LogBucket"},
    "LOG_PREFIX": {"Ref": "LogPrefix"},
    "USER_POOL_ID": {"Ref": "UserPool"},
    "IDENTITY_POOL_ID": {"Ref": "IdentityPool"},
    "ALERT_MIN_SEVERITY": {"Ref": "AlertMinSeverity"},
    "REQUIRE_IDENTITY": "true",
    "WEBHOOK_SECRET_ARN": {"Fn::If": ["HasWebhook", {"Ref": "WebhookSecret"}, ""]},
    "STATE_TABLE": {"Ref": "StateTable"},
    "ALERT_COOLDOWN": {"Ref": "AlertCooldownSeconds"},
    "FLEET_THRESHOLD": {"Ref": "FleetThreshold"},
}

#: The scheduled function's environment, exactly (no bucket: it never reads the archive).
SCHEDULED_ENVIRONMENT = {
    "STATE_TABLE": {"Ref": "StateTable"},
    "ALERT_COOLDOWN": {"Ref": "AlertCooldownSeconds"},
    "SILENT_AFTER": {"Ref": "SilentAfterSeconds"},
    "FLEET_THRESHOLD": {"Ref": "FleetThreshold"},
    "ALERT_MIN_SEVERITY": {"Ref": "AlertMinSeverity"},
    "USER_POOL_ID": {"Ref": "UserPool"},
    "WEBHOOK_SECRET_ARN": {"Fn::If": ["HasWebhook", {"Ref": "WebhookSecret"}, ""]},
}


def check_function(t: Template) -> list[str]:
    """python3.13 on arm64, inside API Gateway's timeout, logging to its own group."""
    problems = []
    functions = resources(t, "AWS::Lambda::Function")
    if sorted(functions) != ["IngestFunction", "ScheduledFunction"]:
        problems.append(f"functions are {sorted(functions)}")
    f = props(t, "IngestFunction")
    wanted = {
        "Runtime": "python3.13",
        "Architectures": ["arm64"],
        "Handler": "handler.lambda_handler",
        "MemorySize": 512,
    }
    for key, value in wanted.items():
        if f.get(key) != value:
            problems.append(f"{key} is {f.get(key)!r}, not {value!r}")
    timeout = f.get("Timeout")
    if not isinstance(timeout, int) or not timeout < API_GATEWAY_TIMEOUT:
        problems.append(f"Timeout {timeout!r} is not below API Gateway's {API_GATEWAY_TIMEOUT} s")
    integration_ms = props(t, "PostLogsMethod").get("Integration", {}).get("TimeoutInMillis", 29000)
    if isinstance(timeout, int) and timeout * 1000 >= integration_ms:
        problems.append("the function may outlive the integration timeout")
    variables = f.get("Environment", {}).get("Variables", {})
    if variables != FUNCTION_ENVIRONMENT:
        problems.append(
            f"environment differs: {sorted(set(variables) ^ set(FUNCTION_ENVIRONMENT))}"
        )
    if f.get("LoggingConfig", {}).get("LogGroup") != {"Ref": "IngestFunctionLogGroup"}:
        problems.append("the function does not log to IngestFunctionLogGroup")
    group = props(t, "IngestFunctionLogGroup")
    if group.get("RetentionInDays") != {"Ref": "FunctionLogRetentionDays"}:
        problems.append("the function's log group has no retention")
    return problems


def check_scheduled_function(t: Template) -> list[str]:
    """python3.13 on arm64, its own log group, exactly its environment, and run every
    5 minutes by an EventBridge rule that only EventBridge may use to invoke it."""
    problems = []
    if "ScheduledFunction" not in t["Resources"]:
        return ["there is no ScheduledFunction"]
    f = props(t, "ScheduledFunction")
    wanted = {
        "Runtime": "python3.13",
        "Architectures": ["arm64"],
        "Handler": "scheduled.lambda_handler",
    }
    for key, value in wanted.items():
        if f.get(key) != value:
            problems.append(f"{key} is {f.get(key)!r}, not {value!r}")
    timeout = f.get("Timeout")
    if not isinstance(timeout, int) or not 30 <= timeout < SCHEDULE_SECONDS:
        problems.append(f"Timeout {timeout!r} does not fit between two runs")
    variables = f.get("Environment", {}).get("Variables", {})
    if variables != SCHEDULED_ENVIRONMENT:
        problems.append(
            f"environment differs: {sorted(set(variables) ^ set(SCHEDULED_ENVIRONMENT))}"
        )
    if f.get("LoggingConfig", {}).get("LogGroup") != {"Ref": "ScheduledFunctionLogGroup"}:
        problems.append("the function does not log to ScheduledFunctionLogGroup")
    if props(t, "ScheduledFunctionLogGroup").get("RetentionInDays") != {
        "Ref": "FunctionLogRetentionDays"
    }:
        problems.append("the scheduled function's log group has no retention")
    rules = {
        name: r["Properties"]
        for name, r in resources(t, "AWS::Events::Rule").items()
        if any(
            target.get("Arn") == {"Fn::GetAtt": ["ScheduledFunction", "Arn"]}
            for target in r.get("Properties", {}).get("Targets", [])
        )
    }
    if len(rules) != 1:
        return [*problems, f"{len(rules)} rules invoke the scheduled function, expected 1"]
    ((rule_name, rule),) = rules.items()
    if rule.get("ScheduleExpression") != "rate(5 minutes)" or rule.get("State") == "DISABLED":
        problems.append(f"the rule is {rule.get('ScheduleExpression')!r}, not rate(5 minutes)")
    permissions = [
        p["Properties"]
        for p in resources(t, "AWS::Lambda::Permission").values()
        if mentions(p.get("Properties", {}).get("FunctionName"), "ScheduledFunction")
    ]
    wanted_permission = {
        "Action": "lambda:InvokeFunction",
        "FunctionName": {"Ref": "ScheduledFunction"},
        "Principal": "events.amazonaws.com",
        "SourceArn": {"Fn::GetAtt": [rule_name, "Arn"]},
    }
    if permissions != [wanted_permission]:
        problems.append(f"invoke permissions of the scheduled function are {permissions}")
    return problems


def check_state_table(t: Template) -> list[str]:
    """On demand, point-in-time recovery, encrypted with KMS, one string key, a TTL for the
    fleet items; nothing but the two functions refers to it."""
    problems = []
    if "StateTable" not in t["Resources"]:
        return ["there is no StateTable"]
    table = t["Resources"]["StateTable"]
    p = table.get("Properties", {})
    if table.get("Type") != "AWS::DynamoDB::Table":
        problems.append("StateTable is not a DynamoDB table")
    if p.get("BillingMode") != "PAY_PER_REQUEST" or "ProvisionedThroughput" in p:
        problems.append("the table is not on demand")
    if p.get("PointInTimeRecoverySpecification") != {"PointInTimeRecoveryEnabled": True}:
        problems.append("point-in-time recovery is off")
    if p.get("SSESpecification", {}).get("SSEEnabled") is not True:
        problems.append("the table is not encrypted with KMS")
    if p.get("KeySchema") != [{"AttributeName": "pk", "KeyType": "HASH"}] or p.get(
        "AttributeDefinitions"
    ) != [{"AttributeName": "pk", "AttributeType": "S"}]:
        problems.append("the key is not the one string pk that lambda/state.py uses")
    if p.get("TimeToLiveSpecification") != {"AttributeName": "expires_at", "Enabled": True}:
        problems.append("fleet items have no TTL on expires_at")
    if table.get("DeletionPolicy") is None or table.get("UpdateReplacePolicy") is None:
        problems.append("the table's deletion policy is not stated")
    users = sorted(
        name
        for name, r in t["Resources"].items()
        if name != "StateTable" and mentions(r, "StateTable")
    )
    if users != [
        "IngestFunction",
        "IngestFunctionRole",
        "ScheduledFunction",
        "ScheduledFunctionRole",
    ]:
        problems.append(f"the table is used by {users}")
    return problems


def check_parameters(t: Template) -> list[str]:
    """Defaults that deploy as they stand, and prefixes the function accepts."""
    problems = []
    params = t.get("Parameters", {})
    undefaulted = sorted(name for name, p in params.items() if "Default" not in p)
    if undefaulted:
        problems.append(f"parameters without a default: {undefaulted}")
    defaults = {
        "StageName": "prod",
        "LogPrefix": "logs",
        "GlueDatabaseName": "omprog_forwarder",
        "AlertMinSeverity": "err",
    }
    for name, value in defaults.items():
        if params.get(name, {}).get("Default") != value:
            problems.append(f"{name} does not default to {value!r}")
    for name in ("LogPrefix", "GlueDatabaseName", "StageName"):
        pattern = params.get(name, {}).get("AllowedPattern")
        if not pattern or not re.fullmatch(pattern, str(params[name].get("Default"))):
            problems.append(f"{name} has no AllowedPattern that its default meets")
    prefix = params.get("LogPrefix", {}).get("AllowedPattern", "")
    for bad in ("/logs", "logs/", "a//b", "../up", ""):
        if prefix and re.fullmatch(prefix, bad):
            problems.append(f"LogPrefix pattern admits {bad!r}")
    if re.fullmatch(params.get("GlueDatabaseName", {}).get("AllowedPattern", ""), "Omprog-x"):
        problems.append("GlueDatabaseName admits upper case or '-'")
    severities = params.get("AlertMinSeverity", {}).get("AllowedValues", [])
    if any(severity_number(s) is None for s in severities) or not severities:
        problems.append("AlertMinSeverity admits a value the function refuses")
    # The alert policy's parameters: the function's defaults, and no value it refuses.
    policy = {
        "AlertCooldownSeconds": (
            settings.DEFAULT_ALERT_COOLDOWN,
            settings.MIN_ALERT_COOLDOWN,
            settings.MAX_ALERT_COOLDOWN,
        ),
        "SilentAfterSeconds": (settings.DEFAULT_SILENT_AFTER, settings.MIN_SILENT_AFTER, None),
        "FleetThreshold": (settings.DEFAULT_FLEET_THRESHOLD, 1, None),
    }
    for name, (default, low, high) in policy.items():
        p = params.get(name, {})
        if (p.get("Type"), p.get("Default"), p.get("MinValue")) != ("Number", default, low):
            problems.append(f"{name} is not a Number defaulting to {default}, at least {low}")
        if high is not None and p.get("MaxValue") != high:
            problems.append(f"{name} has no maximum {high}")
    return problems


CHECKS: dict[str, Check] = {
    "api": check_api,
    "stage": check_stage,
    "identity_pool": check_identity_pool,
    "device_role": check_device_role,
    "function_role": check_function_role,
    "bucket": check_bucket,
    "webhook": check_webhook,
    "outputs": check_outputs,
    "user_pool": check_user_pool,
    "glue": check_glue,
    "function": check_function,
    "parameters": check_parameters,
    "scheduled_role": check_scheduled_role,
    "scheduled_function": check_scheduled_function,
    "state_table": check_state_table,
}


# --- lint and transform ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lint_findings(transformed: Template) -> dict[str, list[str]]:
    """cfn-lint, once per module, over the SAM source and over what it transforms into
    (cfn-lint checks SAM resources against SAM's schema only; the runtime list, for one,
    is checked on the plain resources)."""
    return {
        "source": lint(TEMPLATE.read_text(encoding="utf-8")),
        "transformed": lint(json.dumps(transformed, indent=1)),
    }


def test_cfn_lint_finds_nothing_in_the_template(lint_findings: dict[str, list[str]]) -> None:
    assert lint_findings["source"] == [], "\n".join(lint_findings["source"])


def test_cfn_lint_finds_nothing_in_the_transformed_template(
    lint_findings: dict[str, list[str]],
) -> None:
    assert lint_findings["transformed"] == [], "\n".join(lint_findings["transformed"])


def test_cfn_lint_does_find_a_broken_copy(mutable: Template) -> None:
    mutable["Resources"]["IngestFunction"]["Properties"]["Runtime"] = "python3.99"
    assert any(f.startswith("E3030") for f in lint(json.dumps(mutable))), "the linter saw nothing"


def test_the_transform_leaves_plain_cloudformation(transformed: Template) -> None:
    kinds = {r["Type"] for r in transformed["Resources"].values()}
    assert "Transform" not in transformed
    assert not [k for k in kinds if k.startswith("AWS::Serverless::")]


# --- every check: clean on the template, and not blind ---------------------------------------


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_template_passes(transformed: Template, name: str) -> None:
    assert CHECKS[name](transformed) == []


def _set(path: str, value: Any) -> Callable[[Template], None]:
    """A mutation that sets ``Resources`` (or top-level) path ``a/b/c`` to ``value``
    (``DELETE`` removes it). Keys may hold dots, as Glue parameters do."""

    def mutate(t: Template) -> None:
        keys = path.split("/")
        node: Any = t if keys[0] in ("Parameters", "Outputs", "Conditions") else t["Resources"]
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        key: Any = int(keys[-1]) if isinstance(node, list) else keys[-1]
        if value is DELETE:
            del node[key]
        else:
            node[key] = value

    return mutate


DELETE = object()
FN_POLICY = "IngestFunctionRole/Properties/Policies/0/PolicyDocument/Statement"
SCHED_POLICY = "ScheduledFunctionRole/Properties/Policies/0/PolicyDocument/Statement"
RULE = "ScheduledFunctionEvery5Minutes"
TABLE = "StateTable/Properties"
DEVICE_POLICY = "DeviceRole/Properties/Policies/0/PolicyDocument/Statement"
COLUMNS = "GlueTable/Properties/TableInput/StorageDescriptor/Columns"
SSE = (
    "LogBucket/Properties/BucketEncryption/ServerSideEncryptionConfiguration/0/"
    "ServerSideEncryptionByDefault"
)
TRUST = "DeviceRole/Properties/AssumeRolePolicyDocument/Statement/0"


def _add_output(name: str, value: Any) -> Callable[[Template], None]:
    def mutate(t: Template) -> None:
        t["Outputs"][name] = {"Value": value}

    return mutate


def _append(path: str, value: Any) -> Callable[[Template], None]:
    def mutate(t: Template) -> None:
        node: Any = t["Resources"]
        for key in path.split("/"):
            node = node[int(key)] if isinstance(node, list) else node[key]
        node.append(value)

    return mutate


def _unwrap_secret_grant(t: Template) -> None:
    stmts = t["Resources"]["IngestFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    stmts["Statement"] = [s["Fn::If"][1] if "Fn::If" in s else s for s in stmts["Statement"]]


#: ``check/what breaks`` → a mutation that breaks it.
MUTATIONS: dict[str, Callable[[Template], None]] = {
    "api/auth-none": _set("PostLogsMethod/Properties/AuthorizationType", "NONE"),
    "api/auth-misspelt": _set("PostLogsMethod/Properties/AuthorizationType", "IAM"),
    "api/not-proxy": _set("PostLogsMethod/Properties/Integration/Type", "AWS"),
    "api/caller-credentials": _set(
        "PostLogsMethod/Properties/Integration/Credentials", "arn:aws:iam::*:user/*"
    ),
    "api/no-gzip-binary": _set("Api/Properties/BinaryMediaTypes", ["application~1json"]),
    "api/permission-any-route": _set(
        "IngestFunctionApiPermission/Properties/SourceArn", {"Fn::Sub": "${Api}/*"}
    ),
    "stage/no-throttling": _set("ApiStage/Properties/MethodSettings", []),
    "stage/log-fields": _set("ApiStage/Properties/AccessLogSetting/Format", '{"requestId":"x"}'),
    "stage/stage-before-account-role": _set("ApiStage/DependsOn", DELETE),
    "stage/account-role-unconditional": _set("ApiGatewayAccount/Condition", DELETE),
    "identity_pool/unauthenticated": _set(
        "IdentityPool/Properties/AllowUnauthenticatedIdentities", True
    ),
    "identity_pool/classic-flow": _set("IdentityPool/Properties/AllowClassicFlow", True),
    "identity_pool/no-token-check": _set(
        "IdentityPool/Properties/CognitoIdentityProviders/0/ServerSideTokenCheck", False
    ),
    "identity_pool/unauthenticated-role": _set(
        "IdentityPoolRoles/Properties/Roles/unauthenticated", "arn"
    ),
    "device_role/invoke-wildcard": _set(f"{DEVICE_POLICY}/0/Action", "execute-api:*"),
    "device_role/any-route": _set(f"{DEVICE_POLICY}/0/Resource", {"Fn::Sub": "${Api}/*"}),
    "device_role/second-statement": _append(
        DEVICE_POLICY, {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}
    ),
    "device_role/no-amr": _set(f"{TRUST}/Condition/ForAnyValue:StringLike", DELETE),
    "device_role/managed-policy": _set(
        "DeviceRole/Properties/ManagedPolicyArns", ["arn:aws:iam::aws:policy/x"]
    ),
    "device_role/attached-policy": _set(
        "ExtraPolicy",
        {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "DeviceRole"}]}},
    ),
    "function_role/extra-action": _append(
        FN_POLICY,
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": "${LogBucket.Arn}/*"},
        },
    ),
    "function_role/star-resource": _set(f"{FN_POLICY}/2/Resource", "*"),
    "function_role/whole-bucket": _set(
        f"{FN_POLICY}/1/Resource", {"Fn::Sub": "${LogBucket.Arn}/*"}
    ),
    "function_role/basic-execution-role": _set(
        "IngestFunctionRole/Properties/ManagedPolicyArns",
        ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"],
    ),
    "function_role/secret-grant-unconditional": _unwrap_secret_grant,
    "function_role/attached-policy": _set(
        "ExtraPolicy",
        {"Type": "AWS::IAM::Policy", "Properties": {"Roles": [{"Ref": "IngestFunctionRole"}]}},
    ),
    "bucket/public-policy": _set(
        "LogBucket/Properties/PublicAccessBlockConfiguration/BlockPublicPolicy", False
    ),
    "bucket/not-sse-s3": _set(f"{SSE}/SSEAlgorithm", "aws:kms"),
    "bucket/policy-allows": _set(
        "LogBucketPolicy/Properties/PolicyDocument/Statement/0/Effect", "Allow"
    ),
    "bucket/not-retained": _set("LogBucket/DeletionPolicy", "Delete"),
    "bucket/no-lifecycle": _set("LogBucket/Properties/LifecycleConfiguration/Rules", []),
    "webhook/echoed": _set("Parameters/SlackWebhookUrl/NoEcho", False),
    "webhook/url-in-environment": _set(
        "IngestFunction/Properties/Environment/Variables/WEBHOOK_URL", {"Ref": "SlackWebhookUrl"}
    ),
    "webhook/url-as-secret-arn": _set(
        "IngestFunction/Properties/Environment/Variables/WEBHOOK_SECRET_ARN",
        {"Ref": "SlackWebhookUrl"},
    ),
    "webhook/url-in-output": _add_output("Webhook", {"Ref": "SlackWebhookUrl"}),
    "outputs/no-endpoint": _set("Outputs/EndpointUrl", DELETE),
    "outputs/client-secret-output": _add_output(
        "ClientSecret", {"Fn::GetAtt": ["UserPoolClient", "ClientSecret"]}
    ),
    "outputs/secret-output": _add_output("WebhookArn", {"Ref": "WebhookSecret"}),
    "user_pool/alias": _set("UserPool/Properties/AliasAttributes", ["email"]),
    "user_pool/username-attr": _set("UserPool/Properties/UsernameAttributes", ["email"]),
    "user_pool/self-sign-up": _set(
        "UserPool/Properties/AdminCreateUserConfig/AllowAdminCreateUserOnly", False
    ),
    "user_pool/short-passwords": _set(
        "UserPool/Properties/Policies/PasswordPolicy/MinimumLength", 8
    ),
    "user_pool/password-flow": _append(
        "UserPoolClient/Properties/ExplicitAuthFlows", "ALLOW_USER_PASSWORD_AUTH"
    ),
    "user_pool/no-client-secret": _set("UserPoolClient/Properties/GenerateSecret", False),
    "glue/column-missing": _set(f"{COLUMNS}/16", DELETE),
    "glue/severity-num-type": _set(f"{COLUMNS}/4/Type", "string"),
    "glue/projection-device": _set(
        "GlueTable/Properties/TableInput/Parameters/projection.device.type", "enum"
    ),
    "function/timeout-30": _set("IngestFunction/Properties/Timeout", 30),
    "function/runtime": _set("IngestFunction/Properties/Runtime", "python3.12"),
    "function/x86": _set("IngestFunction/Properties/Architectures", ["x86_64"]),
    "function/identity-off": _set(
        "IngestFunction/Properties/Environment/Variables/REQUIRE_IDENTITY", "false"
    ),
    "parameters/prefix-unchecked": _set("Parameters/LogPrefix/AllowedPattern", ".*"),
    "parameters/no-default": _set("Parameters/StageName/Default", DELETE),
    "parameters/silent-after-one-window": _set("Parameters/SilentAfterSeconds/MinValue", 300),
    "parameters/cooldown-default": _set("Parameters/AlertCooldownSeconds/Default", 60),
    "parameters/fleet-threshold-zero": _set("Parameters/FleetThreshold/MinValue", 0),
    "function_role/state-scan": _append(
        FN_POLICY, {"Effect": "Allow", "Action": "dynamodb:Scan", "Resource": STATE_TABLE_ARN}
    ),
    "function_role/state-any-table": _set(
        f"{FN_POLICY}/4/Resource",
        {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"},
    ),
    "function_role/state-put-item": _set(
        f"{FN_POLICY}/4/Action", ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:PutItem"]
    ),
    "scheduled_role/archive-read": _append(
        SCHED_POLICY,
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": {"Fn::Sub": "${LogBucket.Arn}/*"},
        },
    ),
    "scheduled_role/no-scan": _set(f"{SCHED_POLICY}/1/Action", ["dynamodb:GetItem"]),
    "scheduled_role/dynamodb-star": _set(f"{SCHED_POLICY}/1/Action", "dynamodb:*"),
    "scheduled_role/any-pool": _set(f"{SCHED_POLICY}/2/Resource", "*"),
    "scheduled_role/ingest-role": _set(
        "ScheduledFunction/Properties/Role", {"Fn::GetAtt": ["IngestFunctionRole", "Arn"]}
    ),
    "scheduled_role/managed-policy": _set(
        "ScheduledFunctionRole/Properties/ManagedPolicyArns",
        ["arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"],
    ),
    "scheduled_function/x86": _set("ScheduledFunction/Properties/Architectures", ["x86_64"]),
    "scheduled_function/runtime": _set("ScheduledFunction/Properties/Runtime", "python3.12"),
    "scheduled_function/hourly": _set(f"{RULE}/Properties/ScheduleExpression", "rate(1 hour)"),
    "scheduled_function/no-rule": _set(RULE, DELETE),
    "scheduled_function/anyone-may-invoke": _set(f"{RULE}Permission/Properties/SourceArn", DELETE),
    "scheduled_function/silent-after-fixed": _set(
        "ScheduledFunction/Properties/Environment/Variables/SILENT_AFTER", "60"
    ),
    "scheduled_function/no-user-pool": _set(
        "ScheduledFunction/Properties/Environment/Variables/USER_POOL_ID", DELETE
    ),
    "state_table/provisioned": _set(f"{TABLE}/BillingMode", "PROVISIONED"),
    "state_table/no-pitr": _set(
        f"{TABLE}/PointInTimeRecoverySpecification/PointInTimeRecoveryEnabled", False
    ),
    "state_table/no-sse": _set(f"{TABLE}/SSESpecification", DELETE),
    "state_table/no-ttl": _set(f"{TABLE}/TimeToLiveSpecification", DELETE),
    "state_table/other-key": _set(f"{TABLE}/KeySchema/0/AttributeName", "device"),
    "state_table/another-user": _set(
        "ExtraPolicy",
        {
            "Type": "AWS::IAM::Policy",
            "Properties": {"PolicyDocument": {"Statement": [{"Resource": STATE_TABLE_ARN}]}},
        },
    ),
    "webhook/scheduled-url-in-environment": _set(
        "ScheduledFunction/Properties/Environment/Variables/WEBHOOK_URL",
        {"Ref": "SlackWebhookUrl"},
    ),
    "function/no-state-table": _set(
        "IngestFunction/Properties/Environment/Variables/STATE_TABLE", DELETE
    ),
    "outputs/no-state-table": _set("Outputs/StateTableName", DELETE),
}


@pytest.mark.parametrize("case", list(MUTATIONS))
def test_each_check_sees_its_property_broken(mutable: Template, case: str) -> None:
    MUTATIONS[case](mutable)
    assert CHECKS[case.split("/")[0]](mutable) != []


def test_every_check_has_a_mutation() -> None:
    assert {case.split("/")[0] for case in MUTATIONS} == set(CHECKS)


# --- contracts with the function's code -----------------------------------------------------

#: One line per format, and per optional key the parser can add.
CORPUS = [
    '{"ts":"2026-11-26T23:09:00.123456+01:00","host":"pi","facility":"daemon",'
    '"severity":"err","app":"x","pid":"12","msg":" boom","uuid":"u-1"}',
    '{"ts":"2026-11-26T23:09:00","msg":"no zone","extra":1}',
    "2024-12-30 22:50:33 host daemon.info: tag[123]: msg",
    "2026-11-26T23:09:00.123+01:00 host app[1]: msg",
    '<165>1 2026-11-26T23:09:00.003Z host app 1234 ID47 [exampleSDID@32473 iut="3"] msg',
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed",
    "not a syslog line at all",
]
GLUE_TYPES = {"string": str, "int": int, "boolean": bool}


def archived(lines: list[str]) -> list[dict[str, Any]]:
    """What the function writes to S3 for ``lines``, decoded."""
    ref = datetime(2026, 11, 26, 23, 10, tzinfo=timezone.utc)
    encoded = archive.encode_batch(lines, "pi-1", "b-1", ref, 3)
    return [json.loads(line) for line in gzip.decompress(encoded.body).splitlines()]


def test_archived_records_fit_the_table_columns(
    transformed: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = archived(CORPUS)

    def broken(*args: Any) -> Any:
        raise ValueError("a parser bug")

    monkeypatch.setattr(parsing, "_parse_json", broken)
    records += archived(['{"ts": 1}'])  # the safety net's record: parse_error
    columns = dict(expected_columns())
    seen: set[str] = set()
    for record in records:
        assert set(record) <= set(columns), record
        for key, value in record.items():
            assert value is None or type(value) is GLUE_TYPES[columns[key]], (key, value)
        seen |= set(record)
    assert seen == set(columns), "the corpus no longer covers every column"
    assert check_glue(transformed) == []


def test_every_environment_variable_is_one_the_function_reads() -> None:
    source = inspect.getsource(settings)
    names = {*FUNCTION_ENVIRONMENT, *SCHEDULED_ENVIRONMENT}
    unread = [name for name in sorted(names) if f'"{name}"' not in source]
    assert unread == []


def test_the_policy_parameters_defaults_load_as_the_functions_defaults(source: Template) -> None:
    """The template's defaults, passed as the functions get them (strings), are accepted
    and mean the same as no variable at all."""
    params = source["Parameters"]
    env = {
        "STATE_TABLE": "omprog-state",
        "ALERT_COOLDOWN": str(params["AlertCooldownSeconds"]["Default"]),
        "SILENT_AFTER": str(params["SilentAfterSeconds"]["Default"]),
        "FLEET_THRESHOLD": str(params["FleetThreshold"]["Default"]),
    }
    assert settings.load_policy(env) == settings.load_policy({"STATE_TABLE": "omprog-state"})
    low = {**env, "SILENT_AFTER": str(params["SilentAfterSeconds"]["MinValue"] - 1)}
    with pytest.raises(settings.ConfigError, match="SILENT_AFTER"):
        settings.load_policy(low)


def test_the_default_prefix_puts_keys_where_the_table_and_the_grant_look(source: Template) -> None:
    default = source["Parameters"]["LogPrefix"]["Default"]
    prefix = settings.load_settings(
        {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false", "LOG_PREFIX": default}
    ).log_prefix
    key = archive.object_key(prefix, datetime(2026, 11, 26, tzinfo=timezone.utc), "pi-1", "b-1")
    template = "s3://${LogBucket}/${LogPrefix}/dt=${!dt}/device=${!device}/"
    location = (
        template.replace("${LogBucket}", "b")
        .replace("${LogPrefix}", default)
        .replace("${!dt}", "2026-11-26")
        .replace("${!device}", "pi-1")
    )
    assert "s3://b/" + key == location + "b-1.jsonl.gz"
    assert key.startswith(f"{default}/")  # inside the s3:PutObject grant ${LogPrefix}/*


@pytest.mark.parametrize("value", ["logs", "logs/raw", "a.b=c_d-e", "x"])
def test_prefixes_the_template_admits_the_function_accepts(source: Template, value: str) -> None:
    assert re.fullmatch(source["Parameters"]["LogPrefix"]["AllowedPattern"], value)
    env = {"BUCKET_NAME": "b", "REQUIRE_IDENTITY": "false", "LOG_PREFIX": value}
    assert settings.load_settings(env).log_prefix == value + "/"
