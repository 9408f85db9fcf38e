"""Secret references resolve lazily (env, AWS SSM, Secrets Manager) and are masked once resolved."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from indostar_ops.errors import UsageError
from tests.support import InventoryDir


def test_aws_references_resolve_through_the_environments_aws(inventory: InventoryDir) -> None:
    """ssm: and secretsmanager: references are fetched from the environment's region on first use."""
    with mock_aws():
        boto3.client("ssm", region_name="ap-south-1").put_parameter(
            Name="/indostar/test/db", Value="ssm-Secret-123", Type="SecureString")
        boto3.client("secretsmanager", region_name="ap-south-1").create_secret(
            Name="indostar/test/redis", SecretString="sm-Secret-456")
        inventory.write("aws", {
            "tier": "staging", "aws": {"region": "ap-south-1"},
            "database": {"name": "d", "user": "u", "password": "ssm:/indostar/test/db"},
            "redis": {"password": "secretsmanager:indostar/test/redis"},
        })
        env = inventory.load("aws")
        assert env.database is not None and env.redis is not None
        assert str(env.database.password) == "ssm:/indostar/test/db"  # unresolved until asked for
        assert env.redactor.text("x ssm-Secret-123 y") == "x ssm-Secret-123 y"
        assert env.database.password is not None and env.database.password.get() == "ssm-Secret-123"
        assert env.redis.password is not None and env.redis.password.get() == "sm-Secret-456"
        assert env.redactor.text("pw=ssm-Secret-123 / sm-Secret-456") == "pw=******** / ********"


def test_a_missing_env_secret_names_the_variable(inventory: InventoryDir) -> None:
    """An unset env: reference says which variable to export."""
    inventory.write("e", {"tier": "staging", "database": {"name": "d", "user": "u", "password": "env:NOPE_PW"}})
    env = inventory.load("e")
    assert env.database is not None and env.database.password is not None
    with pytest.raises(UsageError, match="export NOPE_PW="):
        env.database.password.get()
