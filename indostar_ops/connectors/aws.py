"""AWS through boto3: the environment's region, profile and endpoint, standard retries, timeouts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inventory import AwsSettings

__all__ = ["READ_PREFIXES", "AwsConnector", "is_read_operation"]

READ_PREFIXES = ("Describe", "List", "Get", "Head", "Lookup", "Search", "BatchGet", "Filter")


def is_read_operation(operation: str) -> bool:
    """AWS names reads by verb: DescribeDBInstances, ListTags..., GetMetricData, HeadObject."""
    return operation.startswith(READ_PREFIXES)


class AwsConnector:
    def __init__(self, settings: AwsSettings, *, read_only: bool = False) -> None:
        self.settings = settings
        self.read_only = read_only  # check mode: every client refuses anything but reads and DryRun
        self._writing = threading.local()
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._session: Any = None

    def client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                import boto3
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session(
                        profile_name=self.settings.profile, region_name=self.settings.region,
                    )
                self._clients[service] = self._session.client(
                    service,
                    endpoint_url=self.settings.endpoint_url,
                    config=Config(
                        retries={"mode": "standard", "max_attempts": self.settings.max_attempts},
                        connect_timeout=self.settings.connect_timeout,
                        read_timeout=self.settings.read_timeout,
                    ),
                )
                self._clients[service].meta.events.register("before-parameter-build.*.*", self._guard)  # sees DryRun
            return self._clients[service]

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Marks this thread's next calls as coming from the one write path (`AwsSession.call`)."""
        self._writing.active = True
        try:
            yield
        finally:
            self._writing.active = False

    def _guard(self, model: Any, params: Any, **_: Any) -> None:
        """botocore hook: only reads (and EC2 DryRun requests) unless the write path is calling.

        In check mode even the write path may send nothing but DryRun requests.
        """
        if is_read_operation(model.name) or params.get("DryRun"):
            return
        from ..errors import CheckModeViolation, StepError

        service = model.service_model.service_name
        if self.read_only:
            raise CheckModeViolation(f"AWS {service}.{model.name} refused in check mode; nothing was sent")
        if not getattr(self._writing, "active", False):
            raise StepError(f"AWS {service}.{model.name} is a write: it must go through AwsSession.call "
                            "(journaled, refused in check mode)")

    def resolve_secret(self, scheme: str, key: str) -> str:
        """Fetch `ssm:` parameters (decrypted) and `secretsmanager:` secret strings."""
        if scheme == "ssm":
            return str(self.client("ssm").get_parameter(Name=key, WithDecryption=True)["Parameter"]["Value"])
        return str(self.client("secretsmanager").get_secret_value(SecretId=key)["SecretString"])

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
