"""Small typed CRI v1 helpers over the real stubs of ``container-runtime-interface-api``.

Errors are the stubs' own ``grpc.RpcError`` (its ``details()`` carries containerd's message, which is
what NRI-related tests assert on).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import grpc
from cri_api.v1 import api_pb2, api_pb2_grpc

from .config import BUSYBOX_IMAGE

RuntimeStub = api_pb2_grpc.RuntimeServiceStub
DEFAULT_TIMEOUT = 30.0
# Fixed namespace for uids derived from pod names, so pod_config() can rebuild a pod's config.
_UID_NAMESPACE = uuid.UUID("3f0a8c2e-5b1d-4c7e-9a6f-1d2e3f4a5b6c")


def pod_config(
    name: str,
    *,
    uid: str | None = None,
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
    host_network: bool = True,
) -> api_pb2.PodSandboxConfig:
    """The sandbox config :func:`run_pod` sends; the same arguments give the same config.

    Without ``uid`` it is derived from namespace and name.
    """
    mode = api_pb2.NODE if host_network else api_pb2.POD
    return api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(
            name=name,
            uid=uid or str(uuid.uuid5(_UID_NAMESPACE, f"{namespace}/{name}")),
            namespace=namespace,
            attempt=0,
        ),
        # Without a private UTS namespace containerd refuses to set a hostname.
        hostname="" if host_network else name,
        annotations=dict(annotations or {}),
        linux=api_pb2.LinuxPodSandboxConfig(
            security_context=api_pb2.LinuxSandboxSecurityContext(
                namespace_options=api_pb2.NamespaceOption(network=mode)
            )
        ),
    )


def run_pod(
    rt: RuntimeStub,
    name: str,
    *,
    uid: str | None = None,
    annotations: Mapping[str, str] | None = None,
    host_network: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """RunPodSandbox; returns the sandbox id. Host-network pods need no CNI."""
    config = pod_config(name, uid=uid, annotations=annotations, host_network=host_network)
    resp: api_pb2.RunPodSandboxResponse = rt.RunPodSandbox(
        api_pb2.RunPodSandboxRequest(config=config), timeout=timeout
    )
    return resp.pod_sandbox_id


def create_container(
    rt: RuntimeStub,
    pod_id: str,
    pod_config: api_pb2.PodSandboxConfig,
    name: str,
    *,
    image: str = BUSYBOX_IMAGE,
    command: Sequence[str] = ("sleep", "3600"),
    annotations: Mapping[str, str] | None = None,
    ro_mounts: Mapping[str, str] | None = None,
    add_capabilities: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """CreateContainer in the pod; returns the container id.

    ``ro_mounts`` maps container paths to host paths bound read-only; ``add_capabilities`` names
    capabilities without the CAP_ prefix (e.g. IPC_LOCK)."""
    config = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name, attempt=0),
        image=api_pb2.ImageSpec(image=image),
        command=list(command),
        annotations=dict(annotations or {}),
        mounts=[
            api_pb2.Mount(container_path=dst, host_path=src, readonly=True)
            for dst, src in (ro_mounts or {}).items()
        ],
        linux=api_pb2.LinuxContainerConfig(
            security_context=api_pb2.LinuxContainerSecurityContext(
                capabilities=api_pb2.Capability(add_capabilities=list(add_capabilities))
            )
        ),
    )
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config)
    resp: api_pb2.CreateContainerResponse = rt.CreateContainer(req, timeout=timeout)
    return resp.container_id


def start_container(rt: RuntimeStub, container_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=container_id), timeout=timeout)


def exec_sync(
    rt: RuntimeStub, container_id: str, cmd: Sequence[str], *, timeout: int = 10
) -> tuple[int, str, str]:
    """Runs ``cmd`` in the container; returns (exit code, stdout, stderr)."""
    req = api_pb2.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
    resp: api_pb2.ExecSyncResponse = rt.ExecSync(req, timeout=timeout + 5)
    return resp.exit_code, resp.stdout.decode(errors="replace"), resp.stderr.decode(errors="replace")


def stop_and_remove_pod(rt: RuntimeStub, pod_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Stops the pod with its containers and removes it; a pod already gone is fine."""
    try:
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=timeout)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
    rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=timeout)
