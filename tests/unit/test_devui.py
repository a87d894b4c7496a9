"""The dev Temporal UI's settings, as the read-only proxy rewrites them."""

from __future__ import annotations

from hookyard.devui import read_only_settings

UI_SETTINGS = {
    "Codec": {"Endpoint": "", "PassAccessToken": False},
    "DisableWriteActions": False,
    "WorkflowTerminateDisabled": False,
    "WorkflowResetDisabled": False,
    "BatchActionsDisabled": False,
    "StartWorkflowDisabled": False,
    "RefreshWorkflowCountsDisabled": False,
    "Version": "2.54.1",
}


def test_every_write_action_is_reported_disabled():
    settings = read_only_settings(UI_SETTINGS, None)
    assert settings["DisableWriteActions"] is True
    assert all(settings[k] is True for k in settings if k.endswith("Disabled") and "Refresh" not in k)


def test_reads_stay_enabled():
    assert read_only_settings(UI_SETTINGS, None)["RefreshWorkflowCountsDisabled"] is False


def test_the_codec_endpoint_is_filled_in_and_its_other_options_kept():
    settings = read_only_settings(UI_SETTINGS, "http://127.0.0.1:8000/codec/ui/t")
    assert settings["Codec"] == {"Endpoint": "http://127.0.0.1:8000/codec/ui/t", "PassAccessToken": False}
    assert UI_SETTINGS["Codec"]["Endpoint"] == ""  # type: ignore[index]


def test_a_request_for_another_hostname_is_refused_so_dns_rebinding_reads_nothing():
    import http.client
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from hookyard.devui import ReadOnlyUIProxy, loopback_host
    from hookyard.services import free_port

    class Upstream(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    upstream = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = ReadOnlyUIProxy(free_port(), upstream.server_address[1], None)
    proxy.start()
    try:
        answers = {}
        for host in ("attacker.example", "127.0.0.1:1", "localhost"):
            conn = http.client.HTTPConnection("127.0.0.1", proxy._server.server_address[1], timeout=5)
            conn.request("GET", "/api/v1/namespaces/default/workflows", headers={"host": host})
            answers[host] = conn.getresponse().status
            conn.close()
    finally:
        proxy.stop()
        upstream.shutdown()
    assert answers == {"attacker.example": 421, "127.0.0.1:1": 200, "localhost": 200}
    assert loopback_host("[::1]:8233") and not loopback_host("127.0.0.1.nip.io")


def test_servers_named_by_the_environment_are_the_stacks_own_ports():
    from hookyard.dev import external_ports

    ports = external_ports(
        {
            "DATABASE_URL": "postgresql://u:p@127.0.0.1:6543/db",
            "REDIS_URL": "redis://127.0.0.1:6380/0",
            "TEMPORAL_ADDRESS": "127.0.0.1:7300",
            "HOOKYARD_TEMPORAL_METRICS_PORT": "9400",
        }
    )
    assert {6543, 6380, 7300, 7243, 8233, 9400} <= ports
