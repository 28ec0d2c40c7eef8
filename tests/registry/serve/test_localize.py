"""/v1/localize over a real loopback socket: the answers equal Map.query (and Map.sequence_query for a stream) on
the same images, concurrent requests are encoded in shared batches, the map's images are served by row id, and
the health, readiness, map and metrics routes answer."""
from __future__ import annotations

import threading

import numpy as np
import requests
from serve_helpers import Running, files, metric, serve, wait_ready

from registry.maps import Map


def _rows(matches):
    return [m["row"] for m in matches]


def test_localize_answers_what_map_query_answers_on_the_same_images(tiny_map):
    folder, images = tiny_map
    reference = Map.open(folder)
    queries = [images[3], images[7], images[0]]
    expected = reference.query(queries, k=4)
    with serve(folder) as s:
        r = requests.post(s.url + "/v1/localize", params={"k": 4}, files=files(*queries), timeout=60)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == reference.model_name and body["map_version"] == reference.version
        assert [res["name"] for res in body["results"]] == ["003.png", "007.png", "000.png"]
        for res, want in zip(body["results"], expected):
            assert _rows(res["matches"]) == [m.row for m in want]
            assert [m["place"] for m in res["matches"]] == [m.place for m in want]
            np.testing.assert_allclose([m["distance"] for m in res["matches"]], [m.distance for m in want],
                                       atol=1e-5)
            assert res["matches"][0]["distance"] < 1e-4 and res["sequence"] is None and res["heatmap"] is None
            top = res["matches"][0]
            assert top["url"] == f"/v1/map/images/{top['row']}"
            image = requests.get(s.url + top["url"], timeout=10)  # the map's own file, by row id
            assert image.status_code == 200 and image.content == open(reference.image_path(top["row"]), "rb").read()
        assert set(body["timing_ms"]) == {"decode", "queue", "encode", "search"}


def test_concurrent_requests_are_encoded_in_shared_batches(tiny_map):
    folder, images = tiny_map
    reference = Map.open(folder)
    clients = 8
    expected = reference.query(images[:clients], k=3)
    got = {}
    with serve(folder, max_batch=16, max_wait_ms=300) as s:
        start = threading.Barrier(clients)

        def client(i):
            start.wait()
            got[i] = requests.post(s.url + "/v1/localize", params={"k": 3}, files=files(images[i]), timeout=60)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        text = requests.get(s.url + "/metrics", timeout=10).text
    assert sorted(got) == list(range(clients)) and all(r.status_code == 200 for r in got.values())
    for i, r in got.items():
        assert _rows(r.json()["results"][0]["matches"]) == [m.row for m in expected[i]]
    calls, encoded = metric(text, "vpr_batch_size_count"), metric(text, "vpr_batch_size_sum")
    assert encoded == clients and calls < clients  # fewer encode calls than requests: some batch held > 1 image
    assert 'vpr_requests_total{route="/v1/localize",status="200"} 8.0' in text


def test_a_stream_answers_the_sequence_match_of_the_frames_sent_so_far(tiny_map):
    folder, images = tiny_map
    reference = Map.open(folder)
    frames = images[2:8]
    expected = reference.sequence_query(frames, k=3, length=4)
    with serve(folder, sequence_length=4) as s:
        answers = []
        for i in range(0, len(frames), 2):  # two frames per request, in route order
            r = requests.post(s.url + "/v1/localize", params={"k": 3, "stream": "robot-1"},
                              files=files(*frames[i:i + 2]), timeout=60)
            assert r.status_code == 200, r.text
            answers += r.json()["results"]
        other = requests.post(s.url + "/v1/localize", params={"k": 3, "stream": "robot-2"}, files=files(frames[0]),
                              timeout=60).json()["results"][0]["sequence"]
        assert requests.delete(s.url + "/v1/streams/robot-1", timeout=10).json() == {"dropped": "robot-1"}
    assert [a["sequence"]["frames"] for a in answers] == [1, 2, 3, 4, 5, 6]
    for answer, want in zip(answers, expected):
        assert answer["sequence"]["length"] == 4
        assert _rows(answer["sequence"]["matches"]) == [m.row for m in want]
        np.testing.assert_allclose([m["distance"] for m in answer["sequence"]["matches"]],
                                   [m.distance for m in want], atol=1e-4)
    assert other["frames"] == 1  # another client's stream is its own


def test_the_heat_map_is_the_maps_own_and_the_info_health_and_metrics_routes_answer(tiny_map):
    folder, images = tiny_map
    reference = Map.open(folder)
    with serve(folder) as s:
        r = requests.post(s.url + "/v1/localize", params={"heatmap": 1}, files=files(images[5]), timeout=60)
        heat = r.json()["results"][0]["heatmap"]
        info = requests.get(s.url + "/v1/map", timeout=10).json()
        health = requests.get(s.url + "/healthz", timeout=10)
        text = requests.get(s.url + "/metrics", timeout=10).text
        docs = requests.get(s.url + "/openapi.json", timeout=10).json()
    from PIL import Image

    want = reference.heatmap(Image.open(images[5]).convert("RGB"))
    assert (heat["height"], heat["width"]) == want.shape
    np.testing.assert_allclose(np.array(heat["values"]), want, atol=1e-4)
    assert info["count"] == 12 and info["version"] == reference.version and info["model"] == reference.model_name
    assert info["sequence_length"] == 10 and info["max_batch"] == 16 and info["path"] == folder.name
    assert health.status_code == 200
    assert "vpr_request_seconds_bucket" in text and "vpr_queue_depth" in text
    assert {"/v1/localize", "/v1/map", "/v1/map/images/{row}", "/healthz", "/readyz", "/metrics"} <= set(docs["paths"])


def test_readyz_says_503_while_the_map_loads_and_names_a_map_that_cannot_be_opened(tiny_map, tmp_path):
    from registry.serve.app import build_app
    from registry.serve.service import Service

    gate = threading.Event()

    def slow_open(folder):
        assert gate.wait(60)
        return Map.open(folder)

    folder, images = tiny_map
    with Running(build_app(Service(folder, open_map=slow_open)), ready_path="/healthz") as s:
        loading = requests.get(s.url + "/readyz", timeout=10)
        early = requests.post(s.url + "/v1/localize", files=files(images[0]), timeout=10)
        gate.set()
        wait_ready(s.url, lambda: True)
        late = requests.post(s.url + "/v1/localize", files=files(images[0]), timeout=60)
    assert loading.status_code == 503 and loading.headers["Retry-After"] and "loading" in loading.json()["error"]
    assert early.status_code == 503 and "still loading" in early.json()["error"] and early.headers["Retry-After"]
    assert late.status_code == 200
    broken = tmp_path / "not-a-map"
    broken.mkdir()
    with Running(build_app(Service(broken)), ready_path="/healthz") as s:
        for _ in range(100):
            answer = requests.get(s.url + "/readyz", timeout=10).json()["error"]
            if answer != "loading the map":
                break
            threading.Event().wait(0.1)
        assert requests.get(s.url + "/healthz", timeout=10).status_code == 200
    assert f"cannot open the map {broken}" in answer
