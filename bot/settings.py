"""One settings object, read once from the environment at start-up and passed down."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Secret(str):
    """A string that never shows its value in repr() or logs."""

    def __repr__(self) -> str:
        return "Secret('**********')" if self else "Secret('')"

    def reveal(self) -> str:
        return str.__str__(self)


def _int(env: dict[str, str], name: str, default: int) -> int:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    value = env.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, not {value!r}") from exc


@dataclass(frozen=True)
class Settings:
    policy_dir: Path = PROJECT_ROOT / "policy_text"
    data_dir: Path = PROJECT_ROOT / "var"
    model: str = "all-MiniLM-L6-v2"
    max_question_chars: int = 1000
    database_url: str = ""
    pseudonym_key: Secret = field(default_factory=lambda: Secret(""))
    retention_days: int = 90
    rate_limit_per_minute: int = 20
    slack_bot_token: Secret = field(default_factory=lambda: Secret(""))
    slack_signing_secret: Secret = field(default_factory=lambda: Secret(""))
    slack_app_token: Secret = field(default_factory=lambda: Secret(""))
    slack_api_url: str = ""
    teams_app_id: str = ""
    teams_app_password: Secret = field(default_factory=lambda: Secret(""))
    teams_tenant_id: str = ""
    teams_app_type: str = "MultiTenant"
    teams_allow_anonymous: bool = False
    host: str = "127.0.0.1"
    port: int = 3978
    public_url: str = ""
    reload_seconds: float = 3.0
    log_level: str = "INFO"
    log_format: str = "json"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'policybot.sqlite3'}"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("POLICYBOT_DATA_DIR") or PROJECT_ROOT / "var")
        return cls(
            policy_dir=Path(env.get("POLICYBOT_POLICY_DIR") or PROJECT_ROOT / "policy_text"),
            data_dir=data_dir,
            model=env.get("POLICYBOT_MODEL") or "all-MiniLM-L6-v2",
            max_question_chars=_int(env, "POLICYBOT_MAX_QUESTION_CHARS", 1000),
            database_url=env.get("DATABASE_URL", ""),
            pseudonym_key=Secret(env.get("POLICYBOT_PSEUDONYM_KEY", "")),
            retention_days=_int(env, "POLICYBOT_RETENTION_DAYS", 90),
            rate_limit_per_minute=_int(env, "POLICYBOT_RATE_LIMIT_PER_MINUTE", 20),
            slack_bot_token=Secret(env.get("SLACK_BOT_TOKEN", "")),
            slack_signing_secret=Secret(env.get("SLACK_SIGNING_SECRET", "")),
            slack_app_token=Secret(env.get("SLACK_APP_TOKEN", "")),
            slack_api_url=env.get("SLACK_API_URL", ""),
            teams_app_id=env.get("MicrosoftAppId", ""),
            teams_app_password=Secret(env.get("MicrosoftAppPassword", "")),
            teams_tenant_id=env.get("MicrosoftAppTenantId", ""),
            teams_app_type=env.get("MicrosoftAppType") or "MultiTenant",
            teams_allow_anonymous=env.get("TEAMS_ALLOW_ANONYMOUS", "") in ("1", "true", "yes"),
            host=env.get("HOST") or "127.0.0.1",
            port=_int(env, "PORT", 3978),
            public_url=env.get("POLICYBOT_PUBLIC_URL", ""),
            reload_seconds=_float(env, "POLICYBOT_RELOAD_SECONDS", 3.0),
            log_level=(env.get("POLICYBOT_LOG_LEVEL") or "INFO").upper(),
            log_format=(env.get("POLICYBOT_LOG_FORMAT") or "json").lower(),
        )
