"""Where a test bed containerd instance keeps its files, and its config.toml and CNI config (pure)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

# Unix socket paths are limited to 108 bytes including the terminating NUL (sockaddr_un.sun_path).
_MAX_SOCKET_PATH = 107
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
K8S_NAMESPACE = "k8s.io"
PAUSE_IMAGE = "localhost/test/pause:1.0"
BUSYBOX_IMAGE = "localhost/test/busybox:1.0"
# Plugins that only add noise or probe for storage this machine does not have.
_DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
)


@dataclass(frozen=True)
class Layout:
    """The files of one instance: binaries and images shared in ``prefix``, the rest per instance."""

    prefix: Path
    name: str

    def __post_init__(self) -> None:
        if not self.prefix.is_absolute():
            raise ValueError(f"containerd prefix must be absolute: {self.prefix}")
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(f"instance name {self.name!r} must match {_NAME_RE.pattern}")
        for sock in (self.cri_socket, self.ttrpc_socket, self.nri_socket):
            if len(str(sock)) > _MAX_SOCKET_PATH:
                raise ValueError(
                    f"socket path {sock} is longer than {_MAX_SOCKET_PATH} bytes; use a shorter prefix"
                )

    @property
    def fs(self) -> Path:
        return self.prefix / "fs"

    @property
    def bin_dirs(self) -> tuple[Path, ...]:
        return (self.fs / "usr/bin", self.fs / "usr/sbin")

    @property
    def containerd_bin(self) -> Path:
        return self.fs / "usr/bin/containerd"

    @property
    def ctr_bin(self) -> Path:
        return self.fs / "usr/bin/ctr"

    @property
    def runc_bin(self) -> Path:
        return self.fs / "usr/sbin/runc"

    @property
    def cni_bin_dir(self) -> Path:
        return self.prefix / "cni/bin"

    @property
    def images(self) -> dict[str, Path]:
        return {
            PAUSE_IMAGE: self.prefix / "images/pause.tar",
            BUSYBOX_IMAGE: self.prefix / "images/busybox.tar",
        }

    @property
    def dir(self) -> Path:
        return self.prefix / "instances" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def netns_dir(self) -> Path:
        """Where pod netns files are bind-mounted (``netns_mounts_under_state_dir``)."""
        return self.state / "io.containerd.grpc.v1.cri/netns"

    def sandbox_dir(self, sandbox_id: str) -> Path:
        """CRI's folder of one pod sandbox (its /dev/shm is mounted inside)."""
        return self.state / "io.containerd.grpc.v1.cri/sandboxes" / sandbox_id

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"

    @property
    def cri_socket(self) -> Path:
        return self.dir / "run/containerd.sock"

    @property
    def ttrpc_socket(self) -> Path:
        return self.dir / "run/containerd.sock.ttrpc"

    @property
    def nri_socket(self) -> Path:
        return self.dir / "run/nri.sock"

    @property
    def config_path(self) -> Path:
        return self.dir / "etc/config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.dir / "etc/cni"

    @property
    def default_nri_plugin_path(self) -> Path:
        return self.dir / "etc/nri/plugins"

    @property
    def default_nri_plugin_config_path(self) -> Path:
        return self.dir / "etc/nri/conf.d"

    @property
    def cdi_spec_dir(self) -> Path:
        """The CDI spec folder containerd 2.x reads (1.7's NRI has no CDI devices)."""
        return self.dir / "etc/cdi"

    @property
    def log_path(self) -> Path:
        return self.dir / "containerd.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / "containerd.pid"

    @property
    def cni_network(self) -> str:
        """The CNI network name; libcni names its cache files after it, so it names the instance."""
        return f"vfhotplug-testbed-{self.name}"


@dataclass(frozen=True)
class NriOptions:
    plugin_path: Path
    plugin_config_path: Path
    request_timeout: str = "2s"
    registration_timeout: str = "5s"
    disable_connections: bool = False


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _render(tables: dict[str, dict[str, object]]) -> str:
    lines = []
    for table, keys in tables.items():
        if table:
            lines.append(f"\n[{table}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


def render_config(layout: Layout, nri: NriOptions, config_version: int = 2) -> str:
    """config.toml keeping every root, state dir and socket inside the instance, in the schema the
    release reads: version 2 (containerd 1.7) or version 3 (2.x, whose CRI is split into image and
    runtime plugins with their own ids)."""
    if config_version not in (2, 3):
        raise ValueError(f"no containerd config version {config_version}; the test bed writes 2 or 3")
    common: dict[str, dict[str, object]] = {
        "": {
            "version": config_version,
            "root": layout.root,
            "state": layout.state,
            "disabled_plugins": _DISABLED_PLUGINS,
        },
        "grpc": {"address": layout.cri_socket},
        "ttrpc": {"address": layout.ttrpc_socket},
        "debug": {"address": ""},
        "metrics": {"address": ""},
        # Otherwise containerd installs into the system-wide opt folder.
        'plugins."io.containerd.internal.v1.opt"': {"path": layout.dir / "opt"},
        'plugins."io.containerd.nri.v1.nri"': {
            "disable": False,
            "disable_connections": nri.disable_connections,
            "socket_path": layout.nri_socket,
            "plugin_path": nri.plugin_path,
            "plugin_config_path": nri.plugin_config_path,
            "plugin_registration_timeout": nri.registration_timeout,
            "plugin_request_timeout": nri.request_timeout,
        },
    }
    cri = _cri_v2(layout) if config_version == 2 else _cri_v3(layout)
    return _render({**common, **cri})


# The CRI runtime keys both schemas share.
_RUNTIME_KEYS: dict[str, object] = {
    # Root in these VMs lacks CAP_SYS_RESOURCE: runc could not raise oom_score_adj.
    "restrict_oom_score_adj": True,
    "netns_mounts_under_state_dir": True,
    "disable_apparmor": True,
    "enable_selinux": False,
}


def _runc_tables(runtime_plugin: str, layout: Layout) -> dict[str, dict[str, object]]:
    runc = f"{runtime_plugin}.containerd.runtimes.runc"
    return {
        runc: {"runtime_type": "io.containerd.runc.v2"},
        f"{runc}.options": {
            "BinaryName": layout.runc_bin,
            # Otherwise runc keeps its state in /run/containerd/runc, shared by all instances.
            "Root": layout.runc_root,
            "SystemdCgroup": False,
        },
    }


_STREAM_SERVER = {"stream_server_address": "127.0.0.1", "stream_server_port": "0"}


def _cri_v2(layout: Layout) -> dict[str, dict[str, object]]:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return {
        cri: {"sandbox_image": PAUSE_IMAGE, **_RUNTIME_KEYS, **_STREAM_SERVER},
        f"{cri}.containerd": {"snapshotter": "overlayfs", "default_runtime_name": "runc"},
        **_runc_tables(cri, layout),
        f"{cri}.cni": {"bin_dir": layout.cni_bin_dir, "conf_dir": layout.cni_conf_dir, "max_conf_num": 1},
    }


def _cri_v3(layout: Layout) -> dict[str, dict[str, object]]:
    # Plugin ids from containerd 2.1's own `containerd config default`.
    images = 'plugins."io.containerd.cri.v1.images"'
    runtime = 'plugins."io.containerd.cri.v1.runtime"'
    return {
        images: {"snapshotter": "overlayfs"},
        f"{images}.pinned_images": {"sandbox": PAUSE_IMAGE},
        # CDI is on by default in 2.x; the instance reads only its own spec folder, not /etc/cdi.
        runtime: {**_RUNTIME_KEYS, "enable_cdi": True, "cdi_spec_dirs": (layout.cdi_spec_dir,)},
        f"{runtime}.containerd": {"default_runtime_name": "runc"},
        **_runc_tables(runtime, layout),
        f"{runtime}.cni": {
            "bin_dirs": (layout.cni_bin_dir,),
            "conf_dir": layout.cni_conf_dir,
            "max_conf_num": 1,
        },
        'plugins."io.containerd.grpc.v1.cri"': dict(_STREAM_SERVER),
    }


def render_cni_conflist(layout: Layout) -> str:
    """The network for pods with their own netns: the test bed's veth plugin (see cni-veth)."""
    conf = {"cniVersion": "1.0.0", "name": layout.cni_network, "plugins": [{"type": "cni-veth"}]}
    return json.dumps(conf, indent=2) + "\n"
