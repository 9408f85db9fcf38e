"""AWS procedures (RDS snapshots, EBS resize, ALB maintenance, CloudWatch, config backup) and their base.

Every AWS step declares the API calls it may make (`aws_calls`, as `service:Operation`
in boto3's naming); `aws.policy` derives the least-privilege IAM policy from those
lists, and the tests record every call a task really makes (a botocore hook) and
check it is declared. Every step's check/apply/verify runs inside `aws_errors`, the
one place botocore errors become one-line user errors.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ...step import Step
from .errors import aws_errors

if TYPE_CHECKING:
    from ...context import Context

__all__ = ["MANAGED_BY", "TAG_ENV", "TAG_MANAGED", "AwsStep", "paginate", "tags_dict"]

S = TypeVar("S")

TAG_MANAGED = "indostar-ops:managed-by"
MANAGED_BY = "indostar-ops"
TAG_ENV = "indostar-ops:environment"


def tags_dict(tags: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or ()}


def ours(tags: Any, env: str) -> bool:
    t = tags_dict(tags)
    return t.get(TAG_MANAGED) == MANAGED_BY and t.get(TAG_ENV) == env


def our_tags(env: str, **extra: str) -> list[dict[str, str]]:
    return [{"Key": TAG_MANAGED, "Value": MANAGED_BY}, {"Key": TAG_ENV, "Value": env},
            *({"Key": k, "Value": v} for k, v in extra.items())]


def paginate(client: Any, operation: str, key: str, **params: Any) -> Iterator[Any]:
    """Every item of a paginated read (boto3's paginator where the service has one)."""
    if client.can_paginate(operation):
        for page in client.get_paginator(operation).paginate(**params):
            yield from page.get(key, ())
    else:
        yield from getattr(client, operation)(**params).get(key, ())


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapped(self: AwsStep[Any], ctx: Context, target: Any, *args: Any) -> Any:
        with aws_errors(ctx, self.resource_name(ctx, target)):
            return method(self, ctx, target, *args)

    wrapped.__aws_wrapped__ = True  # type: ignore[attr-defined]
    return wrapped


class AwsStep(Step[S]):
    """An env-scoped step on AWS resources; botocore errors are translated in one place."""

    scope = "env"
    needs: ClassVar[tuple[str, ...]] = ("aws",)
    aws_calls: ClassVar[tuple[str, ...]] = ()  # "rds:DescribeDBInstances", ... (boto3 service names)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in ("check", "apply", "verify", "targets"):
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "__aws_wrapped__", False):
                if name == "targets":
                    setattr(cls, name, _wrap_targets(method))
                else:
                    setattr(cls, name, _wrap(method))

    def resource_name(self, ctx: Context, target: Any) -> str:
        return f"{ctx.env.name}: {target}"


def _wrap_targets(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapped(self: AwsStep[Any], ctx: Context) -> Any:
        with aws_errors(ctx, f"{ctx.env.name}: {self.name}"):
            return method(self, ctx)

    wrapped.__aws_wrapped__ = True  # type: ignore[attr-defined]
    return wrapped


_ID_CLEAN = re.compile(r"[^a-z0-9]+")


def aws_id(*parts: str, limit: int = 255) -> str:
    """An identifier RDS/EC2 accept: lowercase letters, digits, single hyphens, starting with a letter."""
    text = "-".join(_ID_CLEAN.sub("-", p.lower()).strip("-") for p in parts if p)
    text = re.sub(r"-{2,}", "-", text).strip("-")
    if not text or not text[0].isalpha():
        text = "x-" + text
    return text[:limit].rstrip("-")
