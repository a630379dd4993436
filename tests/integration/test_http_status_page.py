"""`GET /`, the live status page, in a real headless Chromium (Debian's `chromium`): it loads
from the broker alone, and its numbers and client table follow what a client does."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from support.clients import PahoClient, unique
from support.http import HTTP_LISTENER, request

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                "(tests/setup/install-test-deps.sh installs it)")


def chromium(tmp_path, url: str, *args: str) -> str:
    """Load `url` headless, let the page's timers run 3 s of virtual time (its polls fetch
    from the broker meanwhile), and return what Chromium prints (the DOM, with --dump-dom)."""
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,900",
         "--virtual-time-budget=3000", *args, url],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def shown(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, f"no #{element_id} in the page"
    return match.group(1)


def test_the_status_page_shows_a_client_connecting_and_publishing(broker_factory, tmp_path):
    broker = broker_factory(HTTP_LISTENER)
    url = f"http://127.0.0.1:{broker.port_of('http')}/"
    for path in ("status.css", "status.js"):
        assert request(url + path).status == 200
    before = chromium(tmp_path, url, "--dump-dom")
    assert shown(before, "state") == "ready"
    assert shown(before, "clients-online") == "0"
    assert shown(before, "received") == "0"
    client_id = unique("page")
    client = PahoClient(broker.port, client_id=client_id)
    client.connect()
    client.subscribe(f"{client_id}/t", 1)
    for i in range(5):
        client.publish(f"{client_id}/t", b"%d" % i, qos=1)
    client.expect(5)
    after = chromium(tmp_path, url, "--dump-dom")
    assert shown(after, "clients-online") == "1"
    assert shown(after, "received") == "5"
    assert shown(after, "sent") == "5"
    assert f'data-client-id="{client_id}"' in after  # a row of the client table
    screenshot = tmp_path / "status-page.png"
    chromium(tmp_path, url, f"--screenshot={screenshot}")
    assert screenshot.stat().st_size > 10_000
    client.disconnect()
