"""Config errors name the key; keys are 0600 and never overwritten; the CLI diagnoses."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config, parse_config
from gateway.errors import ConfigError, KeyFileError
from gateway.keys import create_device_key, load_device_key
from ledger_client.note import Verifier

GOOD = """
[device]
key_file = "device.key"
[mqtt]
host = "127.0.0.1"
[[sensor]]
id = "ph-1"
driver = "ezo"
circuit = "ph"
port = "/dev/serial/by-id/usb-FTDI-if00"
[[sensor]]
id = "node-1"
driver = "mqtt"
topic = "riverseal/site/node-1"
"""


def test_a_good_config_parses_with_documented_defaults(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, tmp_path / "gateway.toml")
    assert cfg.key_file == tmp_path / "device.key"
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.log.checkpoint_every_entries == 1000
    assert [s.id for s in cfg.sensors] == ["ph-1", "node-1"]
    assert cfg.sensors[0].baudrate == 9600  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("edit", "where", "problem"),
    [
        (
            ('circuit = "ph"', 'circuit = "ph"\nbaudrate = 9601'),
            "sensor[0].baudrate",
            "9601 is not one of",
        ),
        (('circuit = "ph"', 'circuit = "chlorine"'), "sensor[0].circuit", "is not one of"),
        (('driver = "ezo"', 'driver = "ezo"\nbauderate = 9600'), "sensor[0].bauderate", "a typo"),
        (('id = "node-1"', 'id = "ph-1"'), "sensor[1].id", "used by two sensors"),
        (('host = "127.0.0.1"', 'host = "127.0.0.1"\nport = 99999'), "mqtt.port", "not a TCP port"),
        (('driver = "mqtt"', 'driver = "zigbee"'), "sensor[1].driver", "is not one of"),
        (
            ("[device]", "[device]\n[log]\ncheckpoint_every_entries = 0"),
            "log.checkpoint_every_entries",
            "> 0",
        ),
        (
            ('topic = "riverseal/site/node-1"', 'topic = "riverseal/#/node-1"'),
            "sensor[1].topic",
            "'#' only as the whole last level",
        ),
    ],
)
def test_broken_configs_name_the_key_and_the_problem(
    tmp_path: Path, edit: tuple[str, str], where: str, problem: str
) -> None:
    old, new = edit
    text = GOOD.replace(old, new, 1)
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.where.endswith(where)
    assert str(path) in str(info.value)
    assert problem in info.value.problem


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[device\nkey_file = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "nope.toml")


def test_device_key_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    key = create_device_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        create_device_key(path)
    assert load_device_key(path).vkey == key.vkey
    Verifier.from_vkey(key.vkey)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_device_key(path)


def test_cli_init_prints_what_to_register(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "box")]) == 0
    out = capsys.readouterr().out
    key = load_device_key(tmp_path / "box" / "device.key")
    assert key.device_id in out
    assert key.vkey in out
    assert main(["check", "--config", str(tmp_path / "box" / "gateway.toml")]) == 0
    assert main(["init", str(tmp_path / "box")]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err


def test_cli_run_refuses_a_broken_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["init", str(tmp_path)])
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        cfg.read_text().replace("checkpoint_every_seconds = 60", "checkpoint_every_seconds = -1")
    )
    assert main(["run", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "log.checkpoint_every_seconds" in err
    assert "must be > 0" in err
