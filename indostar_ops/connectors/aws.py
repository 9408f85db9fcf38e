"""AWS through boto3: the environment's region, profile and endpoint, standard retries, timeouts."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inventory import AwsSettings

__all__ = ["AwsConnector"]


class AwsConnector:
    def __init__(self, settings: AwsSettings) -> None:
        self.settings = settings
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
            return self._clients[service]

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
