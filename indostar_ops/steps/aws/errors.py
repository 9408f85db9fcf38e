"""The one place botocore errors become user errors: one line naming the resource and the next thing to try.

Every AWS step's check/apply/verify runs inside `aws_errors(ctx, resource)` (the
`AwsStep` base does it), so a user never sees a botocore traceback: expired or
missing credentials, a wrong region, a missing instance/volume/load balancer,
throttling, a snapshot quota and the EBS modification cooldown each get their
own message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...errors import IndostarError, StepError, TransientError, Unreachable

if TYPE_CHECKING:
    from ...context import Context

__all__ = ["aws_errors", "error_code", "translate"]

_CREDENTIALS = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
                "UnrecognizedClientException", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthFailure",
                "InvalidToken", "TokenRefreshRequired"}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnauthorizedAccess"}
_THROTTLED = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
              "SlowDown", "RequestThrottled", "RequestThrottledException"}
_NOT_FOUND = {"DBInstanceNotFound", "DBInstanceNotFoundFault", "DBSnapshotNotFound", "DBSnapshotNotFoundFault",
              "InvalidVolume.NotFound", "LoadBalancerNotFound", "ListenerNotFound", "RuleNotFound",
              "NoSuchBucket", "ResourceNotFound", "ResourceNotFoundException", "InvalidSnapshot.NotFound"}
_QUOTA = {"SnapshotQuotaExceeded", "SnapshotQuotaExceededFault", "SnapshotLimitExceeded",
          "TooManyRules", "TooManyTags", "LimitExceeded", "LimitExceededException"}
_COOLDOWN = {"IncorrectModificationState", "VolumeModificationRateExceeded"}
_STATE = {"InvalidDBInstanceState", "InvalidDBInstanceStateFault", "InvalidDBSnapshotState",
          "InvalidDBSnapshotStateFault", "IncorrectState", "IncorrectInstanceState", "PriorityInUse"}


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _where(ctx: Context | None) -> str:
    if ctx is None or ctx.env.aws is None:
        return "AWS"
    settings = ctx.env.aws
    where = f"region {settings.region}"
    if settings.profile:
        where += f", profile {settings.profile}"
    if settings.endpoint_url:
        where += f", endpoint {settings.endpoint_url}"
    return where


def translate(exc: BaseException, resource: str, ctx: Context | None = None) -> IndostarError | None:
    """The user-facing error for a botocore exception (None: not a botocore error)."""
    from botocore import exceptions as be

    where = _where(ctx)
    env = ctx.env.name if ctx is not None else "ENV"
    if isinstance(exc, be.NoCredentialsError | be.PartialCredentialsError):
        return StepError(f"{resource}: no AWS credentials found ({where})",
                         hint="log in (aws sso login / aws configure) or set aws.profile in "
                         f"inventory/{env}.yaml, then re-run")
    if isinstance(exc, be.ProfileNotFound):
        return StepError(f"{resource}: AWS profile not found: {exc}",
                         hint=f"fix aws.profile in inventory/{env}.yaml (see ~/.aws/config)")
    if isinstance(exc, be.TokenRetrievalError | be.SSOTokenLoadError | be.UnauthorizedSSOTokenError):
        return StepError(f"{resource}: the AWS SSO session has expired ({where})",
                         hint="aws sso login, then re-run")
    if isinstance(exc, be.EndpointConnectionError | be.ConnectTimeoutError):
        return Unreachable(resource, f"cannot reach the AWS endpoint ({where})",
                           hint="check the network and aws.region (a wrong region has no such endpoint)")
    if isinstance(exc, be.ReadTimeoutError):
        return TransientError(f"{resource}: AWS did not answer in time ({where})", hint="re-run")
    if not isinstance(exc, be.ClientError):
        return None
    code = error_code(exc)
    message = exc.response.get("Error", {}).get("Message", "") or code
    op = getattr(exc, "operation_name", "") or "call"
    if code in _CREDENTIALS:
        return StepError(f"{resource}: AWS credentials are expired or invalid ({code}, {where})",
                         hint="refresh them (aws sso login / new access keys), then re-run")
    if code in _DENIED:
        return StepError(f"{resource}: access denied for {op} ({where})",
                         hint=f"grant the role this permission: invoke aws.policy --env {env}")
    if code in _THROTTLED:
        return TransientError(f"{resource}: AWS is throttling {op} ({code}) even after retries",
                              hint="wait a minute and re-run; raise aws.max_attempts if it persists")
    if code in _NOT_FOUND or code.endswith(("NotFound", "NotFoundFault", ".NotFound")):
        return StepError(f"{resource}: not found in {where} ({message})",
                         hint=f"check the name in inventory/{env}.yaml and that aws.region is the right region")
    if code in _QUOTA:
        return StepError(f"{resource}: AWS quota reached ({code}: {message})",
                         hint="delete old ones (invoke rds.prune for our snapshots) or ask AWS for a higher quota")
    if code in _COOLDOWN or ("modif" in message.lower() and "6 hours" in message):
        return StepError(f"{resource}: volume is already being modified or was modified less than 6 hours ago "
                         f"({message})",
                         hint="EBS allows one modification per volume per 6 hours: wait, then re-run "
                         "(invoke volume.resize --check shows the current state)")
    if code in _STATE:
        return StepError(f"{resource}: not in a state that allows {op} ({message})",
                         hint="wait for the resource to become available, then re-run")
    if code == "DryRunOperation":  # a successful dry run is not an error; callers handle it
        return None
    return StepError(f"{resource}: AWS {op} failed: {code}: {message}", hint="fix the cause above, then re-run")


@contextmanager
def aws_errors(ctx: Context | None, resource: str) -> Iterator[None]:
    """Turn a botocore error raised inside into the matching user error (others pass through)."""
    try:
        yield
    except IndostarError:
        raise
    except Exception as exc:
        mapped = translate(exc, resource, ctx)
        if mapped is None:
            raise
        raise mapped from None


def dry_run_ok(exc: Any) -> bool:
    """EC2 answers a DryRun that would have succeeded with the error DryRunOperation."""
    return error_code(exc) == "DryRunOperation"
