"""Every bad input gets its 4xx with a message naming the problem, and the service answers the next good request;
a full queue answers 503 with Retry-After; adding images needs the bearer token (401 without, 403 wrong), and the
added images are found; without the serve extra, create_app and `vpr serve` name the extra to install."""
from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import requests
from PIL import Image
from serve_helpers import files, serve, wait_until, write_images

from registry.maps import Map
from registry.serve.uploads import Limits


def _png(w=48, h=32) -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.random.default_rng(w * h).random((h, w, 3)) * 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def _jpeg_truncated() -> bytes:
    out = io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)).save(out, "JPEG")
    return out.getvalue()[: len(out.getvalue()) // 2]


def _bomb() -> bytes:
    """A 12 kB PNG that decodes to 10000 x 10000 pixels."""
    out = io.BytesIO()
    Image.new("1", (10000, 10000)).save(out, "PNG")
    return out.getvalue()


def _multipart(parts, boundary=b"b0undary"):
    body = b"".join(b"--" + boundary + b'\r\nContent-Disposition: form-data; name="images"; filename="f%d.png"\r\n'
                    b"Content-Type: image/png\r\n\r\n" % i + data + b"\r\n" for i, data in enumerate(parts))
    return body + b"--" + boundary + b"--\r\n", {"Content-Type": "multipart/form-data; boundary=" + boundary.decode()}


def _chunked(body: bytes):
    for i in range(0, len(body), 2**16):
        yield body[i:i + 2**16]


BIG = _png(400, 300)  # about 360 kB of noise: two of them are over a 512 KiB cap


def _cases():
    """(what, request kwargs, status, words the message must hold)."""
    body, headers = _multipart([BIG, BIG])
    return [
        ("not an image", dict(files=files(b"plain text", names=["notes.txt"])), 400, "notes.txt: not an image"),
        ("truncated", dict(files=files(_jpeg_truncated(), names=["half.jpg"])), 400, "half.jpg: a truncated"),
        ("empty file", dict(files=files(b"", names=["empty.png"])), 400, "empty.png: the file is empty"),
        ("decompression bomb", dict(files=files(_bomb(), names=["bomb.png"])), 413,
         "pixel budget of 1,000,000 per image"),
        ("17 files", dict(files=files(*[_png()] * 17)), 400, "Maximum number of files is 16"),
        ("no files", dict(), 400, "no image files: send 1 to 16 files"),
        ("files in another field", dict(files=[("photo", ("a.png", _png(), "image/png"))]), 400,
         "field(s) ['photo']: send them in the multipart field 'images'"),
        ("too large by its length", dict(data=body, headers=headers), 413, "cap of 524,288 bytes (--max-body)"),
        ("too large, chunked", dict(data=_chunked(body), headers=headers), 413, "cap of 524,288 bytes"),
        ("k too small", dict(params={"k": 0}, files=files(_png())), 422, "k=0 is out of range: k must be 1..12"),
        ("k too large", dict(params={"k": 101}, files=files(_png())), 422, "k must be 1..12 (at most 100"),
        ("k not a number", dict(params={"k": "five"}, files=files(_png())), 422, "query k: Input should be a valid"),
        ("stream id of the wrong form", dict(params={"stream": "../x"}, files=files(_png())), 422,
         "[A-Za-z0-9_-]{1,64}"),
        ("heatmap flag", dict(params={"heatmap": "yes"}, files=files(_png())), 422, "heatmap='yes': must be 0 or 1"),
    ]


def test_every_bad_input_gets_its_4xx_naming_the_problem_and_the_service_still_answers(tiny_map):
    folder, images = tiny_map
    with serve(folder, limits=Limits(max_body=512 * 2**10, max_pixels=1_000_000)) as s:
        for what, kwargs, status, words in _cases():
            r = requests.post(s.url + "/v1/localize", timeout=60, **kwargs)
            assert r.status_code == status, (what, r.status_code, r.text)
            assert words in r.json()["error"], (what, r.json())
            good = requests.post(s.url + "/v1/localize", files=files(images[1]), timeout=60)
            assert good.status_code == 200 and good.json()["results"][0]["matches"][0]["row"] == 1, what
        for path, status, words in (("/v1/map/images/12", 404, "no map image has row 12: rows are 0..11"),
                                    ("/v1/map/images/-1", 404, "no map image has row -1"),
                                    ("/v1/map/images/..%2F..%2Fetc%2Fpasswd", 404, "no such route"),
                                    ("/v1/map/images/passwd", 422, "path row"),
                                    ("/no/such/route", 404, "no such route: GET /no/such/route")):
            r = requests.get(s.url + path, timeout=10)
            assert r.status_code == status and words in r.json()["error"], (path, r.text)
        gone = requests.delete(s.url + "/v1/streams/never-started", timeout=10)
        assert gone.status_code == 404 and "no live stream 'never-started'" in gone.json()["error"]
        text = requests.get(s.url + "/metrics", timeout=10).text
    assert 'vpr_errors_total{route="/v1/localize",status="400"} 6.0' in text
    assert 'vpr_errors_total{route="/v1/localize",status="413"} 3.0' in text


def test_a_full_queue_answers_503_with_retry_after_and_serves_again_once_drained(tiny_map):
    folder, images = tiny_map
    gate = threading.Event()
    with serve(folder, max_batch=1, max_wait_ms=0, max_queue=1) as s:
        service = s.service
        encode, entered = service.map.encode, threading.Event()

        def held(batch):  # each encode call waits for the gate
            entered.set()
            assert gate.wait(60)
            return encode(batch)

        service.map.encode = held
        answers = {}

        def client(name, image):
            answers[name] = requests.post(s.url + "/v1/localize", files=files(image), timeout=60)

        first = threading.Thread(target=client, args=("encoding", images[0]))
        first.start()
        assert entered.wait(60)
        second = threading.Thread(target=client, args=("queued", images[1]))
        second.start()
        wait_until(lambda: service.batcher.depth() == 1)
        refused = requests.post(s.url + "/v1/localize", files=files(images[2]), timeout=60)
        alive = requests.get(s.url + "/healthz", timeout=5)  # the event loop answers while the batch encodes
        gate.set()
        first.join(60)
        second.join(60)
        service.map.encode = encode
        after = requests.post(s.url + "/v1/localize", files=files(images[3]), timeout=60)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1 and alive.status_code == 200
    assert "at most 1 may wait (--queue)" in refused.json()["error"]
    assert answers["encoding"].status_code == 200 and answers["queued"].status_code == 200
    assert after.status_code == 200 and after.json()["results"][0]["matches"][0]["row"] == 3


def test_a_new_stream_beyond_max_streams_answers_503_with_retry_after_and_old_streams_go_on(tiny_map):
    folder, images = tiny_map
    with serve(folder, max_streams=1, stream_ttl=120) as s:
        first = requests.post(s.url + "/v1/localize", params={"stream": "a"}, files=files(images[0]), timeout=60)
        refused = requests.post(s.url + "/v1/localize", params={"stream": "b"}, files=files(images[1]), timeout=60)
        plain = requests.post(s.url + "/v1/localize", files=files(images[1]), timeout=60)
        again = requests.post(s.url + "/v1/localize", params={"stream": "a"}, files=files(images[1]), timeout=60)
    assert first.status_code == 200 and plain.status_code == 200
    assert refused.status_code == 503 and 110 <= int(refused.headers["Retry-After"]) <= 120
    assert "all 1 streams (--max-streams) are in use" in refused.json()["error"]
    assert again.json()["results"][0]["sequence"]["frames"] == 2


def test_an_encode_call_that_fails_answers_500_naming_it_and_the_next_request_is_served(tiny_map):
    folder, images = tiny_map
    with serve(folder) as s:
        encode = s.service.map.encode

        def broken(batch):
            raise RuntimeError("the runtime lost its device")

        s.service.map.encode = broken
        failed = requests.post(s.url + "/v1/localize", files=files(images[0]), timeout=60)
        s.service.map.encode = encode
        after = requests.post(s.url + "/v1/localize", files=files(images[0]), timeout=60)
        text = requests.get(s.url + "/metrics", timeout=10).text
    assert 'vpr_errors_total{route="/v1/localize",status="500"} 1.0' in text
    assert failed.status_code == 500
    assert "RuntimeError: the runtime lost its device" in failed.json()["error"]
    assert after.status_code == 200 and after.json()["results"][0]["matches"][0]["row"] == 0


def test_adding_images_needs_the_token_and_the_added_images_are_found(tiny_map, tmp_path):
    import shutil

    folder = tmp_path / "map"
    shutil.copytree(tiny_map[0], folder)
    new = write_images(tmp_path / "new", 2, seed=7, start=50)
    with serve(folder) as s:  # no token: read-only
        readonly = requests.post(s.url + "/v1/map/images", files=files(*new), timeout=60)
    with serve(folder, token="s3cret-token") as s:
        missing = requests.post(s.url + "/v1/map/images", files=files(*new), timeout=60)
        wrong = requests.post(s.url + "/v1/map/images", files=files(*new), timeout=60,
                              headers={"Authorization": "Bearer s3cret-tokeN"})
        before = requests.get(s.url + "/v1/map", timeout=10).json()
        auth = {"Authorization": "Bearer s3cret-token"}
        miscounted = requests.post(s.url + "/v1/map/images", files=files(*new), data={"places": "[1]"}, timeout=60,
                                   headers=auth)
        not_json = requests.post(s.url + "/v1/map/images", files=files(*new), data={"places": "[1,"}, timeout=60,
                                 headers=auth)
        busy = _while_another_writer_holds(folder, lambda: requests.post(s.url + "/v1/map/images", files=files(*new),
                                                                         timeout=60, headers=auth))
        ok = requests.post(s.url + "/v1/map/images", files=files(*new), data={"places": '["dock", 77]'}, timeout=120,
                           headers={"Authorization": "Bearer s3cret-token"})
        after = requests.get(s.url + "/v1/map", timeout=10).json()
        found = requests.post(s.url + "/v1/localize", params={"k": 1}, files=files(*new), timeout=60).json()
    assert readonly.status_code == 403 and "read-only" in readonly.json()["error"]
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["error"]
    assert wrong.status_code == 403 and "not this server's token" in wrong.json()["error"]
    assert miscounted.status_code == 400 and "a JSON list of 2 place ids" in miscounted.json()["error"]
    assert not_json.status_code == 400 and "'places' field is not valid JSON" in not_json.json()["error"]
    assert busy.status_code == 409 and busy.headers["Retry-After"] and "is writing" in busy.json()["error"]
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"added": 2, "version": after["version"]} and after["version"] > before["version"]
    assert after["count"] == before["count"] + 2 == 14
    tops = [res["matches"][0] for res in found["results"]]
    assert [t["row"] for t in tops] == [12, 13] and [t["place"] for t in tops] == ["dock", "77"]
    assert all(t["distance"] < 1e-4 for t in tops)
    assert len(list((folder / "added_images").iterdir())) == 1  # the refused add kept none of its files
    reopened = Map.open(folder)  # committed: a fresh reader sees it
    assert reopened.count == 14 and reopened.version == after["version"]


def _while_another_writer_holds(folder, call):
    """call() while this test holds the map's writer lock as another `vpr map add` would."""
    import fcntl
    import os

    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return call()
    finally:
        os.close(fd)


def test_without_the_serve_extra_create_app_and_vpr_serve_name_the_extra(tiny_map, monkeypatch, capsys):
    from registry import cli
    from registry.serve import ServeExtraMissing, create_app

    monkeypatch.setitem(__import__("sys").modules, "fastapi", None)  # as if fastapi were not installed
    with pytest.raises(ServeExtraMissing, match=r"needs fastapi \(the `serve` extra\): pip install "
                                                r"'clusvpr-zoo\[serve\]'"):
        create_app(tiny_map[0])
    assert cli.main(["serve", str(tiny_map[0])]) == 1
    assert "pip install 'clusvpr-zoo[serve]'" in capsys.readouterr().err


def test_vpr_serve_refuses_bad_options_naming_them(tiny_map, tmp_path, capsys):
    from registry import cli

    assert cli.main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder: pass the folder `vpr map build` wrote" in capsys.readouterr().err
    assert cli.main(["serve", str(tiny_map[0]), "--token-file", str(tmp_path / "none.txt")]) == 2
    assert "--token-file" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert cli.main(["serve", str(tiny_map[0]), "--token-file", str(empty)]) == 2
    assert "one token on its first line" in capsys.readouterr().err
    assert cli.main(["serve", str(tiny_map[0]), "--queue", "0"]) == 2
    assert "--queue must be >= 1" in capsys.readouterr().err


def test_an_add_with_place_ids_the_map_cannot_take_is_a_400_and_leaves_the_map_as_it_was(tmp_path):
    """A map of integer place ids: a `places` field nested 100,000 deep (before: json's RecursionError, a 500), a
    place id of 2^70 (before: taken) and no `places` field (before: the new row's place was its file path) are each
    a 400 naming the problem; no file of the map changes, none is added."""
    from serve_helpers import MODEL

    import registry

    images = write_images(tmp_path / "images", 8)
    weights = tmp_path / "weights"
    registry.create(MODEL).save_pretrained(weights)
    folder = tmp_path / "map"
    Map.build(folder, images, model=MODEL, pretrained=str(weights), index="flat", places=[i // 2 for i in range(8)],
              progress=False)
    new = write_images(tmp_path / "new", 1, seed=7, start=50)
    before = {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    auth = {"Authorization": "Bearer s3cret-token"}
    with serve(folder, token="s3cret-token") as s:
        answers = [requests.post(s.url + "/v1/map/images", files=files(*new), data=data, timeout=60, headers=auth)
                   for data in ({"places": "[" * 100_000 + "]" * 100_000}, {"places": f"[{2**70}]"}, {})]
    words = ["the 'places' field nests 100000 levels", f"place id {2**70} is outside the signed 64-bit range",
             "this map's place ids are integers: give an integer place id for each new image"]
    for answer, word in zip(answers, words):
        assert answer.status_code == 400 and word in answer.json()["error"], answer.text[:300]
    assert {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} == before
