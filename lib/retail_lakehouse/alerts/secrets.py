"""Secret values of destinations, read at delivery time, and the redaction of every text that could
carry one (delivery details, problems, log records)."""

from __future__ import annotations

import base64
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from retail_lakehouse.alerts.config import SecretRef
from retail_lakehouse.core.config import load_settings
from retail_lakehouse.core.errors import AlertDeliveryError

MASK = "***"
_MIN_LENGTH = 6  # shorter fragments would mask ordinary words


class Redactor:
    """Replaces every secret value it has seen (and a URL secret's path and query) with ``***``."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, value: str) -> None:
        parts = {value}
        split = urlsplit(value) if "://" in value else None
        if split:
            parts |= {split.path, split.query, split.path + ("?" + split.query if split.query else "")}
        with self._lock:
            self._values |= {p for p in parts if len(p) >= _MIN_LENGTH and p.strip("/")}

    def __call__(self, text: object) -> str:
        text = str(text)
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            text = text.replace(value, MASK)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} value(s))"


# One per process: a secret seen once stays masked in every later message.
REDACT = Redactor()


class SecretReader:
    """Reads `SecretRef`s: environment variables, or (outside `local`) Databricks secrets through the
    SDK's `w.secrets.get_secret`. Every value read is registered with `REDACT`.

    Args:
        env: the environment.
        workspace: a `databricks.sdk.WorkspaceClient` (default: one from the environment's profile).
    """

    def __init__(self, env: str, workspace: Any = None) -> None:
        self.env = env
        self._workspace = workspace

    def __repr__(self) -> str:
        return f"SecretReader(env={self.env!r})"

    def read(self, destination: str, ref: SecretRef) -> str:
        """The secret's value.

        Raises:
            AlertDeliveryError: not set, or the secret scope could not be read (not retryable).
        """
        if ref.env_var:
            value = os.environ.get(ref.env_var, "")
            if not value:
                raise AlertDeliveryError(
                    destination, f"environment variable {ref.env_var} is not set; export it", retryable=False
                )
        else:
            value = self._scope_secret(destination, ref)
        REDACT.add(value)
        return value

    def _scope_secret(self, destination: str, ref: SecretRef) -> str:
        if self.env == "local":
            raise AlertDeliveryError(destination, "secret scopes are not read in env local", retryable=False)
        try:
            w = self._workspace or self._client()
            response = w.secrets.get_secret(scope=ref.scope, key=ref.key)
            return base64.b64decode(response.value or "").decode()
        except Exception as exc:
            raise AlertDeliveryError(
                destination,
                f"could not read {ref}: {type(exc).__name__}: {REDACT(exc)[:300]}",
                retryable=False,
            ) from None

    def _client(self) -> Any:
        from databricks.sdk import WorkspaceClient

        profile = load_settings(self.env).databricks.get("profile")
        self._workspace = WorkspaceClient(profile=profile) if profile else WorkspaceClient()
        return self._workspace
