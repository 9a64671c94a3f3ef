"""A wire-exact local server of the Agent API v2, a scripted agent and fault injection (see docs/emulator.md).

Needs the ``emulator`` extra (FastAPI, uvicorn, sse-starlette, python-multipart); nothing outside this package
imports those.
"""

from convsync.emulator.options import EmulatorOptions, FaultRule, RequestRecord, StreamRecord
from convsync.emulator.server import EmulatorServer

__all__ = ["EmulatorOptions", "EmulatorServer", "FaultRule", "RequestRecord", "StreamRecord"]
