"""Our CDI spec files in a runtime's CDI folder: one `vfhotplug.io-vf-<pod uid>.json` per pod.

Runtimes (containerd 2.x, podman) read every `*.json` and `*.yaml` in their CDI folders, default
`/etc/cdi` and `/var/run/cdi`, so a spec appears whole or not at all (temp file, fsync, rename) and the
temp file's name (`.<name>.tmp`) is one no runtime reads. Files of other vendors are never touched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from pathlib import Path

from vm_side.cdi_spec import CLASS, VENDOR, CdiSpec, spec_to_json, validate
from vm_side.pod_record import check_uid
from vm_side.record_store import write_atomic

log = logging.getLogger(__name__)

_PREFIX = f"{VENDOR}-{CLASS}-"  # the CDI convention: <vendor>-<class>[-<more>].json
_SUFFIX = ".json"


class CdiStore:
    """The pods' CDI specs in one CDI spec folder (created on first write)."""

    def __init__(self, spec_dir: Path) -> None:
        self.dir = spec_dir

    def path(self, pod_uid: str) -> Path:
        return self.dir / f"{_PREFIX}{check_uid(pod_uid)}{_SUFFIX}"

    def write(self, pod_uid: str, spec: CdiSpec) -> Path:
        """Validates `spec` and replaces the pod's spec file with it atomically.

        Raises:
            CdiSpecError: the spec breaks a CDI rule (nothing is written).
            OSError: the folder cannot be written (e.g. not root, read-only).
        """
        validate(spec)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(pod_uid)
        write_atomic(path, json.dumps(spec_to_json(spec), indent=1, sort_keys=True))
        return path

    def remove(self, pod_uid: str) -> None:
        """Idempotent: a pod without a spec (never had a dpdk VF, or removed already) is fine."""
        self.path(pod_uid).unlink(missing_ok=True)

    def pod_uids(self) -> list[str]:
        """The pods that have a spec file here."""
        uids = []
        for p in self._ours():
            uid = p.name[len(_PREFIX) : -len(_SUFFIX)]
            try:
                uids.append(check_uid(uid))
            except ValueError:  # not a name we write: leave it alone
                log.warning("CDI spec %s is not one of ours (no pod uid in its name); left alone", p)
        return sorted(uids)

    def reconcile(self, keep: Collection[str]) -> list[str]:
        """At start: removes the specs of pods not in `keep` (pods with a record) and temp files left by a
        crash mid-write; returns the pod uids whose specs were removed."""
        for tmp in self.dir.glob(f".{_PREFIX}*{_SUFFIX}.tmp"):
            tmp.unlink(missing_ok=True)
        stale = [uid for uid in self.pod_uids() if uid not in keep]
        for uid in stale:
            log.warning("CDI spec %s belongs to no recorded pod; removed", self.path(uid))
            self.remove(uid)
        return stale

    def _ours(self) -> list[Path]:
        return [p for p in self.dir.glob(f"{_PREFIX}*{_SUFFIX}") if p.is_file()]
