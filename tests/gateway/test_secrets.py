"""Secrets: from a private file, the environment or systemd's credentials; plain text only in a
private config file; never in a message, a log line or status.json (gateway/secrets.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config, parse_config
from gateway.errors import ConfigProblems
from gateway.keys import create_device_key
from gateway.secrets import CREDENTIALS_ENV, SecretReader
from tests.gateway.daemon_procs import start
from tests.servers.broker import TlsBroker

SECRET = "rv-Pa55-w0rd-7781"


def config(tmp_path: Path, password_line: str, mode: int = 0o600) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(f'[device]\n[mqtt]\nusername = "gw"\n{password_line}\n')
    path.chmod(mode)
    return path


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "mqtt-password"
    path.write_text(text)
    path.chmod(mode)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[str]:
    """What parsing ``path`` refuses, with this process's environment or ``env``."""
    reader = SecretReader.from_environment(path)
    if env is not None:
        reader = SecretReader(env, reader.config_mode, reader.config_path)
    with pytest.raises(ConfigProblems) as info:
        parse_config(path.read_text(), path, secrets=reader)
    return [f"{p.key}: {p.message}" for p in info.value.problems]


def test_a_password_file_gives_its_text_less_one_newline(tmp_path: Path) -> None:
    secret_file(tmp_path, SECRET + "\n\n")
    cfg = load_config(config(tmp_path, 'password_file = "mqtt-password"'))
    assert cfg.mqtt is not None and cfg.mqtt.password == SECRET + "\n"
    assert SECRET not in repr(cfg)  # the dataclass's repr leaves it out


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, SECRET, 0o640)
    path = config(tmp_path, 'password_file = "mqtt-password"')
    (found,) = problems(path)
    assert found == (
        f"mqtt.password_file: {secret} can be read by group or others (mode 0640): "
        f"chmod 600 {secret}"
    )


def test_plain_text_only_in_a_private_config_file(tmp_path: Path) -> None:
    path = config(tmp_path, f'password = "{SECRET}"', 0o644)
    (found,) = problems(path)
    assert found.startswith(f"mqtt.password: is a plain-text secret in {path}, which group")
    assert f"chmod 600 {path}, or move the secret to password_file" in found
    assert SECRET not in found
    path.chmod(0o600)
    cfg = load_config(path)
    assert cfg.mqtt is not None and cfg.mqtt.password == SECRET


def test_a_numeric_password_is_not_echoed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, "password = 12345")
    create_device_key(tmp_path / "device.key")
    assert main(["check", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert "mqtt.password: must be a string, got int (a secret: not shown)" in out
    assert "12345" not in out
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "mqtt.password" in err and "12345" not in err


def test_the_environment_and_systemd_credentials(tmp_path: Path) -> None:
    path = config(tmp_path, 'password_env = "RS_TEST_MQTT_PASSWORD"')
    cfg = parse_config(
        path.read_text(), path, secrets=SecretReader({"RS_TEST_MQTT_PASSWORD": SECRET})
    )
    assert cfg.mqtt is not None and cfg.mqtt.password == SECRET
    assert problems(path, {}) == [
        "mqtt.password_env: the environment variable RS_TEST_MQTT_PASSWORD is not set (or empty)"
    ]
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text(SECRET + "\n")
    path = config(tmp_path, 'password_credential = "mqtt-password"')
    cfg = parse_config(path.read_text(), path, secrets=SecretReader({CREDENTIALS_ENV: str(creds)}))
    assert cfg.mqtt is not None and cfg.mqtt.password == SECRET
    # Outside systemd: gateway run refuses it; gateway check only warns (it cannot see it).
    (found,) = problems(path, {})
    assert found.startswith("mqtt.password_credential: no systemd credentials here")
    assert "LoadCredential=mqtt-password:" in found
    cfg = parse_config(path.read_text(), path, secrets=SecretReader({}, checking=True))
    assert [(p.key, p.severity) for p in cfg.warnings] == [("mqtt.password_credential", "warning")]


def test_one_way_only(tmp_path: Path) -> None:
    secret_file(tmp_path, SECRET)
    path = config(tmp_path, f'password = "{SECRET}"\npassword_file = "mqtt-password"')
    (found,) = problems(path, {})
    assert found == (
        "mqtt.password_file: give the secret one way only, not both password and password_file"
    )
    assert SECRET not in found


def test_an_evm_token_comes_from_a_file_and_urls_carry_no_credentials(tmp_path: Path) -> None:
    token = tmp_path / "rpc-token"
    token.write_text(SECRET + "\n")
    token.chmod(0o600)
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[device]\n[[anchor.evm]]\nname = "besu"\nchain_id = 1337\n'
        'rpc = ["http://10.0.0.5:8545"]\ntoken_file = "rpc-token"\n'
    )
    path.chmod(0o600)
    cfg = load_config(path)
    assert cfg.anchor.evm[0].token == SECRET
    assert SECRET not in repr(cfg)
    path.write_text(path.read_text().replace("http://", f"http://gw:{SECRET}@"))
    (found,) = problems(path)
    assert found.startswith("anchor.evm[0].rpc[0]: carries a user name or password in the URL")
    assert SECRET not in found


def test_no_secret_in_the_daemons_output_or_status_with_a_refusing_broker(
    tmp_path: Path,
    mosquitto_tls: TlsBroker,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    """A wrong password from the environment: the broker refuses every login; the daemon
    says so in its log and status.json, and the password appears nowhere."""
    create_device_key(tmp_path / "device.key")
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f"""\
[device]
data_dir = "data"
[status]
listen = ""
[mqtt]
host = "{mosquitto_tls.host}"
port = {mosquitto_tls.port}
tls_ca = "{mosquitto_tls.ca}"
username = "{mosquitto_tls.username}"
password_env = "RS_TEST_MQTT_PASSWORD"
[[sensor]]
id = "node-1"
driver = "mqtt"
topic = "secrets/node-1"
"""
    )
    p = start(cfg, procs, env={"RS_TEST_MQTT_PASSWORD": SECRET})
    status = tmp_path / "data" / "status.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if status.exists() and "refused the login" in status.read_text(errors="replace"):
            break
        assert p.poll() is None, (tmp_path / "gateway.log").read_text()
        time.sleep(0.2)
    p.terminate()
    p.wait(timeout=20)
    log = (tmp_path / "gateway.log").read_text(errors="replace")
    shown = status.read_text(errors="replace")
    assert "refused the login" in shown, shown
    assert "refused the login" in log, log
    for text in (log, shown):
        assert SECRET not in text
    for f in (tmp_path / "data").iterdir():
        if f.is_file() and f.suffix != ".sqlite":
            assert SECRET.encode() not in f.read_bytes(), f


def test_a_client_key_others_can_read_is_a_warning(
    tmp_path: Path, mosquitto_tls: TlsBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = mosquitto_tls.client_cert
    open_key = tmp_path / "client.key"
    open_key.write_bytes(key.read_bytes())
    open_key.chmod(0o644)
    create_device_key(tmp_path / "device.key")
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[device]\n[mqtt]\ntls_ca = "{mosquitto_tls.ca}"\ntls_cert = "{cert}"\n'
        f'tls_key = "{open_key}"\n'
    )
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        f"{path}:5: warning: mqtt.tls_key: the client's private key {open_key} can be read" in out
    )
    open_key.chmod(0o600)
    assert main(["check", "--config", str(path)]) == 0
    assert "mqtt.tls_key" not in capsys.readouterr().out


def test_commands_that_need_no_secret_do_not_fetch_one(tmp_path: Path) -> None:
    path = config(tmp_path, 'password_credential = "mqtt-password"')
    with pytest.raises(ConfigProblems):  # outside systemd, for gateway run
        load_config(path)
    cfg = load_config(path, secrets=False)  # e.g. gateway status, by hand
    assert cfg.mqtt is not None and cfg.mqtt.password is None
    # A plain-text secret others can read is refused whatever the command.
    path = config(tmp_path, f'password = "{SECRET}"', 0o604)
    with pytest.raises(ConfigProblems, match="plain-text secret"):
        load_config(path, secrets=False)


@pytest.mark.parametrize("command", [["status"], ["export", "--out", "b.tar"]])
def test_by_hand_commands_run_without_the_services_credentials(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, 'password_credential = "mqtt-password"')
    path.write_text(path.read_text().replace("[device]\n", f'[device]\ndata_dir = "{tmp_path}"\n'))
    main([*command, "--config", str(path)])  # no log yet: refused, but not for the password
    err = capsys.readouterr().err
    assert "gateway.toml" not in err and "password" not in err
    assert err.strip()  # it stopped for its own reason (no log, no key), named
