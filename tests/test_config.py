"""load_config(): flags over environment over defaults, and the secrets rules."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path

import pytest
import tornado.web

from server import logs
from server.config import ConfigError, _parser, load_config

DOCS = Path(__file__).resolve().parent.parent / "docs"

SECRET_A = "a" * 24
SECRET_B = "b" * 24


def test_defaults_are_port_8888_embedded_services_and_var_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config([], env={})
    assert config.port == 8888
    assert config.data_dir == Path("var")
    assert config.mongo_url is None and config.redis_url is None
    assert config.embedded_mongo and config.embedded_redis
    assert config.allowed_origins == ()
    # Embedded mode made its own secret, in the default data dir.
    assert (tmp_path / "var" / "cookie_secret").is_file()


def test_port_comes_from_env_and_the_flag_wins_over_env(tmp_path: Path) -> None:
    env = {"PORT": "9001", "CHAT_DATA_DIR": str(tmp_path)}
    assert load_config([], env=env).port == 9001
    assert load_config(["--port", "9002"], env=env).port == 9002
    assert load_config(["--port", "9003"], env={"CHAT_DATA_DIR": str(tmp_path)}).port == 9003


def test_non_numeric_port_env_is_a_config_error_naming_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PORT"):
        load_config([], env={"PORT": "eighty", "CHAT_DATA_DIR": str(tmp_path)})


def test_metrics_port_is_off_by_default_and_comes_from_env_or_the_flag(tmp_path: Path) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    assert load_config([], env=env).metrics_port is None
    assert load_config([], env={**env, "METRICS_PORT": "9100"}).metrics_port == 9100
    assert load_config(["--metrics-port", "9200"],
                       env={**env, "METRICS_PORT": "9100"}).metrics_port == 9200
    with pytest.raises(ConfigError, match="METRICS_PORT"):
        load_config([], env={**env, "METRICS_PORT": "prometheus"})


def test_presence_handover_is_15_s_by_default_and_refuses_what_is_not_0_to_3600(
        tmp_path: Path) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    assert load_config([], env=env).presence_handover == 15.0
    assert load_config([], env={**env, "PRESENCE_HANDOVER": "0"}).presence_handover == 0.0
    assert load_config(["--presence-handover", "2.5"],
                       env={**env, "PRESENCE_HANDOVER": "60"}).presence_handover == 2.5
    for bad in ("soon", "-1", "nan", "inf", "3601"):
        with pytest.raises(ConfigError, match="PRESENCE_HANDOVER"):
            load_config([], env={**env, "PRESENCE_HANDOVER": bad})


def test_data_dir_comes_from_env_and_the_flag_wins_over_env(tmp_path: Path) -> None:
    from_env, from_flag = tmp_path / "env", tmp_path / "flag"
    config = load_config(["--data-dir", str(from_flag)], env={"CHAT_DATA_DIR": str(from_env)})
    assert config.data_dir == from_flag
    assert (from_flag / "cookie_secret").is_file()
    assert not (from_env / "cookie_secret").exists()
    assert load_config([], env={"CHAT_DATA_DIR": str(from_env)}).data_dir == from_env


@pytest.mark.parametrize("env", [
    {"REDIS_URL": "redis://127.0.0.1:6379/0"},
    {"MONGO_URL": "mongodb://127.0.0.1:27017"},
    {"REDIS_URL": "redis://127.0.0.1:6379/0", "MONGO_URL": "mongodb://127.0.0.1:27017"},
], ids=["redis", "mongo", "both"])
def test_cookie_secret_is_required_when_a_service_url_is_set(
    tmp_path: Path, env: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="COOKIE_SECRET"):
        load_config(["--data-dir", str(tmp_path)], env=env)
    assert not (tmp_path / "cookie_secret").exists()


def test_cookie_secret_is_required_when_a_service_url_comes_from_a_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COOKIE_SECRET"):
        load_config(["--redis-url", "redis://127.0.0.1:6379/0", "--data-dir", str(tmp_path)],
                    env={})


def test_service_urls_with_a_cookie_secret_use_those_services(tmp_path: Path) -> None:
    config = load_config(["--data-dir", str(tmp_path)],
                         env={"REDIS_URL": "redis://10.0.0.1:6379/0", "COOKIE_SECRET": SECRET_A})
    assert config.redis_url == "redis://10.0.0.1:6379/0"
    assert not config.embedded_redis and config.embedded_mongo
    assert config.cookie_secret == SECRET_A
    assert not (tmp_path / "cookie_secret").exists()


def test_embedded_mode_generates_an_owner_only_secret_file_and_reuses_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_config(["--data-dir", str(data_dir)], env={})
    path = data_dir / "cookie_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first.cookie_secret
    assert len(first.cookie_secret) >= 32

    second = load_config([], env={"CHAT_DATA_DIR": str(data_dir)})
    assert second.cookie_secret == first.cookie_secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    other = load_config(["--data-dir", str(tmp_path / "other")], env={})
    assert other.cookie_secret != first.cookie_secret


def test_embedded_mode_tightens_a_secret_file_left_readable_by_others(tmp_path: Path) -> None:
    load_config(["--data-dir", str(tmp_path)], env={})
    path = tmp_path / "cookie_secret"
    path.chmod(0o644)
    load_config(["--data-dir", str(tmp_path)], env={})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_embedded_mode_uses_a_given_cookie_secret_and_writes_no_file(tmp_path: Path) -> None:
    config = load_config(["--data-dir", str(tmp_path)], env={"COOKIE_SECRET": SECRET_A})
    assert config.cookie_secret == SECRET_A
    assert not (tmp_path / "cookie_secret").exists()


def test_short_cookie_secret_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="COOKIE_SECRET"):
        load_config(["--data-dir", str(tmp_path)], env={"COOKIE_SECRET": "short"})


def test_versioned_cookie_secrets_as_documented_sign_with_the_highest_version(
    tmp_path: Path
) -> None:
    """`run.py --help`: several secrets as 'v1:secret,v2:secret'."""
    config = load_config(["--data-dir", str(tmp_path)],
                         env={"COOKIE_SECRET": f"v1:{SECRET_A},v2:{SECRET_B}"})
    assert dict(config.cookie_secrets) == {1: SECRET_A, 2: SECRET_B}
    assert config.cookie_secret == SECRET_B


def test_versioned_cookie_secrets_with_bare_numbers(tmp_path: Path) -> None:
    config = load_config(["--data-dir", str(tmp_path)],
                         env={"COOKIE_SECRET": f"2:{SECRET_B}, 1:{SECRET_A}"})
    assert dict(config.cookie_secrets) == {1: SECRET_A, 2: SECRET_B}
    assert config.cookie_secret == SECRET_B


def test_rotated_secrets_still_accept_cookies_signed_with_the_old_one(tmp_path: Path) -> None:
    old = load_config(["--data-dir", str(tmp_path)], env={"COOKIE_SECRET": f"1:{SECRET_A}"})
    new = load_config(["--data-dir", str(tmp_path)],
                      env={"COOKIE_SECRET": f"1:{SECRET_A},2:{SECRET_B}"})
    signed = tornado.web.create_signed_value(dict(old.cookie_secrets), "session", "sid",
                                             key_version=max(old.cookie_secrets))
    assert tornado.web.decode_signed_value(dict(new.cookie_secrets), "session",
                                           signed) == b"sid"


@pytest.mark.parametrize("raw", ["1:", f"x:{SECRET_A},2:{SECRET_B}", f"1:{SECRET_A},2:short"])
def test_malformed_versioned_cookie_secrets_are_config_errors(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError, match="COOKIE_SECRET"):
        load_config(["--data-dir", str(tmp_path)], env={"COOKIE_SECRET": raw})


def test_allowed_origins_are_parsed_and_normalized(tmp_path: Path) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path),
           "ALLOWED_ORIGINS": " https://Chat.Example.com/ ,http://localhost:3000,,"}
    config = load_config([], env=env)
    assert config.allowed_origins == ("https://chat.example.com", "http://localhost:3000")

    config = load_config(["--allowed-origins", "https://other.example"], env=env)
    assert config.allowed_origins == ("https://other.example",)


@pytest.mark.parametrize("raw", ["*", "https://ok.example,*", "chat.example.com"])
def test_allowed_origins_rejects_wildcards_and_non_origins(tmp_path: Path, raw: str) -> None:
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        load_config([], env={"CHAT_DATA_DIR": str(tmp_path), "ALLOWED_ORIGINS": raw})
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        load_config(["--allowed-origins", raw, "--data-dir", str(tmp_path)], env={})


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(["--data-dir", str(tmp_path)], env={})
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]


def test_repr_shows_no_secret_and_no_password_in_a_url(tmp_path: Path) -> None:
    env = {"COOKIE_SECRET": SECRET_A, "STATUS_TOKEN": "status-token-secret",
           "MONGO_URL": "mongodb://chat:mongo-pass@db.internal/",
           "REDIS_URL": "redis://:redis-pass@redis.internal:6379/0"}
    shown = repr(load_config(["--data-dir", str(tmp_path)], env=env))
    for secret in (SECRET_A, "status-token-secret", "mongo-pass", "redis-pass"):
        assert secret not in shown
    assert "data_dir" in shown


def test_quotas_default_to_50_rooms_20_bots_and_20_tokens(tmp_path: Path) -> None:
    quotas = load_config(["--data-dir", str(tmp_path)], env={}).quotas
    assert (quotas.rooms_per_user, quotas.bots_per_user, quotas.tokens_per_bot) == (50, 20, 20)


def test_quotas_come_from_env_and_flags_win(tmp_path: Path) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path), "CHAT_ROOMS_PER_USER": "7",
           "CHAT_BOTS_PER_USER": "3", "CHAT_TOKENS_PER_BOT": "2"}
    quotas = load_config([], env=env).quotas
    assert (quotas.rooms_per_user, quotas.bots_per_user, quotas.tokens_per_bot) == (7, 3, 2)
    quotas = load_config(["--rooms-per-user", "9", "--bots-per-user", "4",
                          "--tokens-per-bot", "5"], env=env).quotas
    assert (quotas.rooms_per_user, quotas.bots_per_user, quotas.tokens_per_bot) == (9, 4, 5)


@pytest.mark.parametrize("name", ["CHAT_ROOMS_PER_USER", "CHAT_BOTS_PER_USER",
                                  "CHAT_TOKENS_PER_BOT"])
@pytest.mark.parametrize("raw", ["0", "-1", "many"])
def test_a_quota_below_1_or_not_a_number_is_a_config_error_naming_it(
        tmp_path: Path, name: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_config([], env={"CHAT_DATA_DIR": str(tmp_path), name: raw})


def test_config_repr_shows_no_secrets(tmp_path: Path) -> None:
    env = {"COOKIE_SECRET": f"v1:{SECRET_A},v2:{SECRET_B}",
           "STATUS_TOKEN": "status-token-0123456789",
           "MONGO_URL": "mongodb://chat:m0ngo-pa55@db1.example:27017,db2.example/chat"
                        "?authSource=admin&replicaSet=rs0",
           "REDIS_URL": "redis://:r3dis-pa55@cache.example:6379/0?password=r3dis-pa55",
           "CHAT_DATA_DIR": str(tmp_path)}
    config = load_config([], env=env)
    for text in (repr(config), str(config), f"{config!r}"):
        for secret in (SECRET_A, SECRET_B, "status-token-0123456789", "m0ngo-pa55",
                       "r3dis-pa55"):
            assert secret not in text, text
        # Still useful for debugging: where the services are and the other settings.
        for shown in ("db1.example", "cache.example", "replicaSet=rs0", "chat:",
                      "port=8888", "message_rate=5.0"):
            assert shown in text, (shown, text)


def test_shutdown_timeout_is_10_s_by_default_and_refuses_what_is_not_0_to_3600_s(
        tmp_path: Path) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    assert load_config([], env=env).shutdown_timeout == 10.0
    assert load_config([], env={**env, "SHUTDOWN_TIMEOUT": "25"}).shutdown_timeout == 25.0
    assert load_config(["--shutdown-timeout", "2.5"],
                       env={**env, "SHUTDOWN_TIMEOUT": "25"}).shutdown_timeout == 2.5
    for bad in ("soon", "-1", "nan", "inf", "3601"):
        # Named in the message, not a traceback of float().
        with pytest.raises(ConfigError, match=r"SHUTDOWN_TIMEOUT \(--shutdown-timeout\): "
                                              r"(must be between 0 and 3600|.* not a number)"):
            load_config([], env={**env, "SHUTDOWN_TIMEOUT": bad})
        with pytest.raises(ConfigError, match="SHUTDOWN_TIMEOUT"):
            load_config(["--shutdown-timeout", bad], env=env)


def test_log_level_and_format_come_from_env_or_the_flag_in_any_case(tmp_path: Path) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    config = load_config([], env=env)
    assert (config.log_level, config.log_format) == ("info", "text")
    config = load_config([], env={**env, "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "JSON"})
    assert (config.log_level, config.log_format) == ("debug", "json")
    config = load_config(["--log-level", "warning", "--log-format", "text"],
                         env={**env, "LOG_LEVEL": "debug", "LOG_FORMAT": "json"})
    assert (config.log_level, config.log_format) == ("warning", "text")


@pytest.mark.parametrize(("name", "flag", "raw", "allowed"), [
    ("LOG_LEVEL", "--log-level", "verbose", "debug, info, warning, error"),
    ("LOG_FORMAT", "--log-format", "logfmt", "text, json"),
])
def test_an_unknown_log_level_or_format_is_a_config_error_naming_it_and_the_choices(
        tmp_path: Path, name: str, flag: str, raw: str, allowed: str) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path)}
    for argv, environ in (([], {**env, name: raw}), ([flag, raw], env)):
        with pytest.raises(ConfigError) as refused:
            load_config(argv, env=environ)
        message = str(refused.value)
        assert name in message and flag in message and repr(raw) in message, message
        assert allowed in message, message


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "text"), ("info", "logfmt")])
def test_logging_set_up_refuses_what_it_does_not_know_instead_of_logging_otherwise(
        level: str, fmt: str) -> None:
    root = logging.getLogger()
    handlers, before = list(root.handlers), root.level
    with pytest.raises(ValueError, match=level if fmt == "text" else fmt):
        logs.configure(level, fmt)
    assert (root.handlers, root.level) == (handlers, before)  # left as it was


def test_every_flag_is_in_the_configuration_tables_with_its_variable() -> None:
    """The tables of operations.md §2 and the README list every flag of run.py with the
    variable its help names."""
    missing = []
    for doc, heading in ((DOCS / "operations.md", "## 2. Configuration"),
                         (DOCS.parent / "README.md", "## Configuration")):
        table = doc.read_text().split(heading, 1)[1].split("\n## ", 1)[0]
        rows = {m.group(1): m.group(2) for m in re.finditer(
            r"^\| `(--[a-z-]+)` \| `?([A-Z_]*)", table, re.M)}
        for action in _parser()._actions:
            flag = next((o for o in action.option_strings if o.startswith("--")), None)
            if flag is None or flag == "--help":
                continue
            env = re.search(r"env ([A-Z_]+)", action.help or "")
            if rows.get(flag) != (env.group(1) if env else None):
                missing.append((doc.name, flag, env.group(1) if env else None, rows.get(flag)))
    assert not missing, missing


def test_the_message_rate_and_burst_come_from_env_and_the_burst_is_a_whole_number(
        tmp_path: Path) -> None:
    env = {"CHAT_DATA_DIR": str(tmp_path), "CHAT_MESSAGE_RATE": "2.5", "CHAT_MESSAGE_BURST": "7"}
    limits = load_config([], env=env).limits
    assert (limits.message_rate, limits.message_burst) == (2.5, 7)
    for bad in ("0.5", "2.5", "0", "-3", "lots"):
        with pytest.raises(ConfigError, match="CHAT_MESSAGE_BURST"):
            load_config([], env={**env, "CHAT_MESSAGE_BURST": bad})
