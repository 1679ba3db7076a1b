"""A local HTTP server that plays a client's `callback_url`: records every POST, answers a configurable status."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class ReceivedPost:
    path: str
    headers: dict[str, str]
    body: bytes


class CompletionCallbackReceiver:
    def __init__(self) -> None:
        self.posts: list[ReceivedPost] = []
        self.answer_status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.posts.append(ReceivedPost(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.answer_status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class TricklingFirstPostReceiver:
    """A client's callback_url whose first POST is answered one byte a second, forever (a slow or hostile server);
    later POSTs get 200 at once. Records each POST it answered in full."""

    def __init__(self) -> None:
        self.posts: list[ReceivedPost] = []
        self.trickling = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self._first = True
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError):  # the client went away: a cut-off or a killed worker
            head = b""
            while b"\r\n\r\n" not in head:
                data = connection.recv(65536)
                if not data:
                    return
                head += data
            header_block, _, body = head.partition(b"\r\n\r\n")
            lines = header_block.decode("latin-1").split("\r\n")
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int(headers.get("Content-Length", "0"))
            while len(body) < length:
                data = connection.recv(65536)
                if not data:
                    return
                body += data
            with self._lock:
                first, self._first = self._first, False
            if first:
                self.trickling.set()
                while True:
                    connection.sendall(b"H")
                    time.sleep(1.0)
            self.posts.append(ReceivedPost(lines[0].split(" ")[1], headers, body))
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.listener.close()
