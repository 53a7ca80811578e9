"""Stand-ins at the network's edges for the fetch-rule tests: a port that records
whether anyone connected, and DNS answers the test chooses."""

from __future__ import annotations

import socket


class Listener:
    """A TCP port on 127.0.0.1 that never answers: it shows whether anyone connected."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.setblocking(False)
        self.port = self.socket.getsockname()[1]

    def connected(self) -> bool:
        # The kernel completes the handshake into the backlog, so a connection shows here.
        try:
            conn, _ = self.socket.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True


class FakeDns:
    """Stands in for DNS: name -> addresses; counts lookups; names it does not know fail."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers  # each lookup takes the next answer (the last one repeats)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        answers = self.answers.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers.pop(0) if len(answers) > 1 else answers[0]
