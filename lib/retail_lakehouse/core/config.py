"""Environments (`local`, `dev`, `qa`, `prod`) read from `params/<env>.yaml`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from retail_lakehouse.core.errors import ConfigError

Env = Literal["local", "dev", "qa", "prod"]
ENVIRONMENTS: tuple[str, ...] = ("local", "dev", "qa", "prod")
LAYERS: tuple[str, ...] = ("bronze", "silver", "gold", "monitoring")

PROJECT_ROOT = Path(__file__).resolve().parents[3]


def params_dir() -> Path:
    """Folder of the per-environment parameter files (`LAKEHOUSE_PARAMS_DIR` overrides)."""
    return Path(os.environ.get("LAKEHOUSE_PARAMS_DIR", PROJECT_ROOT / "params"))


LIBRARY_DIR = Path(__file__).resolve().parent.parent


def library_files(suffixes: tuple[str, ...] = (".py",)) -> list[Path]:
    """The library's source files with these suffixes (caches left out)."""
    return [p for p in LIBRARY_DIR.rglob("*") if p.suffix in suffixes and "__pycache__" not in p.parts]


def files_stamp(files: list[Path], *extra: str) -> str:
    """A short key that changes when a file of `files` is added, removed or modified (newest mtime and
    count; cheap enough to take on every call), mixed with `extra` strings."""
    import hashlib

    newest = max((p.stat().st_mtime_ns for p in files if p.is_file()), default=0)
    return hashlib.sha1("|".join([str(newest), str(len(files)), *extra]).encode()).hexdigest()[:16]


def env_flag(name: str, default: bool = True) -> bool:
    """An on/off switch from the environment: `0`, `false`, `no`, `off` (any case) are off; `1`,
    `true`, `yes`, `on` are on; unset or empty is `default`."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    return value not in ("0", "false", "no", "off")


def lakehouse_home() -> Path:
    """Local state folder: `LAKEHOUSE_HOME`, default `.lakehouse/` in the project."""
    home = os.environ.get("LAKEHOUSE_HOME")
    return Path(home).resolve() if home else PROJECT_ROOT / ".lakehouse"


@dataclass(frozen=True)
class Settings:
    """One environment's settings.

    Attributes:
        env: environment name.
        catalog: Unity Catalog catalog (`retail_datalake`).
        schemas: layer -> schema name, e.g. ``{"gold": "prod_gold"}``.
        local: local paths (only for `local`), relative to LAKEHOUSE_HOME in the file, absolute here.
        sources: source-system settings for Databricks environments.
        databricks: workspace settings (profile, warehouse id).
        alerts: the `alerts:` section as written (destinations, routes, suppression window); validated
            by `retail_lakehouse.alerts.load_config`, which reports every problem at once.
    """

    env: str
    catalog: str
    schemas: dict[str, str]
    local: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    databricks: dict[str, Any] = field(default_factory=dict)
    alerts: dict[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.env == "local"

    def schema(self, layer: str) -> str:
        try:
            return self.schemas[layer]
        except KeyError:
            raise ConfigError(
                f"layer {layer!r} has no schema in params/{self.env}.yaml; known layers: {', '.join(self.schemas)}"
            ) from None

    def qualified(self, layer: str, table: str) -> str:
        """Three-part name of a table, e.g. ``retail_datalake.local_gold.fact_sales``."""
        return f"{self.catalog}.{self.schema(layer)}.{table}"

    @property
    def home(self) -> Path:
        return lakehouse_home()

    def local_path(self, key: str) -> Path:
        """Absolute local path for a key of the `local:` section (e.g. `warehouse`, `runs`)."""
        if not self.is_local:
            raise ConfigError(f"local path {key!r} asked for in env {self.env!r}; only `local` has local paths")
        try:
            value = self.local[key]
        except KeyError:
            raise ConfigError(f"params/{self.env}.yaml has no local.{key}") from None
        path = Path(value)
        return path if path.is_absolute() else self.home / path

    @property
    def warehouse(self) -> Path:
        return self.local_path("warehouse")

    @property
    def oltp_url(self) -> str:
        """JDBC URL of the store OLTP database (local SQLite paths resolve under LAKEHOUSE_HOME)."""
        if not self.is_local:
            return str(self.sources.get("oltp_url", ""))
        url = str(self.local.get("oltp_url", "jdbc:sqlite:sources/store_oltp.sqlite"))
        path = self.sqlite_path(url)
        return f"jdbc:sqlite://{path}" if path else url

    def sqlite_path(self, url: str | None = None) -> Path | None:
        """The SQLite file behind a `jdbc:sqlite:` URL, absolute; None for other databases."""
        url = url or str(self.local.get("oltp_url", ""))
        prefix = "jdbc:sqlite:"
        if not url.startswith(prefix):
            return None
        rest = url[len(prefix) :]
        rest = rest[2:] if rest.startswith("//") else rest
        path = Path(rest)
        return path if path.is_absolute() else self.home / path


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, with libyaml's parser when PyYAML has it (about 8x faster; the same documents).

    A malformed document is parsed again by the pure-Python loader, so errors read as before.

    Raises:
        yaml.YAMLError: the text is not valid YAML.
    """
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is None:
        return yaml.safe_load(text)
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return yaml.safe_load(text)


def current_env() -> str:
    """The environment from `LAKEHOUSE_ENV`, default `local`."""
    return os.environ.get("LAKEHOUSE_ENV", "local")


@lru_cache(maxsize=8)
def _load(env: str, directory: str) -> Settings:
    path = Path(directory) / f"{env}.yaml"
    if not path.exists():
        raise ConfigError(f"no parameter file {path}; create it from params/local.yaml")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    missing = [k for k in ("catalog", "schemas") if k not in raw]
    if missing:
        raise ConfigError(f"{path} lacks {', '.join(missing)}; see params/local.yaml for the shape")
    schemas = raw["schemas"]
    if not isinstance(schemas, dict) or not all(layer in schemas for layer in LAYERS):
        raise ConfigError(f"{path}: `schemas` must name a schema for each layer {', '.join(LAYERS)}")
    alerts = raw.get("alerts") or {}
    if not isinstance(alerts, dict):
        raise ConfigError(f"{path}: `alerts` must be a mapping (destinations, routes); see params/local.yaml")
    return Settings(
        env=env,
        catalog=str(raw["catalog"]),
        schemas={str(k): str(v) for k, v in schemas.items()},
        local=dict(raw.get("local") or {}),
        sources=dict(raw.get("sources") or {}),
        databricks=dict(raw.get("databricks") or {}),
        alerts=dict(alerts),
    )


def load_settings(env: str | None = None) -> Settings:
    """Settings of an environment (default: `LAKEHOUSE_ENV` or `local`).

    Raises:
        ConfigError: unknown environment or malformed parameter file.
    """
    env = env or current_env()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"unknown environment {env!r}; use one of {', '.join(ENVIRONMENTS)}")
    return _load(env, str(params_dir()))
