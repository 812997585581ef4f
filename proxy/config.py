"""Settings, from (lowest to highest precedence) defaults, a TOML file,
``PROCTOR_*`` environment variables, and command-line flags."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, Mapping, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from proxy.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPENAI_PUBLIC_API = "https://api.openai.com/v1"
ANTHROPIC_PUBLIC_API = "https://api.anthropic.com/v1"


class ProxyConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    upstream: str = OPENAI_PUBLIC_API
    anthropic_upstream: str = ANTHROPIC_PUBLIC_API
    store: str = "sqlite:///proctor.db"
    # When set, replaces the client's credentials upstream. Never logged or stored.
    upstream_api_key: str | None = Field(None, repr=False)
    anthropic_api_key: str | None = Field(None, repr=False)
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(600.0, gt=0)  # between bytes; long generations stream slowly
    client_body_timeout: float = Field(60.0, gt=0)  # a client sending its request body slower than this gets a 408
    max_connections: int = Field(256, ge=1)
    session_header: str = "X-Proctor-Session"
    session_harness_headers: bool = True  # Claude Code, Codex, OpenCode, LiteLLM, Helicone, Portkey ids
    session_traceparent: bool = True  # W3C trace id, when nothing more specific applies
    session_body_fields: tuple[str, ...] = ()  # e.g. ("metadata.session_id", "user", "prompt_cache_key")
    subagent_window_s: float = Field(600.0, ge=0)  # how recent a spawning tool call must be
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    # Recent request bodies kept so that a call re-sending one's history parses only
    # what it adds (adapters/resend.py): their bytes plus their decoded events. 0: off.
    resend_cache_mb: int = Field(128, ge=0)
    # Policies
    policies: str | None = None  # a policy directory; None: the bundled library
    policy_engine: Literal["embedded", "opa"] = "embedded"
    opa_url: str = "http://127.0.0.1:8181"
    policy_query: str = "data.proctor.decision"
    policy_mode: Literal["enforce", "shadow"] = "enforce"
    shadow_rules: tuple[str, ...] = ()  # rules decided and recorded but never enforced
    fail_open: bool = False  # engine errors and timeouts deny unless this is set
    policy_timeout: float = Field(2.0, gt=0)
    # 0: the embedded engine runs on the event loop's thread; N: in N worker processes, so a
    # slow evaluation holds no other call and one past policy_timeout is ended (proxy/policy/workers.py)
    policy_workers: int = Field(0, ge=0, le=64)
    policy_reload_interval: float = Field(1.0, ge=0)  # seconds between checks for changed policy files; 0: never
    policy_window: int = Field(16, ge=0)  # events the trajectory keeps before the reply's own
    policy_text_limit: int = Field(2000, ge=0)  # characters of a text the trajectory keeps (0: all)
    policy_new_limit: int = Field(1000, ge=0)  # of one call's new events, how many `new` holds (0: all)
    deny_response: Literal["error", "message"] = "error"  # request-stage denials: 403 error or assistant text
    approval_timeout: float = Field(300.0, gt=0)  # an unanswered ask is denied after this long
    admin_token: str | None = Field(None, repr=False)  # guards /api and /ui; without it they answer on loopback only

    @field_validator("upstream", "anthropic_upstream", "opa_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = urlsplit(value)
            url.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as e:
            raise ValueError(f"{value!r} is not a URL ({e})") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host, such as https://api.openai.com/v1")
        return value


# Every setting has an environment variable: PROCTOR_ and its name in capitals
# (PROCTOR_RESEND_CACHE_MB); a list setting takes its items separated by commas.
_ENV_FIELDS = {f"PROCTOR_{name.upper()}": name for name in ProxyConfig.model_fields}
_LIST_FIELDS = frozenset(name for name, f in ProxyConfig.model_fields.items() if get_origin(f.annotation) is tuple)


def load_config(
    file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ProxyConfig:
    """Merge the sources; raise :class:`ConfigError` naming the bad setting."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if env.get("OPENAI_BASE_URL"):
        values["upstream"] = env["OPENAI_BASE_URL"]
    if env.get("ANTHROPIC_BASE_URL"):
        base = env["ANTHROPIC_BASE_URL"].rstrip("/")
        values["anthropic_upstream"] = base if base.endswith("/v1") else base + "/v1"
    file = file or env.get("PROCTOR_CONFIG")
    if file:
        try:
            with open(file, "rb") as f:
                values.update(tomllib.load(f))
        except OSError as e:
            raise ConfigError(f"cannot read config file {file}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {file} is not valid TOML: {e}") from None
    values.update({
        field: tuple(v.strip() for v in env[name].split(",") if v.strip()) if field in _LIST_FIELDS else env[name]
        for name, field in _ENV_FIELDS.items() if env.get(name)
    })
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return ProxyConfig(**values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid settings: {problems}") from None


_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0", "::", ""})


def upstream_is_self(config: ProxyConfig) -> str | None:
    """The upstream setting that points at Proctor's own address, if one does:
    ``OPENAI_BASE_URL`` is where users point their agent at Proctor, and it is also
    where Proctor looks for its upstream, so a call would go round until the
    connection pool ran dry."""
    own = {config.host.lower()} | (_LOCAL_HOSTS if config.host.lower() in _LOCAL_HOSTS else set())
    for name in ("upstream", "anthropic_upstream"):
        url = urlsplit(getattr(config, name))
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            continue
        if (url.hostname or "").lower() in own and port == config.port:
            return name
    return None

