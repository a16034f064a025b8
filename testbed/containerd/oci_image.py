"""Single-layer OCI image archives for the test bed, built locally so no registry is involved.

Run as a script by setup.sh (standard library only, so it works before any virtualenv exists):

    python3 testbed/containerd/oci_image.py --ref localhost/test/pause:1.0 --out pause.tar \\
        --entrypoint /pause --file /pause=build/containerd/pause

The output is deterministic (fixed mtimes, owners and order), so re-importing an unchanged image
is a no-op for containerd.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
# containerd's `ctr images import` names the image after this annotation of the index entry.
CONTAINERD_NAME_ANNOTATION = "io.containerd.image.name"
OCI_REF_ANNOTATION = "org.opencontainers.image.ref.name"
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class LayerEntry:
    """One path in the layer: a copy of a host file (``source``) or a symlink (``link``)."""

    path: PurePosixPath
    source: Path | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        if not self.path.is_absolute():
            raise ValueError(f"layer path must be absolute: {self.path}")
        if (self.source is None) == (self.link is None):
            raise ValueError(f"layer entry {self.path} needs exactly one of source or link")


@dataclass(frozen=True)
class ImageSpec:
    ref: str
    entries: tuple[LayerEntry, ...]
    entrypoint: tuple[str, ...]
    env: tuple[str, ...] = ("PATH=/bin:/usr/bin",)
    empty_dirs: tuple[PurePosixPath, ...] = ()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "root", "root"
    return info


def layer_tar(entries: Sequence[LayerEntry], empty_dirs: Sequence[PurePosixPath] = ()) -> bytes:
    """An uncompressed layer holding the entries, their parent folders and the empty folders."""
    paths = [e.path for e in entries]
    if dupes := sorted({p for p in paths if paths.count(p) > 1}):
        raise ValueError(f"layer paths given more than once: {', '.join(map(str, dupes))}")
    dirs = {parent for e in entries for parent in e.path.parents if parent != PurePosixPath("/")}
    dirs.update(empty_dirs)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(_tarinfo(str(d)[1:], tarfile.DIRTYPE, 0o755))
        for e in sorted(entries, key=lambda e: e.path):
            name = str(e.path)[1:]
            if e.link is not None:
                info = _tarinfo(name, tarfile.SYMTYPE, 0o777)
                info.linkname = e.link
                tar.addfile(info)
            elif e.source is not None:
                data = e.source.read_bytes()
                tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
    return buf.getvalue()


def image_blobs(spec: ImageSpec, layer: bytes) -> tuple[dict[str, bytes], dict[str, object]]:
    """The content-addressed blobs (digest -> bytes) and the index.json of the image."""
    config = {
        "architecture": _GOARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {"Entrypoint": list(spec.entrypoint), "Env": list(spec.env)},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": _digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": _digest(layer), "size": len(layer)}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [
            {
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": _digest(manifest_bytes),
                "size": len(manifest_bytes),
                "annotations": {
                    CONTAINERD_NAME_ANNOTATION: spec.ref,
                    OCI_REF_ANNOTATION: spec.ref.rpartition(":")[2],
                },
            }
        ],
    }
    blobs = {_digest(b): b for b in (layer, config_bytes, manifest_bytes)}
    return blobs, index


def write_archive(spec: ImageSpec, out: Path) -> None:
    """Writes the OCI image layout archive for ``spec`` to ``out`` (atomically)."""
    blobs, index = image_blobs(spec, layer_tar(spec.entries, spec.empty_dirs))
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    files.update({f"blobs/sha256/{d.removeprefix('sha256:')}": b for d, b in blobs.items()})
    tmp = out.with_name(out.name + ".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
        for name in sorted(files):
            tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(files[name])), io.BytesIO(files[name]))
    os.replace(tmp, out)


def _pair(text: str) -> tuple[PurePosixPath, str]:
    path, sep, value = text.partition("=")
    if not sep or not path.startswith("/") or not value:
        raise argparse.ArgumentTypeError(f"expected /path/in/image=VALUE, got {text!r}")
    return PurePosixPath(path), value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a single-layer OCI image archive.")
    parser.add_argument("--ref", required=True, help="image name, e.g. localhost/test/pause:1.0")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--entrypoint", required=True, nargs="+")
    parser.add_argument("--file", type=_pair, action="append", default=[], help="/path=HOST_FILE")
    parser.add_argument("--symlink", type=_pair, action="append", default=[], help="/path=TARGET")
    parser.add_argument("--dir", type=PurePosixPath, action="append", default=[], help="empty folder")
    args = parser.parse_args(argv)
    entries = [LayerEntry(p, source=Path(v)) for p, v in args.file]
    entries += [LayerEntry(p, link=v) for p, v in args.symlink]
    for entry in entries:
        if entry.source is not None and not entry.source.is_file():
            parser.error(f"{entry.path}: host file {entry.source} does not exist; run setup.sh again")
    spec = ImageSpec(args.ref, tuple(entries), tuple(args.entrypoint), empty_dirs=tuple(args.dir))
    write_archive(spec, args.out)


if __name__ == "__main__":
    main()
