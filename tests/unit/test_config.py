"""Settings: every one has an environment variable, sources combine in their
documented order, and an upstream that is Proctor's own address is caught."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import ProxyConfig, load_config, upstream_is_self
from proxy.errors import ConfigError


def test_every_setting_has_an_environment_variable() -> None:
    env = {"PROCTOR_RESEND_CACHE_MB": "16", "PROCTOR_POLICY_WINDOW": "8", "PROCTOR_FAIL_OPEN": "true",
           "PROCTOR_SHADOW_RULES": "flow.untrusted_to_external, loop.repeat", "PROCTOR_MAX_BODY_BYTES": "2048"}
    config = load_config(env=env)
    assert (config.resend_cache_mb, config.policy_window, config.fail_open, config.max_body_bytes) == (16, 8, True, 2048)
    assert config.shadow_rules == ("flow.untrusted_to_external", "loop.repeat")


def test_flags_over_environment_over_file(tmp_path: Path) -> None:
    file = tmp_path / "proctor.toml"
    file.write_text('resend_cache_mb = 4\npolicy_window = 3\nport = 9000\n')
    config = load_config(file, env={"PROCTOR_POLICY_WINDOW": "5", "PROCTOR_PORT": "9001"}, overrides={"port": 9002})
    assert (config.resend_cache_mb, config.policy_window, config.port) == (4, 5, 9002)


def test_a_bad_value_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="resend_cache_mb"):
        load_config(env={"PROCTOR_RESEND_CACHE_MB": "lots"})


@pytest.mark.parametrize("upstream,looped", [
    ("http://127.0.0.1:8080/v1", "upstream"),
    ("http://localhost:8080/v1", "upstream"),
    ("http://127.0.0.1:8081/v1", None),
    ("https://api.openai.com/v1", None),
])
def test_an_upstream_at_proctors_own_address_is_caught(upstream: str, looped: str | None) -> None:
    assert upstream_is_self(ProxyConfig(upstream=upstream, port=8080)) == looped


def test_openai_base_url_pointing_at_proctor_is_caught_as_the_upstream() -> None:
    config = load_config(env={"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1", "ANTHROPIC_BASE_URL": "http://localhost:9999"})
    assert upstream_is_self(config) == "upstream"
    config = load_config(env={"ANTHROPIC_BASE_URL": "http://localhost:8080"})
    assert upstream_is_self(config) == "anthropic_upstream"


@pytest.mark.parametrize("bad", ["http://[::1", "ftp://example.com/v1", "localhost:8000", "http://127.0.0.1:99999/v1", "https:///v1"])
def test_an_upstream_that_is_not_an_http_url_is_refused_in_one_line(bad: str) -> None:
    for field in ("upstream", "anthropic_upstream", "opa_url"):
        with pytest.raises(ConfigError, match=f"{field}: .*is not"):
            load_config(overrides={field: bad})
