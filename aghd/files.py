"""The daemon's files on disk: a private socket directory, files born 0600,
and locks that name the database file itself rather than its path.

Owns: checking or creating the socket directory, creating the lock and
database files with owner-only modes (whatever the umask), tightening files
an older aghd left readable to others, the exclusive locks that keep a
second daemon away, and the mark a clean stop leaves beside the database.
Must not: open SQLite or bind sockets (app.py does).

Why the database lock is on the file: a lock file beside a *path* lets a
second daemon in through another name for the same file (a hard link, a
symlink, ``..`` in the path); SQLite would then keep two write-ahead logs for
one database and corrupt it. ``flock`` on the database file locks its inode,
which every name shares. It is independent of the POSIX locks SQLite takes
on the same file (Linux keeps the two kinds apart), but closing any
descriptor of the file drops this process's POSIX locks, so the descriptor
stays open until SQLite's connections are closed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat

from agh.errors import AghError

log = logging.getLogger("aghd")

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
# Files SQLite keeps beside the database; they hold its data too.
SIDE_FILES = ("-wal", "-shm", "-journal")


class StartupError(AghError):
    """aghd cannot start with these paths; the message says why and what to do."""

    kind = "startup"


class AlreadyRunning(StartupError):
    """Another aghd holds the lock on this socket or database."""

    kind = "already_running"


def private_socket_dir(socket_path: str) -> str:
    """Create the socket's directory 0700, or check that an existing one is
    a real directory that only this user can enter; return it.

    Raises StartupError naming the problem: another uid able to write there
    could unlink aghd's socket, bind its own and collect claim tokens.
    """
    directory = os.path.dirname(os.path.abspath(socket_path))
    try:
        os.mkdir(directory, PRIVATE_DIR)
        os.chmod(directory, PRIVATE_DIR)  # mkdir's mode is subject to the umask
        return directory
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(os.path.dirname(directory), PRIVATE_DIR, exist_ok=True)
        return private_socket_dir(socket_path)
    except OSError as exc:
        raise StartupError(
            f"cannot create the socket directory {directory}: {exc.strerror}; "
            "choose another --socket (or $AGH_SOCKET) in a directory you own",
            {"socket_dir": directory},
        ) from None
    st = os.lstat(directory)
    uid = os.geteuid()
    problem = None
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link (another user may control where it points)"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != uid:
        problem = f"belongs to uid {st.st_uid}, not to you (uid {uid})"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}: other users can reach the socket there"
    if problem is not None:
        raise StartupError(
            f"the socket directory {directory} {problem}; aghd needs a directory only you "
            f"can use: `mkdir -m 700` a new one and pass --socket (or $AGH_SOCKET) inside it"
            + (", or `chmod 700` this one" if "mode" in problem else ""),
            {"socket_dir": directory, "problem": problem},
        )
    return directory


def open_private(path: str, what: str) -> int:
    """Open (creating it 0600 if absent) ``path`` for reading and writing;
    return the descriptor. A file of ours that others can read is tightened.

    Raises StartupError naming the file and the next step.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, PRIVATE_DIR, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as exc:
        writable = exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        hint = (
            f"make {directory} writable by you (SQLite also creates "
            f"{os.path.basename(path)}-wal and -shm there) or choose another --db"
            if writable and what == "database"
            else "check the path and its permissions, or choose another path"
        )
        raise StartupError(
            f"cannot open the {what} {path}: {exc.strerror}; {hint}", {what: path}
        ) from None
    tighten(fd, path)
    return fd


def tighten(fd: int, path: str) -> None:
    """chmod 0600 a file of ours that group or others may read (made by an
    older aghd, or under a loose umask)."""
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.fchmod(fd, PRIVATE_FILE)
        log.info("made %s private (mode %04o -> 0600)", path, stat.S_IMODE(st.st_mode))


def tighten_side_files(db_path: str) -> None:
    """The WAL and shared-memory files hold the database's data: 0600 too.
    (SQLite gives new ones the database file's mode.)"""
    for suffix in SIDE_FILES:
        path = db_path + suffix
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            tighten(fd, path)
        finally:
            os.close(fd)


def lock(fd: int, path: str, what: str) -> None:
    """Take a non-blocking exclusive ``flock`` on the open file ``fd``.

    Raises AlreadyRunning (naming the holder's pid where the kernel tells)
    if another open file holds it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise StartupError(f"cannot lock the {what} {path}: {exc.strerror}") from None
        holder = lock_holder(fd)
        raise AlreadyRunning(
            f"another aghd (pid {holder}) is already running with the {what} {path}"
            + (" (or another name for the same file)" if what == "database" else "")
            + "; stop it first (`systemctl --user stop aghd` or kill that pid), "
            "or pick other paths with --socket/--db",
            {what: path, "pid": holder},
        ) from None


def lock_holder(fd: int) -> str:
    """The pid holding a flock on ``fd``'s file, from /proc/locks, else "unknown"."""
    st = os.fstat(fd)
    wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open("/proc/locks") as f:
            lines = f.read().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == wanted:
                return fields[4]
        except ValueError:
            continue
    return "unknown"


def write_pid(fd: int) -> None:
    """Record our pid in a lock file (for people; the lock is the flock)."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


# -- the clean-shutdown mark ----------------------------------------------------

# Beside the database: what the file looked like when aghd last stopped
# cleanly (checkpointed, every connection closed). A start that finds the
# file exactly so skips the start-up integrity check, which reads every page
# (2 s for a million tasks); any other start (after a crash, or once anything
# touched the file) checks.
CLEAN_MARK = ".clean"


def _identity(db_path: str) -> dict[str, int] | None:
    try:
        st = os.stat(db_path)
    except FileNotFoundError:
        return None
    wal = db_path + "-wal"
    wal_size = os.stat(wal).st_size if os.path.exists(wal) else 0
    return {
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "wal_size": wal_size,
    }


def left_clean(db_path: str) -> bool:
    """Whether the database is exactly as aghd left it at its last clean stop.
    Removes the mark either way: until the next clean stop, there is none."""
    mark = db_path + CLEAN_MARK
    try:
        with open(mark, encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        recorded = None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(mark)
    return recorded is not None and recorded == _identity(db_path)


def mark_clean(db_path: str) -> None:
    """Record the database as this clean stop leaves it (after SQLite closed
    it). Written to a temporary name and renamed, so a crash mid-write leaves
    no mark, only a check at the next start."""
    identity = _identity(db_path)
    if identity is None:
        return
    mark = db_path + CLEAN_MARK
    temporary = mark + ".tmp"
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, PRIVATE_FILE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(identity, f)
        os.replace(temporary, mark)
    except OSError:
        log.warning("could not write %s; the next start checks the database", mark, exc_info=True)
