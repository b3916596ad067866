"""Typed configuration: defaults < config.toml < NVCF_LITE_<SECTION>__<KEY> environment.

Every struct forbids unknown fields, so a typo in the file or in an environment variable is a
startup error that names the key. Tests pass an `environ` mapping instead of touching os.environ.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

ENV_PREFIX = "NVCF_LITE_"
# Where an installed service keeps its config (scripts/install.sh, packaging/nvcf-lite.service);
# $NVCF_LITE_SYSTEM_CONFIG moves it (tests point it at a missing file).
SYSTEM_CONFIG = Path("/etc/nvcf-lite/config.toml")
# NVCF_LITE_* variables that are not settings: the config file's path, the key client verbs
# send (`nvcf-lite status`), and the test suite's switches (scripts/test.sh, .ci/run), which a
# shell that ran the tests may still export.
NOT_SETTINGS = frozenset(
    {
        "NVCF_LITE_CONFIG",
        "NVCF_LITE_SYSTEM_CONFIG",
        "NVCF_LITE_API_KEY",
        "NVCF_LITE_REQUIRE_DOCKER",
        "NVCF_LITE_REQUIRE_SDK",
        "NVCF_LITE_NO_DOCKER",
    }
)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the offending key."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str = ""
    tls_key: str = ""
    public_url: str = ""
    max_body_bytes: int = 5 * 1024 * 1024
    max_header_bytes: int = 64 * 1024
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = False
    fast_path: bool = True
    http2: bool = False
    backlog: int = 4096
    max_requests_in_flight: int = 16384


class StoreConfig(_Section):
    data_dir: str = "./data"


class AccountConfig(_Section):
    nca_id: str = "nvcf-lite-local"
    org_name: str = "local"


class AuthConfig(_Section):
    bootstrap_key: str = ""
    key_cache_seconds: float = 2.0
    token_ttl_s: int = 900


class SimulatedGpu(_Section):
    name: str
    count: int = 1
    memory_mb: int = 16384


class GpusConfig(_Section):
    use_nvml: bool = True
    simulated: list[SimulatedGpu] = []
    cpu_instance_max: int = 8


class InstanceTypeLimits(_Section):
    """CPU, memory and shared memory for one instance type, instead of its share of the host."""

    name: str
    cpu_cores: float | None = None
    memory_mb: int | None = None
    shm_size_mb: int | None = None


class ResourcesConfig(_Section):
    cpu_cores: float = 0.0  # 0: detected (CPU affinity, own container's quota) less the reserve
    memory_mb: int = 0  # 0: detected (MemTotal, own container's limit) less the reserve
    reserved_cpu_cores: float = 0.0
    reserved_memory_mb: int = 2048
    shm_size_mb: int = 1024
    instance_types: list[InstanceTypeLimits] = []


class DockerConfig(_Section):
    base_url: str = ""
    runtime: str = "docker"  # "docker": this engine's containers; "swarm": services of a swarm
    pull_timeout_s: float = 120.0  # without progress: a progressing pull never times out
    stop_timeout_s: float = 10.0
    keep_instances_on_shutdown: bool = True
    container_name_prefix: str = "nvcf-lite"
    namespace: str = "default"
    failed_containers_kept: int = 3
    secrets_dir: str = ""  # empty: see Config.secrets_path


class SwarmConfig(_Section):
    start_timeout_s: float = 120.0  # a task that no node starts within it fails its instance


class RegistryConfig(_Section):
    mirrors: dict[str, str] = {}


class SchedulerConfig(_Section):
    tick_interval_s: float = 2.0
    startup_deadline_s: float = 600.0
    health_interval_s: float = 5.0
    unhealthy_threshold: int = 3
    restart_backoff_initial_s: float = 1.0
    restart_backoff_max_s: float = 300.0
    deploy_attempts: int = 3
    scale_down_idle_s: float = 30.0
    warm_pool_s: float = 0.0


class InvocationConfig(_Section):
    default_poll_seconds: int = 60
    max_poll_seconds: int = 3600
    request_ttl_s: float = 3600.0
    max_queue_per_function: int = 10000
    max_response_bytes: int = 5242880
    # I5 by host: `{function-id}.invocation.<host_domain>` (and `{version-id}.{function-id}...`)
    # in the Host header routes any path to the function; empty: off
    host_domain: str = "localhost"
    # the gRPC invocation endpoint (NVCF's grpc.nvcf.nvidia.com:443) on server.host; 0: off
    grpc_port: int = 0


class AssetsConfig(_Section):
    upload_url_ttl_s: float = 3600.0
    max_asset_bytes: int = 5 * 1024**3
    asset_ttl_s: float = 86400.0
    download_url_ttl_s: float = 86400.0
    sweep_interval_s: float = 60.0


class ModelsConfig(_Section):
    default_image: str = "nvcr.io/nvidia/tritonserver:24.08-py3"
    default_args: str = (
        "tritonserver --model-repository /config/models --http-header-forward-pattern NVCF-.*"
    )
    max_push_bytes: int = 100 * 1024**3


class TelemetryConfig(_Section):
    enabled: bool = True
    scan_interval_s: float = 5.0
    metrics_interval_s: float = 60.0
    flush_interval_s: float = 2.0
    batch_max_records: int = 512
    max_buffered_records: int = 10000
    export_timeout_s: float = 10.0
    retry_attempts: int = 5
    retry_backoff_initial_s: float = 1.0
    retry_backoff_max_s: float = 30.0


class WebhooksConfig(_Section):
    allow: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    secret: str = ""
    timeout_s: float = 10.0
    max_attempts: int = 10
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0


class IdempotencyConfig(_Section):
    ttl_s: float = 86400.0


class ConsoleConfig(_Section):
    enabled: bool = True


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    account: AccountConfig = msgspec.field(default_factory=AccountConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    gpus: GpusConfig = msgspec.field(default_factory=GpusConfig)
    resources: ResourcesConfig = msgspec.field(default_factory=ResourcesConfig)
    docker: DockerConfig = msgspec.field(default_factory=DockerConfig)
    swarm: SwarmConfig = msgspec.field(default_factory=SwarmConfig)
    registry: RegistryConfig = msgspec.field(default_factory=RegistryConfig)
    scheduler: SchedulerConfig = msgspec.field(default_factory=SchedulerConfig)
    invocation: InvocationConfig = msgspec.field(default_factory=InvocationConfig)
    assets: AssetsConfig = msgspec.field(default_factory=AssetsConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    models: ModelsConfig = msgspec.field(default_factory=ModelsConfig)
    console: ConsoleConfig = msgspec.field(default_factory=ConsoleConfig)
    webhooks: WebhooksConfig = msgspec.field(default_factory=WebhooksConfig)
    idempotency: IdempotencyConfig = msgspec.field(default_factory=IdempotencyConfig)

    @property
    def data_path(self) -> Path:
        """data_dir as an absolute path (bind mounts need one): relative to the start dir."""
        return Path(self.store.data_dir).expanduser().resolve()

    @property
    def secrets_path(self) -> Path:
        """Where each instance's secrets.json is written for its /var/secrets mount.

        A memory-backed folder outside data_dir, so that no secret value lies in plain text on
        disk or in a backup of data_dir: docker.secrets_dir when set, else systemd's
        $RUNTIME_DIRECTORY (the unit's RuntimeDirectory=), else /run/nvcf-lite for root, else
        $XDG_RUNTIME_DIR/nvcf-lite, else /dev/shm/nvcf-lite-<uid>.
        """
        if self.docker.secrets_dir:
            return Path(self.docker.secrets_dir).expanduser().resolve()
        return default_secrets_path(os.environ, os.getuid())


def default_secrets_path(environ: Mapping[str, str], uid: int) -> Path:
    """The secrets folder when docker.secrets_dir is empty (see Config.secrets_path)."""
    if environ.get("RUNTIME_DIRECTORY"):
        return Path(environ["RUNTIME_DIRECTORY"].split(":")[0]) / "secrets"
    if uid == 0:
        return Path("/run/nvcf-lite/secrets")
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "nvcf-lite" / "secrets"
    return Path(f"/dev/shm/nvcf-lite-{uid}/secrets")


def _section_types() -> dict[str, type[_Section]]:
    hints = msgspec.structs.fields(Config)
    return {f.name: f.type for f in hints}


def _env_value(raw: str, field_type: Any) -> Any:
    """Environment strings become typed values; lists and tables are given as JSON."""
    if field_type is str:
        return raw
    if raw.lstrip().startswith(("[", "{")):
        return msgspec.json.decode(raw)
    return raw


def _merge_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    sections = _section_types()
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or section not in sections:
            raise ConfigError(
                f"unknown configuration variable {name} (expected {ENV_PREFIX}<SECTION>__<KEY>)"
            )
        fields = {f.name: f.type for f in msgspec.structs.fields(sections[section])}
        if key not in fields:
            raise ConfigError(f"unknown configuration key [{section}] {key} (from {name})")
        data.setdefault(section, {})[key] = _env_value(raw, fields[key])


class ConfigSource(msgspec.Struct, frozen=True):
    """Which config file a command reads (None: built-in defaults) and why that one."""

    path: Path | None
    origin: str

    def describe(self) -> str:
        return (
            f"{self.path.absolute()} ({self.origin})" if self.path else "none (built-in defaults)"
        )


def find_config(
    arg: str | None,
    environ: Mapping[str, str],
    *,
    cwd: Path | None = None,
) -> ConfigSource:
    """The config file, looked for the way daemons do: --config, then $NVCF_LITE_CONFIG, then
    the installed service's file, then ./config.toml. The first two must exist (load_config says
    so); the last two are used only when they do."""
    if arg:
        return ConfigSource(Path(arg), "--config")
    if environ.get("NVCF_LITE_CONFIG"):
        return ConfigSource(Path(environ["NVCF_LITE_CONFIG"]), "$NVCF_LITE_CONFIG")
    system_config = Path(environ.get("NVCF_LITE_SYSTEM_CONFIG") or SYSTEM_CONFIG)
    if _readable(system_config):
        return ConfigSource(system_config, "installed service config")
    local = (cwd or Path.cwd()) / "config.toml"
    if local.is_file():
        return ConfigSource(local, "./config.toml")
    return ConfigSource(None, "built-in defaults")


def _readable(path: Path) -> bool:
    """Whether the installed service's config is there to use; ConfigError when it (or its
    folder) is there but this user cannot read it: falling back to ./config.toml or the
    defaults then would run with settings the operator never wrote."""
    try:
        with path.open("rb"):
            return True
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return False
    except PermissionError:
        raise ConfigError(_unreadable(path)) from None


def _unreadable(path: Path) -> str:
    return (
        f"cannot read config file {path}: permission denied; run as the service's user or "
        "root (or pass --config)"
    )


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config. `path=None` reads nothing from disk (defaults + environment)."""
    environ = environ or {}
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p} does not exist") from exc
        except PermissionError:
            raise ConfigError(_unreadable(p)) from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
    _merge_env(data, environ)
    try:
        config = msgspec.convert(data, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_describe(exc)}") from exc
    _check(config)
    return config


def _describe(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if text.startswith("Object contains unknown field"):
        field, _, where = text.partition(" - at ")
        key = field.split("`")[1] if "`" in field else field
        loc = where.strip("`").removeprefix("$").lstrip(".")
        return f"unknown key {loc + '.' if loc else ''}{key}"
    return text


_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def _check_invocation_routes(config: Config) -> None:
    inv = config.invocation
    if inv.host_domain and not _DOMAIN.match(inv.host_domain):
        raise ConfigError(
            f"invocation.host_domain {inv.host_domain!r} must be a lower-case DNS name"
            ' (e.g. "localhost" or "api.nvcf.nvidia.com"), or empty'
        )
    if not 0 <= inv.grpc_port <= 65535:
        raise ConfigError("invocation.grpc_port must be 0 (off) or a TCP port, 1..65535")
    if inv.grpc_port and inv.grpc_port == config.server.port:
        raise ConfigError("invocation.grpc_port must differ from server.port")


def _check(config: Config) -> None:
    if config.server.log_format not in ("text", "json"):
        raise ConfigError('server.log_format must be "text" or "json"')
    if config.server.log_level.lower() not in ("debug", "info", "warning", "error", "critical"):
        raise ConfigError("server.log_level must be debug, info, warning, error or critical")
    if config.docker.failed_containers_kept < 0:
        raise ConfigError("docker.failed_containers_kept must be >= 0")
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError("server.tls_cert and server.tls_key must be set together")
    if not 1 <= config.server.backlog <= 65535:
        raise ConfigError("server.backlog must be 1..65535")
    if config.server.max_requests_in_flight < 1:
        raise ConfigError("server.max_requests_in_flight must be >= 1")
    if config.invocation.default_poll_seconds < 1:
        raise ConfigError("invocation.default_poll_seconds must be >= 1")
    _check_invocation_routes(config)
    assets = config.assets
    if min(assets.upload_url_ttl_s, assets.asset_ttl_s, assets.download_url_ttl_s) <= 0:
        raise ConfigError("assets: upload_url_ttl_s, asset_ttl_s, download_url_ttl_s must be > 0")
    if assets.max_asset_bytes < 1 or assets.sweep_interval_s <= 0:
        raise ConfigError("assets: max_asset_bytes must be >= 1 and sweep_interval_s > 0")
    if config.models.max_push_bytes < 1 or not config.models.default_image.strip():
        raise ConfigError("models: max_push_bytes must be >= 1 and default_image not empty")
    if not 1 <= config.auth.token_ttl_s <= 30 * 24 * 3600:
        raise ConfigError("auth.token_ttl_s must be 1..2592000 (30 days)")
    tele = config.telemetry
    intervals = (tele.scan_interval_s, tele.metrics_interval_s, tele.flush_interval_s)
    if min(*intervals, tele.export_timeout_s, tele.retry_backoff_initial_s) <= 0:
        raise ConfigError("telemetry: the intervals, export_timeout_s and backoffs must be > 0")
    if min(tele.batch_max_records, tele.max_buffered_records, tele.retry_attempts) < 1:
        raise ConfigError(
            "telemetry: batch_max_records, max_buffered_records, retry_attempts must be >= 1"
        )
    for prefix, target in config.registry.mirrors.items():
        if not prefix.strip() or not target.strip():
            raise ConfigError(f"registry.mirrors: {prefix!r} = {target!r}: both must be non-empty")
    if config.docker.runtime not in ("docker", "swarm"):
        raise ConfigError(f"docker.runtime: {config.docker.runtime!r} is not docker or swarm")
    if config.docker.runtime == "swarm" and config.scheduler.warm_pool_s > 0:
        raise ConfigError("scheduler.warm_pool_s must be 0 with docker.runtime swarm (no pause)")
    for gpu in config.gpus.simulated:
        if gpu.count < 1:
            raise ConfigError(f"gpus.simulated {gpu.name}: count must be >= 1")
    _check_resources(config.resources)
    _check_webhooks(config.webhooks, config.idempotency)


def _check_webhooks(hooks: WebhooksConfig, idempotency: IdempotencyConfig) -> None:
    import ipaddress  # only here: the rest of config needs no address parsing

    for entry in hooks.allow:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"webhooks.allow: {entry!r} is not an IP network") from None
    if min(hooks.timeout_s, hooks.backoff_initial_s, hooks.backoff_max_s) <= 0:
        raise ConfigError("webhooks: timeout_s, backoff_initial_s, backoff_max_s must be > 0")
    if hooks.max_attempts < 1:
        raise ConfigError("webhooks.max_attempts must be >= 1")
    if idempotency.ttl_s <= 0:
        raise ConfigError("idempotency.ttl_s must be > 0")


def _check_resources(r: ResourcesConfig) -> None:
    if min(r.cpu_cores, r.memory_mb, r.reserved_cpu_cores, r.reserved_memory_mb) < 0:
        raise ConfigError(
            "resources: cpu_cores, memory_mb, reserved_cpu_cores, reserved_memory_mb must be >= 0"
        )
    if r.shm_size_mb < 1:
        raise ConfigError("resources.shm_size_mb must be >= 1")
    seen: set[str] = set()
    for t in r.instance_types:
        if not t.name or t.name.lower() in seen:
            raise ConfigError(f"resources.instance_types: name {t.name!r} is empty or repeated")
        seen.add(t.name.lower())
        # Docker's own floors: 0.01 CPU, 6 MiB of memory
        floors = ((t.cpu_cores, 0.01), (t.memory_mb, 6), (t.shm_size_mb, 1))
        if any(value is not None and value < floor for value, floor in floors):
            raise ConfigError(
                f"resources.instance_types {t.name}: cpu_cores must be >= 0.01, memory_mb >= 6 "
                "and shm_size_mb >= 1"
            )


def public_url(config: Config) -> str:
    """The base URL clients reach this server on (used in signed URLs)."""
    if config.server.public_url:
        return config.server.public_url.rstrip("/")
    scheme = "https" if config.server.tls_cert else "http"
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{config.server.port}"
