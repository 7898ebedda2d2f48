"""``gateway check``: every problem of a config at once, each with its line, key path and a
doc section that exists; local checks of this machine; the exit codes docs/operations.md gives."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.config.problems import HINTS, key_lines, locate
from gateway.errors import ConfigProblems
from gateway.keys import create_device_key

ROOT = Path(__file__).resolve().parents[2]

# Seventeen kinds of mistake, each on a line marked with its key path, so the test finds
# the expected line itself (not through the code under test).
BAD = """\
[device]
key_file = "device.key"
data_dir = "not-a-dir"                  # MARK device.data_dir

[log]
checkpoint_every_entries = 0            # MARK log.checkpoint_every_entries
checkpoint_every_seconds = "often"      # MARK log.checkpoint_every_seconds

[anchor]
retry_max_seconds = -5                  # MARK anchor.retry_max_seconds

[[anchor.rfc3161]]
name = "tsa-a"
url = "ftp://tsa.example/tsr"           # MARK anchor.rfc3161[0].url
roots = "relative/roots.pem"            # MARK anchor.rfc3161[0].roots

[[anchor.evm]]
name = "besu"
chain_id = 1337
rpc = [                                 # MARK anchor.evm[0].rpc[1]
    "http://10.0.0.5:8545",
    "http//10.0.0.6:8545",
]
key_file = "no-such-anchor.key"         # MARK anchor.evm[0].key_file
token = "tok-{secret}"                  # MARK anchor.evm[0].token

[mqtt]
host = "127.0.0.1"
port = 70000                            # MARK mqtt.port
username = "gateway"
password = 12345                        # MARK mqtt.password

[[sensor]]
id = "ph-1"
driver = "ezo"
circuit = "ph"
port = "{port}"
baudrate = 96000                        # MARK sensor[0].baudrate
bauderate = 9600                        # MARK sensor[0].bauderate

[[sensor]]
id = "do-1"
driver = "ezo"
circuit = "do"
port = "/dev/serial/by-id/usb-gone-if00" # MARK sensor[1].port

[[sensor]]
id = "ph-1"                             # MARK sensor[2].id
driver = "mqtt"
topic = "riverseal/#/ph"                # MARK sensor[2].topic

[[sensor]]
id = "cl-1"
driver = "zigbee"                       # MARK sensor[3].driver

[qc.ph]
spike_suspect = 0                       # MARK qc.ph.spike_suspect

[statuss]                               # MARK statuss
listen = ""
"""
SECRET = "tok-s3cr3t-never-shown"


def marked_lines(text: str) -> dict[str, int]:
    return {
        m.group(1): n
        for n, line in enumerate(text.splitlines(), start=1)
        if (m := re.search(r"# MARK (\S+)", line))
    }


def write_bad(tmp_path: Path) -> tuple[Path, str]:
    port = tmp_path / "ttyFake"  # a device node stand-in: check only asks that it exists
    port.write_text("")
    (tmp_path / "not-a-dir").write_text("a file where the data directory should be")
    key = tmp_path / "device.key"
    create_device_key(key)
    key.chmod(0o644)  # a device key others can read
    text = BAD.format(port=port, secret=SECRET.removeprefix("tok-"))
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    path.chmod(0o644)  # and a plain-text secret in a file others can read
    return path, text


def test_seventeen_kinds_of_bad_config_are_reported_in_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, text = write_bad(tmp_path)
    assert main(["check", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    expected = marked_lines(text)
    assert len(expected) >= 17
    for key, line in expected.items():
        assert f"{path}:{line}: {key}: " in out, (key, line, out)
    # ...and the key file (no line: not a key written in the file) and the summary.
    assert f"{path}:2: device.key_file: " in out and "chmod 600" in out
    errors = int(re.findall(r": (\d+) error\(s\)", out)[-1])
    assert errors == len(expected) + 1
    # What each says: what is wrong and what is allowed.
    for needle in (
        "96000 is not one of (300, 1200, 2400, 9600",
        "bauderate: is not a known setting (a typo?); known here: baudrate, circuit",
        "'ph-1' is used by two sensors",
        "/dev/serial/by-id/usb-gone-if00 does not exist",
        "gateway scan",
        "'ftp://tsa.example/tsr' is not an http:// or https:// URL",
        "must be an absolute path",
        "'zigbee' is not one of 'ezo'",
        "statuss: is not a known setting",
        "is not a directory",
        "chmod 600",
        "must be float, got str 'often'",
    ):
        assert needle in out, needle
    # Secrets are named, never shown: the plain-text token, the numeric password.
    assert SECRET not in out and "12345" not in out
    assert "mqtt.password: must be a string, got int (a secret: not shown)" in out
    assert f"anchor.evm[0].token: is a plain-text secret in {path}" in out


def test_every_hint_points_to_a_section_that_exists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def slug(heading: str) -> str:  # GitHub's anchor for a heading
        text = heading.strip().lower()
        return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")

    anchors = {
        f"docs/{doc.name}#{slug(h)}"
        for doc in (ROOT / "docs").glob("*.md")
        for h in re.findall(r"^#{1,6} (.+)$", doc.read_text(encoding="utf-8"), re.M)
    }
    assert set(HINTS.values()) <= anchors, set(HINTS.values()) - anchors
    path, _ = write_bad(tmp_path)
    main(["check", "--config", str(path)])
    shown = set(re.findall(r"^    see (\S+)$", capsys.readouterr().out, re.M))
    assert len(shown) >= 5
    assert shown <= anchors, shown - anchors


def test_gateway_run_refuses_with_the_whole_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, text = write_bad(tmp_path)
    assert main(["run", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    for key in ("sensor[0].baudrate", "mqtt.port", "anchor.rfc3161[0].url", "qc.ph.spike_suspect"):
        assert f"{path}:{marked_lines(text)[key]}: {key}: " in err
    assert SECRET not in err and "12345" not in err
    with pytest.raises(ConfigProblems) as info:
        load_config(path)
    assert len(info.value.problems) >= 14
    assert info.value.where == "log.checkpoint_every_entries"


def test_toml_syntax_errors_give_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[device]\nkey_file = "device.key"\n\n[log\ncheckpoint_every_entries = 5\n')
    assert main(["check", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert re.search(rf"^{re.escape(str(path))}:4: is not valid TOML: .*line 4, column", out, re.M)


def test_a_good_config_is_ok_and_no_sensors_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "box")]) == 0
    path = tmp_path / "box" / "gateway.toml"
    capsys.readouterr()
    assert main(["check", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: sensor: no [[sensor]] table" in out
    assert re.search(r"OK — device rs-[0-9a-f]{12}, 0 sensors, 1 warning", out)
    # A sensor on a port that exists: no warning left, exit 0.
    master, slave = os.openpty()
    try:
        with path.open("a") as f:
            tty = os.ttyname(slave)
            f.write(f'\n[[sensor]]\nid = "ph-1"\ndriver = "ezo"\ncircuit = "ph"\nport = "{tty}"\n')
        assert main(["check", "--config", str(path)]) == 0
        out = capsys.readouterr().out
        assert "warning" not in out
        assert f"ph-1             ezo   {tty}" in out
    finally:
        os.close(master)
        os.close(slave)


def test_a_data_dir_that_cannot_be_made_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path)]) == 0
    path = tmp_path / "gateway.toml"
    (tmp_path / "blocker").write_text("")
    text = path.read_text().replace('data_dir = "data"', 'data_dir = "blocker/data"')
    path.write_text(text)
    line = text.splitlines().index(next(s for s in text.splitlines() if "blocker" in s)) + 1
    capsys.readouterr()
    assert main(["check", "--config", str(path)]) == 2
    out = capsys.readouterr().out
    assert f"{path}:{line}: device.data_dir: {tmp_path}/blocker/data does not exist and can" in out


def test_key_lines_follow_tables_arrays_and_quoted_keys() -> None:
    text = """\
top = 1
[device]
key_file = "k"   # a comment with = and [brackets]
[[sensor]]
id = "a"
quantities = [
  ["temperature", "Cel"],
  [[not, a, header]],
]
[[sensor]]
id = "b"
[sensor.names]
"x.y" = "ph"
[qc.sensors."ph-1".ph]
spike_fail = 2
notes = \"\"\"
[device]
key = 1
\"\"\"
after = 3
"""
    lines = key_lines(text)
    assert lines["top"] == 1
    assert lines["device"] == 2 and lines["device.key_file"] == 3
    assert lines["sensor[0]"] == 4 and lines["sensor[0].quantities"] == 6
    assert lines["sensor[1].id"] == 11
    assert lines["sensor[1].names"] == 12 and lines["sensor[1].names.x.y"] == 13
    assert lines["qc.sensors.ph-1.ph.spike_fail"] == 15
    assert lines["qc.sensors.ph-1.ph.after"] == 20
    assert "device.key" not in lines  # inside the multi-line string
    # A missing key points at its table; an element of an array at the array.
    assert locate(lines, "sensor[1].port") == 10
    assert locate(lines, "sensor[0].quantities[1]") == 6
    assert locate(lines, "log.max_batch") is None


def test_checks_across_sensors_name_the_table_as_the_file_numbers_it(tmp_path: Path) -> None:
    """The first table has a problem of its own; the [mqtt] rule still names the second."""
    path = tmp_path / "gateway.toml"
    path.write_text(
        '[device]\n[[sensor]]\nid = "x"\ndriver = "zigbee"\n'
        '[[sensor]]\nid = "n"\ndriver = "mqtt"\ntopic = "a/b"\n'
    )
    with pytest.raises(ConfigProblems) as info:
        load_config(path)
    found = [(p.key, p.line) for p in info.value.problems]
    assert found == [("sensor[0].driver", 4), ("sensor[1].driver", 7)]
    assert "need an [mqtt] section" in info.value.problems[1].message
