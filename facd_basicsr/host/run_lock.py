"""One live run per experiment folder: a lock file that a second start with the same name respects.

BasicSR's ``make_exp_dirs`` renames an existing ``experiments/<name>`` (or ``results/<name>``) to
``<name>_archived_<time>`` without asking whether a run still writes there; the live run then writes into the new
run's folder and its later checkpoints exist nowhere. A run of our models holds ``<folder>/.run.lock`` for its
whole life:

* a second start with the same name refuses before anything is created or renamed, naming the folder, the host and
  the PID that hold it (:func:`check_not_held`);
* a lock whose process is gone (a killed run) is stale: it does not block a resume or a new run, which take it
  over with a warning;
* a run whose folder was renamed or removed anyway stops at its next save with an error (:meth:`RunLock.verify`)
  instead of writing into someone else's folder.

Limits: liveness is checked by PID on the same host only. A lock written by another host (a network file system
shared by several machines) cannot be checked and counts as live: remove it by hand once that run is gone.
"""
import atexit
import json
import os
import os.path as osp
import socket
import uuid
from typing import Optional

from basicsr.utils import get_root_logger

LOCK_NAME = '.run.lock'


class RunFolderError(RuntimeError):
    """The run folder is held by another live run, or was moved away from a live run."""


def read_lock(folder: str) -> Optional[dict]:
    """The lock record of ``folder`` (``{host, pid, token}``), or None when there is none or it is unreadable."""
    try:
        with open(osp.join(folder, LOCK_NAME)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_live(record: dict) -> bool:
    """A lock of another host counts as live (its PID cannot be checked from here)."""
    if record.get('host') != socket.gethostname():
        return True
    return record.get('pid') != os.getpid() and pid_alive(int(record.get('pid', -1)))


def check_not_held(folder: str) -> None:
    """Raise :class:`RunFolderError` when a live run holds ``folder``; nothing is created or changed."""
    record = read_lock(folder)
    if record is not None and is_live(record):
        raise RunFolderError(f'{folder} is in use by a live run (host {record.get("host")}, PID {record.get("pid")}): '
                             'starting a run with the same name would archive its folder under it. Choose another '
                             'name, or wait for that run to end (if it is gone, remove '
                             f'{osp.join(folder, LOCK_NAME)})')


class RunLock:
    """The lock this process holds on its run folder; released at exit."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.token = uuid.uuid4().hex
        self.held = False

    def acquire(self) -> 'RunLock':
        """Take the lock of ``folder`` (created by BasicSR already); a stale lock is taken over with a warning."""
        check_not_held(self.folder)
        stale = read_lock(self.folder)
        ours = stale is not None and stale.get('host') == socket.gethostname() and stale.get('pid') == os.getpid()
        if stale is not None and not ours:  # a model built again in the same process replaces its own lock quietly
            get_root_logger().warning(f'{self.folder}: taking over the lock of a run that is gone (host '
                                      f'{stale.get("host")}, PID {stale.get("pid")})')
        record = {'host': socket.gethostname(), 'pid': os.getpid(), 'token': self.token}
        tmp = osp.join(self.folder, f'{LOCK_NAME}.{self.token}')
        with open(tmp, 'w') as f:
            json.dump(record, f)
        os.replace(tmp, osp.join(self.folder, LOCK_NAME))
        self.held = True
        atexit.register(self.release)
        return self

    def verify(self) -> None:
        """Raise :class:`RunFolderError` when the folder no longer holds this run's lock (renamed or removed)."""
        if not self.held:
            return
        record = read_lock(self.folder)
        if record is None or record.get('token') != self.token:
            raise RunFolderError(f'{self.folder} is no longer this run\'s folder (it was renamed, removed or taken by '
                                 'another run): stopped before writing into it. This run\'s earlier checkpoints are '
                                 f'wherever the folder went (look for {osp.basename(self.folder)}_archived_*)')

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        if self.held:
            record = read_lock(self.folder)
            if record is not None and record.get('token') == self.token:
                try:
                    os.remove(osp.join(self.folder, LOCK_NAME))
                except OSError:
                    pass
            self.held = False
