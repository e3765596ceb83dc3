"""Scale-out as documented: docs/nginx-emomon.conf in front of two real `emomon serve`
replicas on loopback; concurrent streams through the proxy land on both and each gets its
results. Needs nginx (make system-deps installs nginx-light); with CI set it must be there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support.data import REPO
from support.processes import Server, free_port, pcm, segments, stream

pytestmark = [pytest.mark.system, pytest.mark.weights]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return next(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


def test_two_replicas_behind_the_documented_nginx(tmp_path: Path) -> None:
    if NGINX is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide nginx for the scale-out test")
        pytest.skip("nginx is not installed (apt install nginx-light)")
    replicas = [Server(), Server()]
    proxy_port = free_port()
    conf = (REPO / "docs" / "nginx-emomon.conf").read_text()
    conf = conf.replace("127.0.0.1:8765", f"127.0.0.1:{replicas[0].port}")
    conf = conf.replace("127.0.0.1:8766", f"127.0.0.1:{replicas[1].port}")
    conf = conf.replace("listen 127.0.0.1:8080", f"listen 127.0.0.1:{proxy_port}")
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(conf)
    nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        for _ in range(100):
            try:
                health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{proxy_port}/healthz", timeout=2).read())
                break
            except OSError:
                time.sleep(0.1)
        assert health["status"] == "ok"
        out: dict[int, tuple] = {}
        url = f"ws://127.0.0.1:{proxy_port}/v1/stream"
        # The second client is what the page served through the proxy opens: a browser names that page.
        origins = [None, f"http://127.0.0.1:{proxy_port}"]
        clients = [
            threading.Thread(target=lambda i=i: out.update({i: stream(url, pcm(), origin=origins[i])}))
            for i in range(2)
        ]
        for c in clients:
            c.start()
            time.sleep(0.5)  # the first stream is open when the second arrives: least_conn sends it elsewhere
        for c in clients:
            c.join(120)
        for messages, code in out.values():
            assert len(segments(messages)) == 6 and code == 1000
        assert [metric(r.port, "emomon_streams_opened_total") for r in replicas] == [1.0, 1.0]
    finally:
        nginx.terminate()
        nginx.wait(10)
        for r in replicas:
            r.stop()
