"""Run one supervised program: set the kernel's parent-death signal, then become the program.

supervisord runs this file as a script (`python -I -S exec_supervised.py ...`: the standard
library only, no package import, so a restart costs milliseconds, not a Django start-up):

    exec_supervised.py SIGNAL [--user NAME] [--env-file PATH] -- PROGRAM ARGS...

SIGNAL reaches the program when supervisord dies (even by SIGKILL), so a fresh supervisord never
finds a PostgreSQL or a worker of the old one holding the data directory or the port. --user
drops root first (PostgreSQL refuses it; a change of user would clear the signal afterwards).
--env-file replaces the environment with a JSON object (what the launcher prepared).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> None:
    if "--" not in argv or len(argv) < 3:
        sys.exit(__doc__)
    split = argv.index("--")
    options, program = argv[:split], argv[split + 1:]
    death_signal = signal.Signals[options[0]]
    user = env_file = None
    rest = options[1:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--user":
            user = value
        elif flag == "--env-file":
            env_file = value
        else:
            sys.exit(f"unknown option {flag}")
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before any change of user
    env = dict(os.environ)
    if env_file:
        with open(env_file) as handle:
            env = json.load(handle)
    if user and os.geteuid() == 0:
        import pwd

        entry = pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    libc.prctl(PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
    if os.getppid() == 1:  # supervisord died before the signal was set: nobody would stop us
        sys.exit("supervisord is gone")
    os.execve(program[0], program, env)  # noqa: S606  (the supervised program, from our own config)


if __name__ == "__main__":
    main(sys.argv[1:])
