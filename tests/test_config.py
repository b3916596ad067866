"""Configuration: config.toml and README document every key; defaults < file < environment."""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nvcf_lite.config import Config, ConfigError, SimulatedGpu, load_config

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


def test_missing_and_malformed_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[server\n"), {})


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
