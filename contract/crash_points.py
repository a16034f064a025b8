"""Where tests stop a daemon dead, to prove that every step survives a kill -9 right after it.

Production code calls `reached(step)` at each durable step of a flow; the object it was handed decides.
The default is inert. Only entry points build an armed one, from VFHOTPLUG_CRASH_AFTER, so tests can kill
the real daemons they start; no production step reads the environment itself.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping

log = logging.getLogger(__name__)

CRASH_ENV = "VFHOTPLUG_CRASH_AFTER"


class CrashPoints:
    def __init__(self, after: str | None = None) -> None:
        self._after = after

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CrashPoints:
        return cls(environ.get(CRASH_ENV) or None)

    def reached(self, step: str) -> None:
        """SIGKILLs this process when armed for `step`; nothing otherwise."""
        if self._after == step:
            log.warning("crash injected after %r (%s)", step, CRASH_ENV)
            os.kill(os.getpid(), signal.SIGKILL)


NO_CRASHES = CrashPoints()
