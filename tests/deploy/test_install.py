"""deploy/install.sh, run for real into a throw-away root (``--prefix``).

The root starts as a Debian root with systemd installed would: ``etc/passwd``,
``etc/group``, ``etc/shadow``, ``etc/gshadow`` and the distribution's unit files
(copied from this machine's systemd package, which ``systemd-analyze verify``
needs: the unit's dependencies). The installer runs twice from a snapshot of this
checkout (a shallow clone of HEAD, so edits in progress in the work tree do not
change the source between the two runs); pip really installs riverseal[gateway]
into the root's virtual environment. Then ``systemd-analyze`` checks the
installed unit, ``udevadm`` parses the installed rules, and ``--uninstall`` and
``--purge`` run on copies of the installed root.

One real pip install (about 15 s on a 2-core machine); the whole file takes about 20 s.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"
SETUP_HINT = "run scripts/setup --dev"
HOST_UNITS = Path("/usr/lib/systemd/system")
SERVICE = "riverseal-gateway.service"
UNIT = Path("etc/systemd/system") / SERVICE
WANTS_LINK = Path("etc/systemd/system/multi-user.target.wants") / SERVICE
RULES = Path("etc/udev/rules.d/61-riverseal-serial.rules")
# The highest exposure `systemd-analyze security` may give the unit (it gives 1.5).
MAX_EXPOSURE = 2.0


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {SETUP_HINT}", pytrace=False)
    return found


def install(root: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """deploy/install.sh --prefix ROOT ARGS...; fails the test on a non-zero exit."""
    run = subprocess.run(
        [str(INSTALL), "--prefix", str(root), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"install.sh {' '.join(map(str, args))}:\n{run.stdout}{run.stderr}"
    return run


def manifest(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path under root: type, mode, owner, modification time and content (or target)."""
    entries: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                content: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                content = None
            entries[str(path.relative_to(root))] = (
                stat.S_IFMT(st.st_mode),
                stat.S_IMODE(st.st_mode),
                st.st_uid,
                st.st_gid,
                st.st_mtime_ns,
                content,
            )
    return entries


def entries(path: Path, name: str) -> list[list[str]]:
    """The lines of a passwd-style file whose first field is name, split at colons."""
    return [line.split(":") for line in path.read_text().splitlines() if line.split(":")[0] == name]


def seed_root(root: Path) -> None:
    """A Debian root as the installer finds it: users, groups and systemd's unit files."""
    if not (HOST_UNITS / "sysinit.target").exists():
        pytest.fail(f"systemd's unit files are not in {HOST_UNITS}: {SETUP_HINT}", pytrace=False)
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ntty:x:5:\ndialout:x:20:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ntty:*::\ndialout:*::\n")
    for name in ("passwd", "group"):
        (etc / name).chmod(0o644)
    for name in ("shadow", "gshadow"):
        (etc / name).chmod(0o640)
    units = root / HOST_UNITS.relative_to("/")
    shutil.copytree(HOST_UNITS, units, symlinks=True)


def snapshot_checkout(dest: Path) -> Path:
    """HEAD of this checkout as a checkout of its own (a shallow clone)."""
    git = tool("git")
    subprocess.run(
        [git, "clone", "--quiet", "--depth", "1", f"file://{REPO}", str(dest)],
        check=True,
        timeout=60,
    )
    return dest


def copy_root(src: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(src), str(dest)], check=True, timeout=60)
    return dest


@dataclass
class Installed:
    root: Path
    source: Path
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]
    after_first: dict[str, tuple[object, ...]]
    after_second: dict[str, tuple[object, ...]]
    first_s: float
    second_s: float


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    source = snapshot_checkout(base / "checkout")
    root = base / "root"
    seed_root(root)
    t0 = time.monotonic()
    first = install(root, "--from", source)
    t1 = time.monotonic()
    after_first = manifest(root)
    second = install(root, "--from", source)
    t2 = time.monotonic()
    return Installed(root, source, first, second, after_first, manifest(root), t1 - t0, t2 - t1)


def test_second_run_changes_nothing(installed: Installed) -> None:
    assert "installing riverseal[gateway]" in installed.first.stdout
    assert "is up to date" in installed.second.stdout
    assert "nothing to change" in installed.second.stdout
    assert installed.second.stderr == ""
    first, second = installed.after_first, installed.after_second
    assert sorted(first) == sorted(second)
    changed = [path for path in first if first[path] != second[path]]
    assert changed == []
    assert installed.second_s < 10  # no pip, no venv: a look and done


def test_user_and_groups_once(installed: Installed) -> None:
    etc = installed.root / "etc"
    (user,) = entries(etc / "passwd", "riverseal")
    uid, gid, home, shell = int(user[2]), int(user[3]), user[5], user[6]
    assert 100 <= uid <= 999  # a system user
    assert (home, shell) == ("/var/lib/riverseal", "/usr/sbin/nologin")
    ((*_, gid_field, members),) = entries(etc / "group", "riverseal")
    assert (int(gid_field), members) == (gid, "")
    ((*_, dialout_members),) = entries(etc / "group", "dialout")
    assert dialout_members.split(",") == ["riverseal"]
    ((*_, gshadow_members),) = entries(etc / "gshadow", "dialout")
    assert gshadow_members.split(",") == ["riverseal"]
    (shadow,) = entries(etc / "shadow", "riverseal")
    assert shadow[1] == "!"  # locked: no password login
    assert len(entries(etc / "gshadow", "riverseal")) == 1
    # The machine's own user database is untouched.
    assert not entries(Path("/etc/passwd"), "riverseal")


def test_layout_owners_and_modes(installed: Installed) -> None:
    root = installed.root
    (user,) = entries(root / "etc/passwd", "riverseal")
    uid, gid = int(user[2]), int(user[3])

    def info(rel: str) -> tuple[int, int | None, int | None]:
        st = (root / rel).lstat()
        if os.geteuid() != 0:  # not root: nothing could be chowned
            return stat.S_IMODE(st.st_mode), None, None
        return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid

    owner = (uid, gid) if os.geteuid() == 0 else (None, None)
    config_group = (0, gid) if os.geteuid() == 0 else (None, None)
    assert info("etc/riverseal") == (0o750, *config_group)
    assert info("etc/riverseal/gateway.toml") == (0o640, *config_group)
    assert info("etc/riverseal/trust.txt") == (0o644, *config_group)
    assert info("etc/riverseal/key") == (0o700, *owner)
    assert info("etc/riverseal/key/device.key") == (0o600, *owner)
    assert info("var/lib/riverseal") == (0o700, *owner)
    assert info(str(UNIT))[0] == 0o644
    assert info(str(RULES))[0] == 0o644
    assert os.readlink(root / "usr/local/bin/gateway") == "/opt/riverseal/venv/bin/gateway"
    gateway = root / "opt/riverseal/venv/bin/gateway"
    assert os.access(gateway, os.X_OK)
    assert (root / UNIT).read_bytes() == (REPO / "deploy" / SERVICE).read_bytes()
    assert (root / RULES).read_bytes() == (REPO / "deploy" / RULES.name).read_bytes()

    # The config gateway init wrote, pointed at the key directory and the state directory;
    # the key is the one `gateway check` loads.
    config = (root / "etc/riverseal/gateway.toml").read_text()
    assert re.search(r'^key_file = "key/device.key"', config, re.M)
    assert re.search(r'^data_dir = "/var/lib/riverseal"', config, re.M)
    assert "--config /etc/riverseal/gateway.toml" in config
    assert ".init." not in config
    check = subprocess.run(
        [str(gateway), "check", "--config", str(root / "etc/riverseal/gateway.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    device = re.search(r"device (rs-[0-9a-f]{12})", check.stdout)
    assert device is not None, check.stdout
    assert f"device id:    {device[1]}" in installed.first.stdout
    trust = (root / "etc/riverseal/trust.txt").read_text()
    assert f"key riverseal/{device[1]}+" in trust


def test_unit_enabled_and_verified(installed: Installed) -> None:
    root = installed.root
    assert os.readlink(root / WANTS_LINK) == f"/{UNIT}"
    verify = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", SERVICE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys too, with a warning: both must be clean.
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")


def test_unit_without_its_command_fails_verify(installed: Installed, tmp_path: Path) -> None:
    """The check above is not vacuous: verify looks for ExecStart inside the root."""
    root = copy_root(installed.root, tmp_path / "root")
    (root / "opt/riverseal/venv/bin/gateway").unlink()
    verify = subprocess.run(
        [tool("systemd-analyze"), "verify", f"--root={root}", SERVICE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode != 0
    assert "/opt/riverseal/venv/bin/gateway is not executable" in verify.stderr


def test_unit_exposure(installed: Installed) -> None:
    run = subprocess.run(
        [
            tool("systemd-analyze"),
            "security",
            "--offline=true",
            f"--root={installed.root}",
            f"--threshold={round(MAX_EXPOSURE * 10)}",
            SERVICE,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", run.stdout)
    assert found is not None, run.stdout + run.stderr
    assert float(found[1]) <= MAX_EXPOSURE, run.stdout
    assert run.returncode == 0, run.stdout + run.stderr


def test_udev_rules_parse(installed: Installed) -> None:
    """udevadm reads the installed rules without a complaint.

    In a mount namespace of its own, the rules directory and udev's database are empty
    tmpfs mounts: the machine's rules and devices are not touched. The device tested is
    one with no device node (a CPU), so nothing in /dev changes either.
    """
    if os.geteuid() != 0:
        pytest.fail("needs root (unshare --mount) to read the rules with udevadm", pytrace=False)
    udevadm = tool("udevadm")
    rules = installed.root / RULES
    script = (
        "set -e; mount -t tmpfs tmpfs /etc/udev/rules.d; mount -t tmpfs tmpfs /run/udev; "
        f'cp "$1" /etc/udev/rules.d/; exec {udevadm} test --action=add /sys/devices/system/cpu/cpu0'
    )
    run = subprocess.run(
        [tool("unshare"), "--mount", "sh", "-c", script, "sh", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    installed_as = f"/etc/udev/rules.d/{RULES.name}"
    assert f"Reading rules file: {installed_as}" in out
    complaints = [
        line for line in out.splitlines() if installed_as in line and "Reading rules" not in line
    ]
    assert complaints == []


def test_uninstall_keeps_config_and_data_purge_removes_them(
    installed: Installed, tmp_path: Path
) -> None:
    root = copy_root(installed.root, tmp_path / "root")
    (root / "var/lib/riverseal/log.sqlite").write_bytes(b"the log")
    key = (root / "etc/riverseal/key/device.key").read_bytes()
    config = (root / "etc/riverseal/gateway.toml").read_bytes()

    first = install(root, "--uninstall")
    for gone in (UNIT, WANTS_LINK, RULES, Path("opt/riverseal"), Path("usr/local/bin/gateway")):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    assert "kept /etc/riverseal" in first.stdout
    assert (root / "etc/riverseal/key/device.key").read_bytes() == key
    assert (root / "etc/riverseal/gateway.toml").read_bytes() == config
    assert (root / "var/lib/riverseal/log.sqlite").read_bytes() == b"the log"
    for name in ("passwd", "group", "shadow", "gshadow"):
        text = (root / "etc" / name).read_text()
        assert "riverseal" not in text, name
    assert entries(root / "etc/group", "dialout") == [["dialout", "x", "20", ""]]
    assert entries(root / "etc/passwd", "root")  # the others' entries are kept

    kept = manifest(root)
    install(root, "--uninstall")  # again: nothing left to do, nothing changes
    assert manifest(root) == kept

    install(root, "--uninstall", "--purge")
    assert not (root / "etc/riverseal").exists()
    assert not (root / "var/lib/riverseal").exists()


def test_reinstall_keeps_an_existing_key_and_config(installed: Installed, tmp_path: Path) -> None:
    """A config of the box's own is never rewritten; one the unit cannot serve is warned of."""
    root = copy_root(installed.root, tmp_path / "root")
    etc = root / "etc/riverseal"
    # An older layout: the key beside the config, data in /etc/riverseal/data.
    (etc / "key/device.key").rename(etc / "device.key")
    (etc / "gateway.toml").write_text('[device]\nkey_file = "device.key"\ndata_dir = "data"\n')
    before = {p: (etc / p).read_bytes() for p in ("device.key", "gateway.toml", "trust.txt")}

    run = install(root, "--from", installed.source)
    assert "is up to date" in run.stdout
    assert {p: (etc / p).read_bytes() for p in before} == before
    assert not (etc / "key/device.key").exists()
    assert "it rewrites /etc/riverseal/device.key.history beside the key" in run.stderr
    assert 'set data_dir = "/var/lib/riverseal"' in run.stderr


def test_help_and_bad_arguments() -> None:
    run = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, check=False)
    assert run.returncode == 0
    for option in ("--from", "--wheels", "--python", "--prefix", "--uninstall", "--purge"):
        assert option in run.stdout
    bad = subprocess.run([str(INSTALL), "--frm", "x"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2
    assert "unknown argument: --frm" in bad.stderr
    missing = subprocess.run(
        [str(INSTALL), "--prefix"], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2
    assert "--prefix needs a value" in missing.stderr


def test_a_failed_pip_install_changes_nothing(installed: Installed, tmp_path: Path) -> None:
    """An upgrade from a source pip cannot install leaves the installed venv in place."""
    root = copy_root(installed.root, tmp_path / "root")
    before = manifest(root)
    broken = tmp_path / "riverseal-0.0.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip file")
    run = subprocess.run(
        [str(INSTALL), "--prefix", str(root), "--from", str(broken), "--wheels", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "pip could not install riverseal[gateway]" in run.stderr
    after = manifest(root)
    # The venv was moved aside and back: only its parent directory's time differs.
    assert after.pop("opt/riverseal")[:-2] == before.pop("opt/riverseal")[:-2]
    assert after == before


def test_install_sh_passes_shellcheck() -> None:
    run = subprocess.run(
        [tool("shellcheck"), str(INSTALL)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
