"""Configuration: config.toml and README document every key; defaults < file < environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nvcf_lite.config import Config, ConfigError, SimulatedGpu, find_config, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TOML = ROOT / "config.toml"
README = ROOT / "README.md"

# `key = ...` and `[table]` / `[[table]]` lines, commented out or not.
_KEY_LINE = re.compile(r"^\s*#?\s*([A-Za-z0-9_]+)\s*=")
_TABLE_LINE = re.compile(r"^\s*#?\s*\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*(?:#.*)?$")

Path_ = tuple[str, ...]


def _struct_in(tp: Any) -> type[msgspec.Struct] | None:
    """The Struct a field holds: itself, or inside list[...] / X | None."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return tp
    for arg in typing.get_args(tp):
        found = _struct_in(arg)
        if found is not None:
            return found
    return None


def _is_list(tp: Any) -> bool:
    return typing.get_origin(tp) in (list, tuple, set, frozenset)


def _fields(
    struct: type[msgspec.Struct], prefix: Path_ = (), in_list: bool = False
) -> Iterator[tuple[Path_, msgspec.structs.FieldInfo, bool]]:
    """Every field of the config tree: (dotted path, field, whether it lives in a list item)."""
    for field in msgspec.structs.fields(struct):
        path = (*prefix, field.name)
        yield path, field, in_list
        inner = _struct_in(field.type)
        if inner is not None:
            yield from _fields(inner, path, in_list or _is_list(field.type))


ALL_FIELDS = list(_fields(Config))
ALL_PATHS = [".".join(path) for path, _, _ in ALL_FIELDS]
SECTIONS = [f.name for f in msgspec.structs.fields(Config)]


def _toml_mentions(text: str) -> set[str]:
    """Dotted paths named in a TOML text: tables, and keys within their table (comments too)."""
    found: set[str] = set()
    table = ""
    for line in text.splitlines():
        if m := _TABLE_LINE.match(line):
            table = m.group(1)
            found.add(table)
        elif m := _KEY_LINE.match(line):
            found.add(f"{table}.{m.group(1)}" if table else m.group(1))
    return found


def _lookup(data: dict[str, Any], path: Path_) -> bool:
    node: Any = data
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _environ(**values: str) -> dict[str, str]:
    return {f"NVCF_LITE_{k.upper()}": v for k, v in values.items()}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# --- config.toml ---------------------------------------------------------------------------


@pytest.mark.parametrize("dotted", ALL_PATHS)
def test_config_toml_mentions_every_key(dotted: str) -> None:
    mentioned = _toml_mentions(CONFIG_TOML.read_text())
    assert dotted in mentioned, (
        f"config.toml does not document `{dotted}`: add it (with its default and a one-line "
        "comment) to its table in config.toml, and to the README's Configuration section"
    )


def test_config_toml_sets_every_plain_key_to_its_default() -> None:
    data = tomllib.loads(CONFIG_TOML.read_text())
    defaults = Config()
    for path, field, in_list in ALL_FIELDS:
        has_table = _struct_in(field.type) is not None
        if in_list or has_table or field.default is None:
            continue  # lists of tables are shown as commented examples
        assert _lookup(data, path), f"config.toml does not set `{'.'.join(path)}`"
    assert load_config(CONFIG_TOML, {}) == defaults, "config.toml must equal the built-in defaults"


def test_config_toml_commented_examples_are_valid(tmp_path: Path) -> None:
    """Uncommenting an example table (`# [[gpus.simulated]]` and its keys) must load."""
    lines = CONFIG_TOML.read_text().splitlines()
    out: list[str] = []
    in_example = False
    for line in lines:
        if re.match(r"^#\s*\[\[?[A-Za-z0-9_.]+\]\]?\s*$", line):
            in_example = True
            out.append(line.lstrip("#").strip())
        elif in_example and _KEY_LINE.match(line) and line.lstrip().startswith("#"):
            out.append(line.lstrip().removeprefix("#").strip())
        else:
            in_example = False
            out.append(line)
    config = load_config(_write(tmp_path, "\n".join(out) + "\n"), {})
    assert config.gpus.simulated, "expected the [[gpus.simulated]] example in config.toml"
    assert all(isinstance(g, SimulatedGpu) and g.name for g in config.gpus.simulated)


# --- precedence and environment ------------------------------------------------------------


def test_precedence_defaults_then_file_then_env(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nport = 9000\nlog_level = 'debug'\n")
    assert load_config(None, {}).server.port == 8080
    from_file = load_config(path, {})
    assert (from_file.server.port, from_file.server.log_level) == (9000, "debug")
    both = load_config(path, _environ(server__port="9100"))
    assert both.server.port == 9100
    assert both.server.log_level == "debug"  # the file still wins over the default
    assert both.server.host == "127.0.0.1"  # and untouched keys keep theirs


def test_env_values_are_typed() -> None:
    env = _environ(
        server__access_log="true",
        auth__key_cache_seconds="0.5",
        invocation__max_poll_seconds="120",
        store__data_dir="/srv/nvcf",
    )
    config = load_config(None, env)
    assert config.server.access_log is True
    assert config.auth.key_cache_seconds == 0.5
    assert config.invocation.max_poll_seconds == 120
    assert config.store.data_dir == "/srv/nvcf"
    assert config.data_path == Path("/srv/nvcf")


@pytest.mark.parametrize(
    "path",
    [p for p, f, in_list in ALL_FIELDS if len(p) == 2 and not in_list and not _is_list(f.type)],
    ids=".".join,
)
def test_every_plain_key_can_be_set_from_env(path: Path_) -> None:
    section, key = path
    default = getattr(getattr(Config(), section), key)
    if isinstance(default, msgspec.Struct):
        pytest.skip("a table, not a value")
    raw = str(default).lower() if isinstance(default, bool) else str(default)
    config = load_config(None, {f"NVCF_LITE_{section.upper()}__{key.upper()}": raw})
    assert getattr(getattr(config, section), key) == default


def test_list_env_vars_are_json() -> None:
    env = {"NVCF_LITE_GPUS__SIMULATED": '[{"name":"L40","count":2}]'}
    config = load_config(None, env)
    assert config.gpus.simulated == [SimulatedGpu(name="L40", count=2)]
    assert config.gpus.simulated[0].memory_mb == 16384


def test_env_list_replaces_the_file_list(tmp_path: Path) -> None:
    path = _write(tmp_path, "[[gpus.simulated]]\nname = 'A100'\ncount = 4\n")
    assert load_config(path, {}).gpus.simulated == [SimulatedGpu(name="A100", count=4)]
    env = {"NVCF_LITE_GPUS__SIMULATED": '[{"name":"H100","memory_mb":81559}]'}
    assert load_config(path, env).gpus.simulated == [SimulatedGpu(name="H100", memory_mb=81559)]


def test_config_env_var_is_not_a_key() -> None:
    assert load_config(None, {"NVCF_LITE_CONFIG": "/elsewhere.toml"}) == Config()


def test_the_test_suites_switches_are_not_keys() -> None:
    """A shell that ran scripts/test.sh (or CI) may still export them; serve must start."""
    switches = {"NVCF_LITE_REQUIRE_DOCKER": "1", "NVCF_LITE_REQUIRE_SDK": "1"}
    assert load_config(None, {**switches, "NVCF_LITE_NO_DOCKER": "1"}) == Config()


def test_other_env_vars_are_ignored() -> None:
    assert load_config(None, {"PATH": "/bin", "NVCF_LITEX": "1", "HOME": "/root"}) == Config()


# --- errors name the key -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[server]\nprot = 1\n", "prot"),
        ("[srever]\nport = 1\n", "srever"),
        ("unknown_top = 1\n", "unknown_top"),
        ("[[gpus.simulated]]\nname = 'L40'\ncuont = 2\n", "cuont"),
    ],
)
def test_unknown_keys_in_the_file_are_errors(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(_write(tmp_path, text), {})


@pytest.mark.parametrize(
    ("variable", "names"),
    [
        ("NVCF_LITE_SERVER__PROT", "prot"),
        ("NVCF_LITE_SRV__PORT", "NVCF_LITE_SRV__PORT"),
        ("NVCF_LITE_PORT", "NVCF_LITE_PORT"),
    ],
)
def test_unknown_keys_in_env_are_errors(variable: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_config(None, {variable: "1"})


def test_bad_values_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_config(None, _environ(server__port="eighty"))
    with pytest.raises(ConfigError, match="port"):
        load_config(_write(tmp_path, "[server]\nport = 'eighty'\n"), {})
    with pytest.raises(ConfigError, match="count"):
        load_config(None, {"NVCF_LITE_GPUS__SIMULATED": '[{"name":"L40","count":0}]'})
    for ttl in ("0", "2592001"):
        with pytest.raises(ConfigError, match="token_ttl_s"):
            load_config(None, {"NVCF_LITE_AUTH__TOKEN_TTL_S": ttl})
    for backlog in ("0", "65536"):
        with pytest.raises(ConfigError, match="backlog"):
            load_config(None, {"NVCF_LITE_SERVER__BACKLOG": backlog})
    with pytest.raises(ConfigError, match="max_requests_in_flight"):
        load_config(None, {"NVCF_LITE_SERVER__MAX_REQUESTS_IN_FLIGHT": "0"})
    for domain in ("Local Host", "-x.localhost", "a..b", "localhost:8080", "Localhost"):
        with pytest.raises(ConfigError, match="host_domain"):
            load_config(None, {"NVCF_LITE_INVOCATION__HOST_DOMAIN": domain})
    for port in ("-1", "65536", "8080"):  # (8080: server.port)
        with pytest.raises(ConfigError, match="grpc_port"):
            load_config(None, {"NVCF_LITE_INVOCATION__GRPC_PORT": port})
    ok = {"NVCF_LITE_INVOCATION__HOST_DOMAIN": "", "NVCF_LITE_INVOCATION__GRPC_PORT": "8001"}
    assert load_config(None, ok).invocation.grpc_port == 8001


def test_missing_and_malformed_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[server\n"), {})


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_PROBE = """
import sys
from pathlib import Path
from nvcf_lite.config import ConfigError, find_config, load_config
try:
    if sys.argv[1] == "load":
        load_config(sys.argv[2], {})
    else:
        print(find_config(None, {"NVCF_LITE_SYSTEM_CONFIG": sys.argv[2]}, cwd=Path(sys.argv[3])))
except ConfigError as exc:
    print("ConfigError:", exc)
"""


def _as_nobody(*args: str) -> str:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a check as another user")
    done = subprocess.run(
        [*NOBODY, sys.executable, "-c", _PROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr  # a ConfigError, never a traceback
    return done.stdout


@pytest.fixture
def locked_away() -> Iterator[Path]:
    """/etc/nvcf-lite/config.toml as installed: a folder other users cannot enter (0750), in a
    folder they can (pytest's tmp_path is 0700, which would hide everything)."""
    top = Path(tempfile.mkdtemp(prefix="nvcf-lite-config-"))
    try:
        top.chmod(0o755)
        yield _locked_away(top)
    finally:
        shutil.rmtree(top)


def _locked_away(tmp_path: Path) -> Path:
    folder = tmp_path / "etc-nvcf-lite"
    folder.mkdir(mode=0o750)
    (folder / "config.toml").write_text("[server]\nport = 9100\n")
    (tmp_path / "cwd").mkdir()
    (tmp_path / "cwd" / "config.toml").write_text("")  # the fallback that must not be taken
    return folder / "config.toml"


def test_an_unreadable_config_file_is_an_error_not_a_traceback(locked_away: Path) -> None:
    out = _as_nobody("load", str(locked_away))
    assert f"ConfigError: cannot read config file {locked_away}: permission denied" in out
    assert "run as the service's user or root" in out


def test_an_unreadable_system_config_is_not_skipped(locked_away: Path) -> None:
    cwd = str(locked_away.parents[1] / "cwd")
    assert "./config.toml" in _as_nobody("find", str(locked_away.parents[1] / "no.toml"), cwd)
    out = _as_nobody("find", str(locked_away), str(locked_away.parents[1] / "cwd"))
    assert f"ConfigError: cannot read config file {locked_away}: permission denied" in out
    locked_away.parent.chmod(0o755)  # the folder can be entered, the file itself is 0600
    locked_away.chmod(0o600)
    out = _as_nobody("find", str(locked_away), str(locked_away.parents[1] / "cwd"))
    assert f"ConfigError: cannot read config file {locked_away}: permission denied" in out


def test_a_missing_system_config_still_falls_back(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    source = find_config(None, {"NVCF_LITE_SYSTEM_CONFIG": str(tmp_path / "no.toml")}, cwd=tmp_path)
    assert source.origin == "./config.toml"


def test_a_config_path_that_is_a_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"cannot read config file {tmp_path}: Is a directory"):
        load_config(tmp_path, {})


def test_tls_cert_and_key_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls_key"):
        load_config(None, _environ(server__tls_cert="/etc/cert.pem"))
    with pytest.raises(ConfigError, match="tls_cert"):
        load_config(_write(tmp_path, "[server]\ntls_key = '/etc/key.pem'\n"), {})
    both = load_config(None, _environ(server__tls_cert="c.pem", server__tls_key="k.pem"))
    assert (both.server.tls_cert, both.server.tls_key) == ("c.pem", "k.pem")


# --- README --------------------------------------------------------------------------------


def _readme_sections(text: str) -> dict[str, str]:
    """Text under each heading that names a config table, e.g. '### `[server]`'."""
    sections: dict[str, str] = {}
    current: str | None = None
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if line.startswith("#") and not in_code:
            m = re.search(r"\[([A-Za-z0-9_.]+)\]", line)
            current = m.group(1) if m and m.group(1) in SECTIONS else None
            if current:
                sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    return sections


def test_readme_documents_every_key() -> None:
    assert README.is_file(), "README.md is missing"
    text = README.read_text()
    sections = _readme_sections(text)
    missing = []
    for dotted in ALL_PATHS:
        section, _, rest = dotted.partition(".")
        if not rest:
            if section not in sections:
                missing.append(f"[{section}] (no heading naming the table)")
            continue
        if f"`{dotted}`" in text:
            continue
        if f"`{rest}`" not in sections.get(section, ""):
            missing.append(dotted)
    assert not missing, (
        "README.md's Configuration section does not document these config keys: "
        f"{', '.join(missing)}. Add a row `key` | default | meaning to the table under the "
        "heading that names its section (e.g. '### `[server]`'), or write `section.key`."
    )


def test_relative_data_dir_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, {"NVCF_LITE_STORE__DATA_DIR": "./data"})
    assert config.data_path == tmp_path / "data"


def test_secrets_go_to_a_memory_backed_folder_outside_data_dir() -> None:
    """docker.secrets_dir: empty picks a tmpfs folder by who runs the server."""
    from nvcf_lite.config import default_secrets_path

    systemd = {"RUNTIME_DIRECTORY": "/run/nvcf-lite:/run/other", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert default_secrets_path(systemd, 998) == Path("/run/nvcf-lite/secrets")
    assert default_secrets_path({"XDG_RUNTIME_DIR": "/run/user/7"}, 0) == Path(
        "/run/nvcf-lite/secrets"
    )
    assert default_secrets_path({"XDG_RUNTIME_DIR": "/run/user/7"}, 7) == Path(
        "/run/user/7/nvcf-lite/secrets"
    )
    assert default_secrets_path({}, 7) == Path("/dev/shm/nvcf-lite-7/secrets")
    set_ = load_config(None, {"NVCF_LITE_DOCKER__SECRETS_DIR": "/srv/tmpfs/s"})
    assert set_.secrets_path == Path("/srv/tmpfs/s")
