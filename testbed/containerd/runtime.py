"""The containerd releases the test bed runs, each unpacked by setup.sh into its own prefix (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vm_side.runtime_model import NRI_V0_6_1, NRI_V0_8_0, NriVersion

_REPO = Path(__file__).resolve().parents[2]
_BUILD = _REPO / "build"


@dataclass(frozen=True)
class Runtime:
    """One containerd release of the test bed: where setup.sh put it and what it speaks."""

    name: str  # the test id, e.g. "containerd-2.1"
    version: str  # the release series; `containerd --version` starts with it
    suite: str  # the Debian suite setup.sh takes it from
    prefix: Path
    nri_version: NriVersion  # the NRI module it is built with
    config_version: int  # the config.toml schema it reads natively (2.x: 3)
    # containerd's own bug containerd/containerd#13355 and #13609 (fixed in 2.2.6; 2.1 is end of life):
    # a pod whose NRI RunPodSandbox fails keeps its shim, pause task and container record, and the next
    # start of containerd exits ("failed to recover state: failed to reserve sandbox name").
    leaks_failed_sandboxes: bool = False

    @property
    def nri_snippet(self) -> Path:
        """The containerd config snippet shipped for users of this release (config/containerd/)."""
        name = "nri.toml" if self.config_version == 2 else f"nri-v{self.config_version}.toml"
        return _REPO / "config/containerd" / name

    @property
    def splits_synchronize(self) -> bool:
        """NRI v0.8+ splits a Synchronize that would exceed ttrpc's 4 MiB into parts (more = true)."""
        return self.nri_version >= NRI_V0_8_0

    @property
    def synchronizes_preregistered(self) -> bool:
        """NRI v0.8+ also sends pre-registered plugins a Synchronize; v0.6.1 only external ones."""
        return self.nri_version >= NRI_V0_8_0


# The same prefixes and suites are in setup.sh.
CONTAINERD_1_7 = Runtime("containerd-1.7", "1.7", "trixie", _BUILD / "containerd", NRI_V0_6_1, 2)
CONTAINERD_2_1 = Runtime(
    "containerd-2.1", "2.1", "forky", _BUILD / "containerd-2.1", NRI_V0_8_0, 3, leaks_failed_sandboxes=True
)
RUNTIMES = (CONTAINERD_1_7, CONTAINERD_2_1)
