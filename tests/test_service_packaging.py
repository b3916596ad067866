"""The systemd service as shipped: packaging/nvcf-lite.service and what scripts/install.sh writes.

The unit is run for real (its ExecStart= line, as its user, in its file-system sandbox) by
scripts/check-service.sh in CI; these tests hold the pieces to each other without root.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from nvcf_lite.config import Config, StoreConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "packaging" / "nvcf-lite.service"
INSTALL = ROOT / "scripts" / "install.sh"
NVCF_LITE = Path(sys.executable).with_name("nvcf-lite")


def _service_values() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def _installed_config(tmp_path: Path) -> Path:
    text = subprocess.run(
        ["bash", str(INSTALL), "--print-config"], check=True, capture_output=True, text=True
    ).stdout
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_installed_config_is_the_default_with_the_state_directory(tmp_path: Path) -> None:
    config = load_config(_installed_config(tmp_path), {})
    state_dir = f"/var/lib/{_service_values()['StateDirectory'][0]}"
    assert config.store.data_dir == state_dir
    expected = msgspec.structs.replace(Config(), store=StoreConfig(data_dir=state_dir))
    assert config == expected


def test_exec_start_reads_the_installed_config() -> None:
    values = _service_values()
    [exec_start] = values["ExecStart"]
    assert exec_start == "/usr/local/bin/nvcf-lite --config /etc/nvcf-lite/config.toml serve"
    script = INSTALL.read_text()
    assert "BIN=/usr/local/bin/nvcf-lite\n" in script
    assert "CONFIG=$ETC/config.toml\n" in script and "ETC=/etc/nvcf-lite\n" in script
    assert values["User"] == ["nvcf-lite"] and values["SupplementaryGroups"] == ["docker"]
    # Function containers are left for adoption: nvcf-lite gets SIGTERM, not its worker.
    assert values["KillMode"] == ["mixed"]
    assert Config().docker.keep_instances_on_shutdown


@pytest.mark.skipif(not NVCF_LITE.exists(), reason="no nvcf-lite script beside the interpreter")
def test_exec_start_arguments_parse(tmp_path: Path) -> None:
    """The ExecStart= arguments are a valid command line (serve --help exits before serving)."""
    args = _service_values()["ExecStart"][0].split()[1:]
    args[args.index("/etc/nvcf-lite/config.toml")] = str(_installed_config(tmp_path))
    result = subprocess.run(
        [str(NVCF_LITE), *args, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout


def test_refusals_are_not_restarted(tmp_path: Path) -> None:
    """A start that nvcf-lite refuses (exit 2) would fail again at once: systemd must not loop."""
    from nvcf_lite.commands.database import EXIT_REFUSED

    assert _service_values()["RestartPreventExitStatus"] == [str(EXIT_REFUSED)]
    bad = tmp_path / "config.toml"
    bad.write_text('[server]\nport = "not a port"\n')
    done = subprocess.run(
        [str(NVCF_LITE), "--config", str(bad), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == EXIT_REFUSED, done.stderr
    assert "server.port" in done.stderr or "port" in done.stderr
