from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VfRequest(_message.Message):
    __slots__ = ("pool", "count", "mac", "vlan", "qos", "trust", "spoofchk", "min_tx_rate_mbps", "max_tx_rate_mbps", "numa")
    POOL_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    QOS_FIELD_NUMBER: _ClassVar[int]
    TRUST_FIELD_NUMBER: _ClassVar[int]
    SPOOFCHK_FIELD_NUMBER: _ClassVar[int]
    MIN_TX_RATE_MBPS_FIELD_NUMBER: _ClassVar[int]
    MAX_TX_RATE_MBPS_FIELD_NUMBER: _ClassVar[int]
    NUMA_FIELD_NUMBER: _ClassVar[int]
    pool: str
    count: int
    mac: str
    vlan: int
    qos: int
    trust: bool
    spoofchk: bool
    min_tx_rate_mbps: int
    max_tx_rate_mbps: int
    numa: int
    def __init__(self, pool: _Optional[str] = ..., count: _Optional[int] = ..., mac: _Optional[str] = ..., vlan: _Optional[int] = ..., qos: _Optional[int] = ..., trust: _Optional[bool] = ..., spoofchk: _Optional[bool] = ..., min_tx_rate_mbps: _Optional[int] = ..., max_tx_rate_mbps: _Optional[int] = ..., numa: _Optional[int] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("pod_uid", "pod_name", "requests", "request_id", "deadline_s")
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    pod_uid: str
    pod_name: str
    requests: _containers.RepeatedCompositeFieldContainer[VfRequest]
    request_id: str
    deadline_s: float
    def __init__(self, pod_uid: _Optional[str] = ..., pod_name: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[VfRequest, _Mapping]]] = ..., request_id: _Optional[str] = ..., deadline_s: _Optional[float] = ...) -> None: ...

class GrantedVf(_message.Message):
    __slots__ = ("lease_id", "host_pci", "guest_pci", "mac", "vlan", "pool", "numa", "request_index")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_PCI_FIELD_NUMBER: _ClassVar[int]
    GUEST_PCI_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    NUMA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_INDEX_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    host_pci: str
    guest_pci: str
    mac: str
    vlan: int
    pool: str
    numa: int
    request_index: int
    def __init__(self, lease_id: _Optional[str] = ..., host_pci: _Optional[str] = ..., guest_pci: _Optional[str] = ..., mac: _Optional[str] = ..., vlan: _Optional[int] = ..., pool: _Optional[str] = ..., numa: _Optional[int] = ..., request_index: _Optional[int] = ...) -> None: ...

class AttachReply(_message.Message):
    __slots__ = ("vfs",)
    VFS_FIELD_NUMBER: _ClassVar[int]
    vfs: _containers.RepeatedCompositeFieldContainer[GrantedVf]
    def __init__(self, vfs: _Optional[_Iterable[_Union[GrantedVf, _Mapping]]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("pod_uid", "lease_ids", "request_id", "vm")
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    LEASE_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    pod_uid: str
    lease_ids: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    vm: str
    def __init__(self, pod_uid: _Optional[str] = ..., lease_ids: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., vm: _Optional[str] = ...) -> None: ...

class ReleaseReply(_message.Message):
    __slots__ = ("released", "quarantined")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    released: _containers.RepeatedScalarFieldContainer[str]
    quarantined: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, released: _Optional[_Iterable[str]] = ..., quarantined: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("live_pod_uids",)
    LIVE_POD_UIDS_FIELD_NUMBER: _ClassVar[int]
    live_pod_uids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, live_pod_uids: _Optional[_Iterable[str]] = ...) -> None: ...

class SyncReply(_message.Message):
    __slots__ = ("released", "quarantined")
    RELEASED_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    released: _containers.RepeatedScalarFieldContainer[str]
    quarantined: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, released: _Optional[_Iterable[str]] = ..., quarantined: _Optional[_Iterable[str]] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "state", "vm", "pool", "pf", "vf_index", "host_pci", "guest_pci", "pod_uid", "pod_name", "mac", "vlan", "numa", "since", "reason")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VM_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    PF_FIELD_NUMBER: _ClassVar[int]
    VF_INDEX_FIELD_NUMBER: _ClassVar[int]
    HOST_PCI_FIELD_NUMBER: _ClassVar[int]
    GUEST_PCI_FIELD_NUMBER: _ClassVar[int]
    POD_UID_FIELD_NUMBER: _ClassVar[int]
    POD_NAME_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    VLAN_FIELD_NUMBER: _ClassVar[int]
    NUMA_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    state: str
    vm: str
    pool: str
    pf: str
    vf_index: int
    host_pci: str
    guest_pci: str
    pod_uid: str
    pod_name: str
    mac: str
    vlan: int
    numa: int
    since: float
    reason: str
    def __init__(self, lease_id: _Optional[str] = ..., state: _Optional[str] = ..., vm: _Optional[str] = ..., pool: _Optional[str] = ..., pf: _Optional[str] = ..., vf_index: _Optional[int] = ..., host_pci: _Optional[str] = ..., guest_pci: _Optional[str] = ..., pod_uid: _Optional[str] = ..., pod_name: _Optional[str] = ..., mac: _Optional[str] = ..., vlan: _Optional[int] = ..., numa: _Optional[int] = ..., since: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class ListReply(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[Lease]
    def __init__(self, leases: _Optional[_Iterable[_Union[Lease, _Mapping]]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolCount(_message.Message):
    __slots__ = ("pool", "state", "count")
    POOL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    pool: str
    state: str
    count: int
    def __init__(self, pool: _Optional[str] = ..., state: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class HealthReply(_message.Message):
    __slots__ = ("serving", "backend", "identity", "pools")
    SERVING_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    POOLS_FIELD_NUMBER: _ClassVar[int]
    serving: bool
    backend: str
    identity: str
    pools: _containers.RepeatedCompositeFieldContainer[PoolCount]
    def __init__(self, serving: _Optional[bool] = ..., backend: _Optional[str] = ..., identity: _Optional[str] = ..., pools: _Optional[_Iterable[_Union[PoolCount, _Mapping]]] = ...) -> None: ...
