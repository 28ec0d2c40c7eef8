"""`vpr serve` as separate processes on one map folder: two replicas answer the same query the same way and both
serve a version one of them added; a server killed by a real SIGKILL during a query burst or during an add restarts
on the last committed map, whole."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time

import requests
from serve_helpers import Child, build_map, child_env, files, serve, wait_until, write_images

from registry.maps import Map

TOKEN = "replica-token-0123456789"


def _answer(url, images, **params):
    r = requests.post(url + "/v1/localize", params={"k": 5, **params}, files=files(*images), timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["map_version"], [[(m["row"], m["place"], round(m["distance"], 5)) for m in res["matches"]]
                                 for res in body["results"]]


def test_two_replicas_on_one_map_answer_the_same_query_the_same_way(tiny_map, tmp_path):
    folder = tmp_path / "map"
    shutil.copytree(tiny_map[0], folder)
    images = tiny_map[1]
    token = tmp_path / "token.txt"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    a = Child(folder, "--token-file", str(token))
    try:
        b = Child(folder)
        try:
            queries = [images[4], images[9]]
            first_a, first_b = _answer(a.url, queries), _answer(b.url, queries)
            assert first_a == first_b and first_a[0] == Map.open(folder).version
            assert [row[0][0] for row in first_a[1]] == [4, 9]
            new = write_images(tmp_path / "new", 1, seed=3, start=70)
            added = requests.post(a.url + "/v1/map/images", files=files(*new), timeout=120,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
            assert added.status_code == 200, added.text
            version = added.json()["version"]
            wait_until(lambda: _answer(b.url, new)[0] == version, what="the replicas did not agree in time")
            after_a, after_b = _answer(a.url, queries + new), _answer(b.url, queries + new)
            assert after_a == after_b and after_a[0] == version
            assert after_a[1][2][0][0] == 12  # the added image, found by both
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_killed_server_restarts_on_the_last_committed_map(tiny_map, tmp_path):
    folder = tmp_path / "map"
    shutil.copytree(tiny_map[0], folder)
    images = tiny_map[1]
    token = tmp_path / "token.txt"
    token.write_text(TOKEN)
    token.chmod(0o600)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    server = Child(folder, "--token-file", str(token))
    added = requests.post(server.url + "/v1/map/images", files=files(*write_images(tmp_path / "a", 2, start=80)),
                          headers=auth, timeout=120)
    committed = added.json()["version"]
    expected = _answer(server.url, images[:3])
    burst = [threading.Thread(target=_swallow, args=(server.url, images[i % 12])) for i in range(16)]
    for t in burst:
        t.start()
    time.sleep(0.3)
    server.proc.send_signal(signal.SIGKILL)  # a power cut in the middle of the burst
    assert server.proc.wait(20) == -signal.SIGKILL
    for t in burst:
        t.join(60)
    restarted = Child(folder, "--token-file", str(token))
    try:
        assert _answer(restarted.url, images[:3]) == expected and expected[0] == committed
        # killed during an add: the restart serves the version before it or the one after it, never half of one
        more = write_images(tmp_path / "b", 4, start=90)
        adding = threading.Thread(target=_swallow, args=(restarted.url, None, more, auth))
        adding.start()
        time.sleep(0.5)
        restarted.proc.send_signal(signal.SIGKILL)
        restarted.proc.wait(20)
        adding.join(60)
    finally:
        restarted.stop()
    again = Child(folder, "--token-file", str(token))
    try:
        info = requests.get(again.url + "/v1/map", timeout=10).json()
        reference = Map.open(folder)
        assert (info["version"], info["count"]) == (reference.version, reference.count)
        assert (info["count"], info["version"] > committed) in ((14, False), (18, True))
        served = _answer(again.url, images[:3])[1]
        assert [[m[0] for m in res] for res in served] == [[m.row for m in res] for res in reference.query(images[:3])]
    finally:
        again.stop()


# `Map.add` in a child process that a real SIGKILL stops in its second encode call (its first chunk committed to
# the store, the manifest not yet)
DYING_ADD = """
import os, signal, sys
import training.tiny_vpr
from registry.maps import Map
from registry.runtimes.eager import TorchRuntime
encode, calls = TorchRuntime.encode, [0]
def dying(self, images):
    calls[0] += 1
    if calls[0] > 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return encode(self, images)
TorchRuntime.encode = dying
Map.open(sys.argv[1]).add(sys.argv[2:])
"""


def test_a_server_keeps_serving_the_last_commit_while_an_add_beside_it_is_killed(tmp_path):
    images = write_images(tmp_path / "images", 10)
    folder = tmp_path / "map"
    build_map(folder, images, chunk_size=4)
    new = write_images(tmp_path / "new", 6, seed=5, start=40)
    with serve(folder, reload_interval=0) as s:
        before = _answer(s.url, images[:2] + new[:1])
        child = subprocess.run([sys.executable, "-c", DYING_ADD, str(folder), *new], env=child_env(),
                               capture_output=True, text=True, timeout=600)
        assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
        during = _answer(s.url, images[:2] + new[:1])
        info = requests.get(s.url + "/v1/map", timeout=10).json()
        assert during == before and (info["count"], info["version"]) == (10, before[0])
        assert Map.open(folder).count == 10
        Map.open(folder).add(new)  # the rerun finishes the add
        after = _answer(s.url, images[:2] + new[:1])
    assert after[0] > before[0] and after[1][2][0][0] == 10 and after[1][2][0][2] < 1e-4
    assert after[1][:2] == _reference(folder, images[:2])


def _reference(folder, queries):
    return [[(m.row, m.place, round(m.distance, 5)) for m in res] for res in Map.open(folder).query(queries, k=5)]


def _swallow(url, image, add=None, headers=None):
    """One request whose connection may die with the server."""
    try:
        if add is None:
            requests.post(url + "/v1/localize", files=files(image), timeout=30)
        else:
            requests.post(url + "/v1/map/images", files=files(*add), headers=headers, timeout=60)
    except requests.RequestException:
        pass
