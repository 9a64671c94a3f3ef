"""Run a command under the seccomp filter systemd installs for ``MemoryDenyWriteExecute=yes`` (x86_64).

systemd.exec(5): the filter rejects ``mmap`` with both PROT_EXEC and PROT_WRITE, ``mprotect`` and
``pkey_mprotect`` with PROT_EXEC, ``shmat`` with SHM_EXEC; like systemd, it sets no_new_privs first. Usage::

    python -m tests.service.mdwe PROGRAM ARGS...

The filter survives ``execv``; before exec'ing, a W+X ``mmap`` is tried to prove the filter is in force.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import sys

SUPPORTED = sys.platform == "linux" and platform.machine() == "x86_64"

_AUDIT_ARCH_X86_64 = 0xC000003E
_NR_MMAP, _NR_MPROTECT, _NR_SHMAT, _NR_PKEY_MPROTECT = 9, 10, 30, 329
_RET_ALLOW, _RET_EPERM = 0x7FFF0000, 0x00050000 | 1
_LD_ABS, _JEQ, _AND, _RET = 0x20, 0x15, 0x54, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ|K, BPF_ALU|AND|K, BPF_RET|K
_PROT_WRITE, _PROT_EXEC, _SHM_EXEC = 2, 4, 0o100000
_ARG2 = 16 + 8 * 2  # offsetof(struct seccomp_data, args[2]), low 32 bits on little-endian
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def _program() -> list[list[int]]:
    prog: list[list[int]] = []

    def emit(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> int:
        prog.append([code, jt, jf, k])
        return len(prog) - 1

    def deny_if_masked(mask: int) -> int:
        """Load args[2]; EPERM if all bits of ``mask`` are set in it, else allow. Returns its first index."""
        first = emit(_LD_ABS, _ARG2)
        emit(_AND, mask)
        emit(_JEQ, mask, jt=0, jf=1)
        emit(_RET, _RET_EPERM)
        emit(_RET, _RET_ALLOW)
        return first

    emit(_LD_ABS, 4)  # seccomp_data.arch
    emit(_JEQ, _AUDIT_ARCH_X86_64, jt=1, jf=0)
    emit(_RET, _RET_ALLOW)
    emit(_LD_ABS, 0)  # seccomp_data.nr
    jumps = {nr: emit(_JEQ, nr) for nr in (_NR_MMAP, _NR_MPROTECT, _NR_PKEY_MPROTECT, _NR_SHMAT)}
    emit(_RET, _RET_ALLOW)
    targets = {
        _NR_MMAP: deny_if_masked(_PROT_WRITE | _PROT_EXEC),
        _NR_MPROTECT: deny_if_masked(_PROT_EXEC),
        _NR_SHMAT: deny_if_masked(_SHM_EXEC),
    }
    targets[_NR_PKEY_MPROTECT] = targets[_NR_MPROTECT]
    for nr, index in jumps.items():
        prog[index][1] = targets[nr] - index - 1  # jt is relative to the next instruction
    return prog


def install_filter() -> None:
    """Apply no_new_privs and the MemoryDenyWriteExecute filter to this process (and what it execs)."""
    prog = _program()
    array = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), array)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main(argv: list[str]) -> None:
    install_filter()
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except OSError:
        pass
    else:
        sys.exit("the MemoryDenyWriteExecute filter is not in force")
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
