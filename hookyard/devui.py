"""The dev Temporal UI, read-only, behind a small proxy that `hookyard dev` runs.

`temporal server start-dev` builds its Web UI's configuration in code: there is no flag, file
or environment variable to disable its write actions (terminate, cancel, signal, reset,
batch, start) or to give it a codec endpoint other than through `--ui-codec-endpoint`,
which every local user can read in the process's argv. So the UI listens on an internal
loopback port and this proxy serves the public UI port:

- only GET and HEAD pass; every other method answers 403, so the UI's HTTP API cannot
  change a workflow (the UI server itself has no such switch here);
- a request whose `Host` is not a loopback name answers 421, so a web page that rebinds its
  own hostname to 127.0.0.1 cannot read workflows or the codec endpoint through a browser;
- `/api/v1/settings` is rewritten: write actions are reported disabled (the UI hides their
  buttons) and the codec endpoint, which carries the codec token because the UI cannot send
  a header, is filled in here, so the token is never in any process's argv.
"""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

READ_METHODS = frozenset({"GET", "HEAD"})
SETTINGS_PATH = "/api/v1/settings"
# Hop-by-hop headers are the proxy's own business (RFC 9110 section 7.6.1).
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "accept-encoding"}
)
_REFUSED = json.dumps({"error": "read_only", "message": "the dev Temporal UI is read-only"}).encode()
_UPSTREAM_TIMEOUT_S = 30.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})


def loopback_host(host: str | None) -> bool:
    """Whether a Host header names this machine's loopback (any port), not some other name."""
    if not host:
        return False
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.lower() in LOOPBACK_HOSTS


def read_only_settings(settings: dict[str, Any], codec_endpoint: str | None) -> dict[str, Any]:
    """The UI settings with every write action disabled and the codec endpoint set."""
    out = dict(settings)
    out["DisableWriteActions"] = True
    for key in list(out):
        if key.endswith("Disabled") and key != "RefreshWorkflowCountsDisabled":
            out[key] = True
    if codec_endpoint:
        codec = dict(out.get("Codec") or {})
        codec["Endpoint"] = codec_endpoint
        out["Codec"] = codec
    return out


class ReadOnlyUIProxy:
    """Serves 127.0.0.1:`port`, forwarding reads to the UI at 127.0.0.1:`upstream_port`."""

    def __init__(self, port: int, upstream_port: int, codec_endpoint: str | None) -> None:
        self.upstream_port = upstream_port
        self.codec_endpoint = codec_endpoint
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="dev-ui-proxy", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the port."""
        self._server.shutdown()
        self._server.server_close()


def _handler_for(proxy: ReadOnlyUIProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._forward()

        def do_HEAD(self) -> None:
            self._forward()

        def _refuse(self) -> None:
            # A body may follow; it is not read, so the connection is not reused.
            self.send_response(403)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(_REFUSED)))
            self.send_header("allow", "GET, HEAD")
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(_REFUSED)
            self.close_connection = True

        do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = _refuse

        def _forward(self) -> None:
            if not loopback_host(self.headers.get("host")):
                self.send_error(421, "the dev Temporal UI answers only to 127.0.0.1 and localhost")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=_UPSTREAM_TIMEOUT_S)
            try:
                upstream.request(self.command, self.path, headers=headers)
                answer = upstream.getresponse()
                body = answer.read()
            except OSError:
                self.send_error(502, "the Temporal UI is not reachable (restarting?)")
                return
            finally:
                upstream.close()
            if self.path.split("?", 1)[0] == SETTINGS_PATH and answer.status == 200:
                try:
                    body = json.dumps(read_only_settings(json.loads(body), proxy.codec_endpoint)).encode()
                except ValueError:
                    self.send_error(502, "unexpected settings from the Temporal UI")
                    return
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP_HEADERS and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the UI fetches many assets."""

    return Handler
