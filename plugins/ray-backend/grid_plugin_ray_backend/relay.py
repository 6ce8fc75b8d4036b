"""Relays one request to the grid service's socket on the head, for a CLI on another machine.

    python -c "$(this file)" SOCKET_PATH

The CLI runs it over its SSH connection to the head: the request arrives on stdin, the service's
frames leave on stdout. Standard library only, and run with -c, so it starts in milliseconds.
Exit status 3: no service listens at SOCKET_PATH. Nothing new listens on the network.
"""

import os
import socket
import sys
import threading

NO_SERVICE = 3


def main() -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(sys.argv[1])
    except OSError as exc:
        sys.stderr.write(f"no grid service at {sys.argv[1]}: {exc.strerror or exc}\n")
        return NO_SERVICE

    def upstream() -> None:
        # At the end of stdin the socket stays open: the service reads a closed socket as a client gone.
        while data := os.read(0, 65536):
            sock.sendall(data)

    threading.Thread(target=upstream, daemon=True).start()
    while data := sock.recv(65536):
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
    return 0


if __name__ == "__main__":
    sys.exit(main())
