"""The page at / of the service, in a real headless browser (Debian's chromium through chromedriver and selenium):
the test starts the service on a loopback port over a tiny map of real Nordland frames, uploads a winter frame
through the page's file input and reads the top-k matches off the page, which must be Map.query's; the route mode
plays frames on one stream and shows, per frame, Map.query's single-frame match beside Map.sequence_query's
sequence match; an API error is shown as text. Skipped, naming what is missing, without chromium, chromedriver or
selenium."""
from __future__ import annotations

import importlib.util
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from registry.datasets.loader import EMBEDDED_DATA

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NORDLAND = EMBEDDED_DATA / "nordland_test"
MAP_FILES = [f"images-{n:05d}.png" for n in range(20010, 20130, 10)]  # 12 consecutive summer places
QUERY = "images-20050.png"
ROUTE = [f"images-{n:05d}.png" for n in (20040, 20070, 20050, 20060)]  # given out of order: the page sorts them
WAIT_S = 120


def _missing() -> list:
    missing = [f"{p} (apt-get install chromium chromium-driver)" for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    for module, fix in (("selenium", "pip install selenium"), ("fastapi", "pip install 'clusvpr-zoo[serve]'"),
                        ("uvicorn", "pip install 'clusvpr-zoo[serve]'")):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the Python module {module} ({fix})")
    return missing


pytestmark = pytest.mark.skipif(bool(_missing()), reason=f"the browser test needs {', '.join(_missing())}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def map_folder(tmp_path_factory) -> Path:
    from registry.maps import Map

    folder = tmp_path_factory.mktemp("page") / "map"
    Map.build(folder, [NORDLAND / "summer" / name for name in MAP_FILES], model="clusvpr_vgg16", pretrained=True,
              runtime="torch", progress=False)
    return folder


@pytest.fixture(scope="module")
def nordland_map(map_folder):
    from registry.maps import Map

    return Map.open(map_folder)


@pytest.fixture(scope="module")
def service(map_folder):
    """The real app on 127.0.0.1:PORT in a uvicorn server thread; its base URL."""
    import uvicorn

    from registry.serve import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(map_folder), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base, server)
    yield base
    server.should_exit = True
    thread.join(timeout=30)


def _wait_ready(base: str, server) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    server.should_exit = True
    pytest.fail(f"the service on {base} was not ready within {WAIT_S} s")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_state(driver, element_id: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element("id", element_id).get_attribute("data-state") in ("done", "error"))
    return driver.find_element("id", element_id).get_attribute("data-state")


def _error_text(driver) -> str:
    box = driver.find_element("id", "error")
    return box.get_attribute("textContent") if box.is_displayed() else ""


def test_an_uploaded_image_shows_map_querys_matches_and_its_heat_map(nordland_map, service, browser):
    browser.get(service + "/")
    query = NORDLAND / "winter" / QUERY
    browser.find_element("id", "query-file").send_keys(str(query))
    assert _wait_state(browser, "status") == "done", _error_text(browser)
    want = nordland_map.query([query], k=5)[0]
    rows = browser.find_elements("css selector", "#matches tbody tr")
    assert len(rows) == len(want) == 5
    for row, match in zip(rows, want):
        assert row.get_attribute("data-rank") == str(match.rank)
        assert row.find_element("css selector", ".place").text == str(match.place)
        shown = float(row.find_element("css selector", ".distance").get_attribute("data-distance"))
        assert shown == pytest.approx(match.distance, abs=1e-4)
        assert row.find_element("css selector", ".distance").text == f"{match.distance:.4f}"
    top = rows[0].find_element("css selector", "img.thumb")
    # the thumbnail is the top match's database image, served by row id (Nordland frames are 64 x 32)
    assert browser.execute_script("return [arguments[0].complete, arguments[0].naturalWidth, "
                                  "arguments[0].naturalHeight]", top) == [True, 64, 32]
    assert top.get_attribute("src").endswith(f"/v1/map/images/{want[0].row}")
    # the heat map is drawn over the query: the canvas differs with it on and off, and off is the plain image
    canvas = browser.find_element("id", "query-canvas")
    with_heat = browser.execute_script("return arguments[0].toDataURL()", canvas)
    browser.find_element("id", "show-heat").click()
    without = browser.execute_script("return arguments[0].toDataURL()", canvas)
    assert with_heat != without
    size = browser.execute_script("return [arguments[0].width, arguments[0].height]", canvas)
    assert size[0] % 64 == 0 and size[1] * 2 == size[0]


def test_the_map_panel_shows_get_v1_map(nordland_map, service, browser):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(service + "/")
    cell = "#map-info dd[data-key='count']"
    WebDriverWait(browser, WAIT_S).until(lambda d: d.find_elements("css selector", cell))
    assert browser.find_element("css selector", cell).text == str(nordland_map.count) == str(len(MAP_FILES))
    assert browser.find_element("css selector", "#map-info dd[data-key='version']").text == str(nordland_map.version)
    assert browser.find_element("css selector", "#map-info dd[data-key='model']").text == nordland_map.model_name


def test_the_route_mode_shows_single_frame_and_sequence_matches_per_frame(nordland_map, service, browser):
    browser.get(service + "/")
    browser.find_element("id", "mode-route").click()
    assert browser.find_element("id", "route").is_displayed() and not browser.find_element("id", "single") \
        .is_displayed()
    files = [NORDLAND / "winter" / name for name in ROUTE]
    browser.find_element("id", "route-files").send_keys("\n".join(str(f) for f in files))
    assert _wait_state(browser, "route-status") == "done", _error_text(browser)
    ordered = sorted(files, key=lambda p: p.name)
    length = int(browser.execute_script("return fetch('v1/map').then(r => r.json())")["sequence_length"])
    single = nordland_map.query(ordered, k=5)
    sequence = nordland_map.sequence_query(ordered, k=5, length=length)
    rows = browser.find_elements("css selector", "#route-table tbody tr")
    assert [r.find_element("css selector", ".file").text for r in rows] == [p.name for p in ordered]
    for i, row in enumerate(rows):
        assert row.get_attribute("data-frames-seen") == str(i + 1)
        assert row.find_element("css selector", ".single-place").text == str(single[i][0].place)
        assert float(row.find_element("css selector", ".single-distance").get_attribute("data-distance")) == \
            pytest.approx(single[i][0].distance, abs=1e-4)
        assert row.find_element("css selector", ".sequence-place").text == str(sequence[i][0].place)
        assert float(row.find_element("css selector", ".sequence-distance").get_attribute("data-distance")) == \
            pytest.approx(sequence[i][0].distance, abs=1e-4)


def test_an_api_error_is_shown_as_text_on_the_page(service, browser, tmp_path):
    browser.get(service + "/")
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"these bytes are not a PNG file")
    browser.find_element("id", "query-file").send_keys(str(bad))
    assert _wait_state(browser, "status") == "error"
    text = _error_text(browser)
    assert text[:1] == "4" and "image" in text.lower(), text  # "<status>: <the API's message>"
    assert browser.find_elements("css selector", "#matches tbody tr") == []
    assert not browser.find_element("id", "query-view").is_displayed()
    # the service still answers afterwards: a good image after the bad one
    browser.find_element("id", "query-file").send_keys(str(NORDLAND / "winter" / QUERY))
    assert _wait_state(browser, "status") == "done", _error_text(browser)
    assert not browser.find_element("id", "error").is_displayed()
