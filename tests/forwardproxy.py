"""A small forward HTTP proxy on loopback (test infrastructure only), like the corporate
proxy a hub may sit behind: plain requests in absolute form (`GET http://host:port/path`)
are forwarded, `CONNECT host:port` opens a tunnel (for https). Every request it sees is
recorded in `seen` as (method, target).
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from hubprocess import QuietHTTPServer

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


class ForwardProxy:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy.seen.append((self.command, self.path))
                proxy._forward(self)

            do_POST = do_GET

            def do_CONNECT(self) -> None:
                proxy.seen.append((self.command, self.path))
                proxy._tunnel(self)

        self.server = QuietHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        target = urlsplit(h.path)
        if target.scheme != "http" or not target.hostname:
            h.send_error(400, "absolute http:// URL expected")
            return
        length = int(h.headers.get("content-length") or 0)
        body = h.rfile.read(length) if length else None
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(h.command, path, body=body, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
        except OSError:
            h.send_error(502, "upstream unreachable")
            return
        finally:
            upstream.close()
        h.send_response(reply.status)
        for k, v in reply.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                h.send_header(k, v)
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _tunnel(self, h: BaseHTTPRequestHandler) -> None:
        host, _, port = h.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=30)
        except (OSError, ValueError):
            h.send_error(502, "upstream unreachable")
            return
        h.send_response(200, "Connection established")
        h.end_headers()
        h.wfile.flush()
        client = h.connection
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [], 30)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        except OSError:
            pass
        finally:
            upstream.close()
            h.close_connection = True
