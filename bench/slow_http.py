"""Slow HTTP clients against gunicorn: sync workers alone, gthread workers, and nginx buffering in front.

A gunicorn sync worker serves one connection at a time, from its first byte to its last. A client that
sends its request slowly (here: a POST whose body comes one byte a second) or not at all (a connection left
idle) holds a worker for as long as it likes, up to gunicorn's ``--timeout`` (30 s), after which the worker
is killed and another takes its place. A few such clients hold every worker.

For each setup, ``--attackers`` slow connections (8 by default) are opened against it for ``--seconds``
(8 by default), once sending a body byte by byte and once idle, while a probe asks for ``GET /`` every
0.25 s (a new connection each time, 3 s timeout). The figures are the probes answered and their latency.
All on 127.0.0.1; every process is stopped by its handle when the run ends.

The nginx setup needs Debian's nginx (``apt-get install nginx-light``); it is skipped when nginx is absent.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import requests
from common import VENV_BIN, free_port, machine, percentile, print_table, settings_for, start_process, stop

NGINX_CONF = """
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    # The whole request is read here, however slowly it comes, before gunicorn sees a byte of it.
    client_header_timeout 10s;
    client_body_timeout 10s;
    client_max_body_size 17m;
    keepalive_timeout 5s;
    upstream tasklight {{ server 127.0.0.1:{upstream}; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tasklight;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
}}
"""


def wait_until_up(base: str, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(base + "/", timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def start_gunicorn(stack: ExitStack, settings: dict, folder: Path, name: str, *options: str) -> int:
    port = free_port()
    command = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "2", *options, "wsgi:app"]
    start_process(stack, command, settings, folder / f"{name}.log")
    wait_until_up(f"http://127.0.0.1:{port}", f"gunicorn ({name})")
    return port


def start_nginx(stack: ExitStack, folder: Path, upstream: int) -> int:
    port = free_port()
    # nginx started by root serves as "nobody", which must be able to write its temporary files here.
    folder.mkdir()
    os.chmod(folder, 0o777)
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(folder=folder, upstream=upstream, port=port))
    with open(folder / "nginx.out", "ab") as out:
        proc = subprocess.Popen([shutil.which("nginx"), "-c", str(conf), "-p", str(folder)], stdout=out, stderr=out)
    stack.callback(stop, proc)
    wait_until_up(f"http://127.0.0.1:{port}", "nginx")
    return port


def attack(port: int, how: str, attackers: int, seconds: float, stop_event: threading.Event) -> None:
    """Hold ``attackers`` connections to ``port``: a POST body sent a byte a second, or nothing at all."""
    sockets = []
    try:
        for _ in range(attackers):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if how == "slow body":
                head = (
                    f"POST /jobs/new/timer HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
                )
                sock.sendall(head.encode())
            sockets.append(sock)
        ends = time.monotonic() + seconds
        while time.monotonic() < ends and not stop_event.is_set():
            if how == "slow body":
                for sock in sockets:
                    try:
                        sock.send(b"x")
                    except OSError:
                        pass  # closed by the server: a timeout doing its job
            stop_event.wait(1)
    finally:
        for sock in sockets:
            sock.close()


def probe(base: str, seconds: float) -> tuple[int, int, list[float]]:
    """Ask for ``GET /`` every 0.25 s for ``seconds``: (answered, failed, latencies of the answered)."""
    answered, failed, latencies = 0, 0, []
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        started = time.monotonic()
        try:
            response = requests.get(base + "/", timeout=3, headers={"Connection": "close"})
            if response.status_code == 200:
                answered += 1
                latencies.append(time.monotonic() - started)
            else:
                failed += 1
        except requests.RequestException:
            failed += 1
        time.sleep(max(0.0, 0.25 - (time.monotonic() - started)))
    return answered, failed, latencies


def measure(port: int, how: str, attackers: int, seconds: float) -> list:
    stop_event = threading.Event()
    attacker = threading.Thread(target=attack, args=(port, how, attackers, seconds, stop_event), daemon=True)
    attacker.start()
    time.sleep(0.5)  # the slow connections are in place
    answered, failed, latencies = probe(f"http://127.0.0.1:{port}", seconds - 1)
    stop_event.set()
    attacker.join(10)
    p50 = f"{percentile(latencies, 0.5) * 1000:.0f}" if latencies else "-"
    worst = f"{max(latencies) * 1000:.0f}" if latencies else "-"
    return [answered, failed, p50, worst]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    print(machine())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.chmod(folder, 0o755)  # for nginx's "nobody"
        settings = settings_for("sqlite", folder, "slow")
        with ExitStack() as stack:
            setups = {
                "gunicorn, 2 sync workers": start_gunicorn(stack, settings, folder, "sync"),
                "gunicorn, 2 gthread workers x 4 threads": start_gunicorn(
                    stack, settings, folder, "gthread", "--worker-class", "gthread", "--threads", "4"
                ),
            }
            if shutil.which("nginx"):
                upstream = start_gunicorn(stack, settings, folder, "behind-nginx")
                setups["nginx (buffering) in front of 2 sync workers"] = start_nginx(stack, folder / "nginx", upstream)
            else:
                print("nginx is not installed (apt-get install nginx-light): its setup is skipped")
            for name, port in setups.items():
                rows.append([name, "none", *measure(port, "none", 0, args.seconds)])
                for how in ("slow body", "idle"):
                    rows.append([name, f"{args.attackers} {how}", *measure(port, how, args.attackers, args.seconds)])
                    print(f"  {rows[-1]}", flush=True)
    print()
    headers = ["setup", "slow connections", "probes answered", "probes failed", "p50 ms", "max ms"]
    print_table(headers, rows)


if __name__ == "__main__":
    main()
