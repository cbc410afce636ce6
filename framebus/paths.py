"""Where a bus lives by default.

Never in a world-writable directory such as ``/tmp``, where another user could
bind the name first: root's producers live in ``/run/framebus``, everyone
else's in ``$XDG_RUNTIME_DIR/framebus`` (a directory only that user can enter).
"""

from __future__ import annotations

import os
import stat

from .errors import FramebusError

__all__ = ["DEFAULT_NAME", "default_socket", "make_runtime_dir", "runtime_dir"]

DEFAULT_NAME = "cam0.sock"


def runtime_dir() -> str:
    """The directory default sockets live in, for this user."""
    if os.geteuid() == 0:
        return "/run/framebus"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime or not os.path.isabs(runtime):
        raise FramebusError(
            "no default socket directory: XDG_RUNTIME_DIR is "
            f"{'not set' if not runtime else f'not an absolute path ({runtime!r})'} "
            "(log in through a session manager, or pass --socket PATH in a directory "
            "only you can write)")
    return os.path.join(runtime, "framebus")


def default_socket(name: str = DEFAULT_NAME) -> str:
    """The socket path every command uses when given no ``--socket``."""
    return os.path.join(runtime_dir(), name)


def socket_help() -> str:
    """What ``--socket`` defaults to, for a ``--help`` text."""
    try:
        return f"control socket path (default {default_socket()})"
    except FramebusError:
        return "control socket path (default $XDG_RUNTIME_DIR/framebus/cam0.sock)"


def make_runtime_dir() -> str:
    """Create `runtime_dir()` if it is missing (root: 0755, others: 0700) and
    check that it is a real directory owned by this user or root."""
    path = runtime_dir()
    try:
        os.mkdir(path, 0o755 if os.geteuid() == 0 else 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise FramebusError(f"cannot create {path}: {exc.strerror}") from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, os.geteuid()):
        raise FramebusError(f"{path} is not a directory owned by you or root; not using it")
    if st.st_mode & 0o002:
        raise FramebusError(f"{path} is world-writable; not using it")
    return path
