"""Process-wide settings: flags and ``BIDFILTER_*`` environment variables, read once in the CLI
and passed down explicitly (nothing below the CLI reads the environment)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from bidfilter.artifact import DEFAULT_STORE_URI


class Settings(BaseSettings):
    """Defaults for every command; a flag given on the command line wins over the environment."""

    model_config = SettingsConfigDict(env_prefix="BIDFILTER_", extra="ignore")

    store: str = DEFAULT_STORE_URI
    s3_endpoint_url: str | None = None
    log_level: str = "INFO"
    log_json: bool = False
