"""Network namespaces `prepare` makes for runc and crun containers, pinned by a bind mount at
<folder>/<container id> (what `ip netns add` does): the bundle's config.json joins the pinned namespace, so
prepare moves the VFs in itself and the container's start runs no createRuntime hook process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from pathlib import Path

_CLONE_NEWNET = 0x40000000
_MS_BIND = 0x1000
_MNT_DETACH = 0x2


class NetnsError(OSError):
    """A namespace could not be made or removed; the message names the path."""


class NetnsPins:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_void_p,
        ]

    def path(self, container_id: str) -> Path:
        return self.folder / container_id

    def make(self, container_id: str) -> str:
        """The pinned namespace of the container, made when it has none (a repeat keeps the same one)."""
        pin = self.path(container_id)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if pin.exists() and self._pinned(pin):
                return str(pin)
            pin.touch()
        except OSError as e:
            raise NetnsError(e.errno, f"network namespace pin {pin}: {e.strerror}") from e
        failed: list[int] = []

        def run() -> None:  # unshare changes only this thread, which ends right after
            if self._libc.unshare(_CLONE_NEWNET) != 0 or (
                self._libc.mount(b"/proc/thread-self/ns/net", str(pin).encode(), None, _MS_BIND, None) != 0
            ):
                failed.append(ctypes.get_errno())

        t = threading.Thread(target=run, name="netns-pin")
        t.start()
        t.join()
        if failed:
            pin.unlink(missing_ok=True)
            raise NetnsError(failed[0], f"cannot make a network namespace at {pin}: {os.strerror(failed[0])}")
        return str(pin)

    def remove(self, container_id: str) -> None:
        """Unpins and deletes the container's namespace (the kernel frees it once no process is in it).
        Safe when there is none."""
        pin = self.path(container_id)
        if not pin.exists():
            return
        if self._pinned(pin) and self._libc.umount2(str(pin).encode(), _MNT_DETACH) != 0:
            code = ctypes.get_errno()
            if code != errno.EINVAL:  # EINVAL: not a mount point (any more)
                raise NetnsError(code, f"cannot unmount network namespace pin {pin}: {os.strerror(code)}")
        pin.unlink(missing_ok=True)

    @staticmethod
    def _pinned(pin: Path) -> bool:
        """A bind-mounted namespace lives on nsfs, not on the folder's file system."""
        return pin.stat().st_dev != pin.parent.stat().st_dev
