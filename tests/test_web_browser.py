"""The web page in a real browser (headless Chromium driven by selenium), against `edged run` on the Hamilton
clip with a real mosquitto: a homeowner logs in, watches the live view, names the unknown visitor the camera
saw (he is then recognized, with his face on the events page), enrolls a new person from a photo and removes
a sample. Screenshots of every page go to $EDGED_WEB_SCREENSHOTS (scripts/web-screenshots.sh: docs/web/).

Needs Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs them)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edged.config import EnrollConfig
from edged.distance import squared_l2
from edged.gallery import unknowns
from edged.gallery.enroll import gate_face
from edged.gallery.store import Gallery
from edged.vision.imageio import load_image
from tests.conftest import LIN, wait_until
from tests.mosquitto import Broker
from tests.test_web import PASSWORD, Site, start_daemon, stop_daemon

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("EDGED_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EDGED_CHROMEDRIVER", "/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no Chromium ({CHROMIUM}) or chromedriver ({CHROMEDRIVER}): apt-get install chromium "
                    f"chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1000,1100", f"--user-data-dir={tmp_path / 'chromium'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    """Saves a screenshot of each page under $EDGED_WEB_SCREENSHOTS (else the test's directory)."""

    def __init__(self, driver: object, tmp_path: Path) -> None:
        self.driver = driver
        self.dir = Path(os.environ.get("EDGED_WEB_SCREENSHOTS") or tmp_path / "screenshots")
        self.dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str) -> None:
        assert self.driver.save_screenshot(str(self.dir / f"{name}.png"))  # type: ignore[attr-defined]


def click_and_wait(driver: object, element: object, url: str | None = None, timeout: float = 30.0) -> None:
    """Click (a submit button, a link) and wait until the next page has loaded (at `url` when given)."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    element.click()  # type: ignore[attr-defined]
    wait = WebDriverWait(driver, timeout)
    wait.until(ec.staleness_of(element))
    if url is not None:
        wait.until(ec.url_to_be(url))


def lin_visit_ids(gallery: Path, lin: np.ndarray, enrollable: bool = False) -> set[int]:
    """The stored unknown visits with a face of Lin-Manuel (`enrollable`: one that passes the enroll gates)."""
    with Gallery(gallery, create=False) as g:
        samples = unknowns.samples_of(g, [v.id for v in unknowns.visits(g)])
    return {int(s.visit_id or 0) for s in samples if squared_l2(s.embedding[None], lin[None])[0, 0] <= 0.16
            and (not enrollable or gate_face(s.face_px, s.sharpness, EnrollConfig()) is None)}


def test_homeowner_walkthrough_in_a_real_browser(browser: object, tmp_path: Path, clip: Path, fr_dir: Path,
                                                 dlib_pipeline) -> None:
    from selenium.webdriver.common.by import By

    d = browser  # type: ignore[assignment]
    shots = Shots(d, tmp_path)
    broker = Broker(tmp_path / "broker").start()
    gallery = tmp_path / "gallery.db"
    Gallery(gallery).close()  # nobody enrolled: Lin-Manuel is an unknown visitor until named
    site = Site(tmp_path, gallery, extra={
        "camera": {"source": str(clip), "name": "stage", "loop": True},
        "mqtt": {"enabled": True, "host": "127.0.0.1", "port": broker.port},
        "gallery": {"path": str(gallery), "reload_check_s": 0.5}})
    log = tmp_path / "run.log"
    proc = start_daemon(site.config, log)
    try:
        base = site.base

        # every page is refused without a session: the browser lands on the login page
        for path in ("/live", "/events", "/unknowns", "/people", "/access", "/status", "/live.jpg"):
            d.get(base + path)
            assert d.current_url == base + "/login", path
        shots("login")
        d.find_element(By.ID, "password").send_keys("not the password")
        click_and_wait(d, d.find_element(By.ID, "login"))
        assert d.find_element(By.ID, "message").text == "wrong password"
        d.find_element(By.ID, "password").send_keys(PASSWORD)
        click_and_wait(d, d.find_element(By.ID, "login"), base + "/live")

        # the live view (MJPEG) updates: two different pictures a moment apart
        live = d.find_element(By.ID, "live")
        assert wait_until(lambda: d.execute_script("return arguments[0].naturalWidth", live) == 640, 20)
        first = live.screenshot_as_png
        time.sleep(1.0)
        assert wait_until(lambda: live.screenshot_as_png != first, 10), "the live view did not change"
        shots("live")

        # a state change without the CSRF token is refused, even from the logged-in page
        status = d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch('/people/enroll', {method: 'POST', body: new URLSearchParams({name: 'x'})})"
            ".then(r => done(r.status), e => done(String(e)));")
        assert status == 403

        # the unknown visitor: wait until the camera has stored a visit of Lin-Manuel with a face big and sharp
        # enough to enroll (his first visits may have only faces under enroll.min_face_px), then name his group
        lin = dlib_pipeline.process(load_image(fr_dir / "lin-manuel-miranda.png"))[0].embedding
        assert wait_until(lambda: lin_visit_ids(gallery, lin, enrollable=True), 90, poll=1.0), \
            log.read_text()[-2000:]
        d.get(base + "/unknowns")
        shots("unknowns")
        ids = lin_visit_ids(gallery, lin, enrollable=True)
        sections = d.find_elements(By.CSS_SELECTOR, "section.cluster")
        for section in sections:  # a group with no enrollable face says why and offers no name form
            blocked = section.find_elements(By.CSS_SELECTOR, "p.not-enrollable")
            assert bool(blocked) != bool(section.find_elements(By.CSS_SELECTOR, "form.name-form")), section.text
        mine = [s for s in sections if set(map(int, s.find_element(By.CSS_SELECTOR, "input[name=visits]")
                                               .get_attribute("value").split(","))) & ids]
        assert mine, [s.text for s in sections]
        face = mine[0].find_element(By.CSS_SELECTOR, "img.face")
        assert d.execute_script("return arguments[0].naturalWidth", face) > 0  # his best crop is shown
        form = mine[0].find_element(By.CSS_SELECTOR, "form.name-form")
        form.find_element(By.NAME, "name").send_keys(LIN)
        click_and_wait(d, form.find_element(By.TAG_NAME, "button"))
        assert d.current_url == f"{base}/people/{LIN}", d.page_source[:1500]
        samples = d.find_elements(By.CSS_SELECTOR, "figure.sample")
        assert samples, d.page_source[:1000]
        shots("person")

        # named, he is recognized on the camera's next pass, and the event shows his face
        def recognized_rows() -> list[object]:
            d.get(base + f"/events?person={LIN}&kind=recognized")
            return d.find_elements(By.CSS_SELECTOR, "li.event.recognized img.thumb")

        assert wait_until(lambda: recognized_rows(), 40, poll=1.0), log.read_text()[-2000:]
        thumb = recognized_rows()[0]
        assert d.execute_script("return arguments[0].naturalWidth", thumb) > 0
        d.get(base + "/events")
        shots("events")

        # a new person from an uploaded photo
        d.get(base + "/people")
        d.find_element(By.ID, "enroll-name").send_keys("barack-obama")
        d.find_element(By.ID, "enroll-photos").send_keys(str(fr_dir / "obama.jpg"))
        click_and_wait(d, d.find_element(By.CSS_SELECTOR, "#enroll button"))
        assert d.find_element(By.ID, "report").text.startswith("Added 1 sample(s)")
        d.get(base + "/people")
        names = [a.text for a in d.find_elements(By.CSS_SELECTOR, "#people a")]
        assert names == ["barack-obama", LIN], names
        shots("people")

        # remove one of Lin-Manuel's samples (when he has several), or be told the last one stays
        d.get(f"{base}/people/{LIN}")
        before = len(d.find_elements(By.CSS_SELECTOR, "figure.sample"))
        click_and_wait(d, d.find_element(By.CSS_SELECTOR, "figure.sample button"))
        if before > 1:
            assert len(d.find_elements(By.CSS_SELECTOR, "figure.sample")) == before - 1
        else:
            assert "last of" in d.find_element(By.ID, "error").text
        with Gallery(gallery) as g:
            assert {p.name: p.samples for p in g.people()}[LIN] == max(1, before - 1)

        d.get(base + "/access")
        shots("access")
        d.get(base + "/status")
        assert "streaming" in d.find_element(By.ID, "status").text
        shots("status")
        d.get(base + "/api/docs")
        shots("api")
        click_and_wait(d, d.find_element(By.ID, "logout"), base + "/login")
        d.get(base + "/people")
        assert d.current_url == base + "/login"
    except BaseException:
        print("--- edged run log (tail):", *log.read_text().splitlines()[-60:], sep="\n")
        print("--- page at", d.current_url, ":", d.page_source[:3000])
        shots("failure")
        raise
    finally:
        rc = stop_daemon(proc)
        broker.stop()
    assert rc == 0, log.read_text()[-3000:]
    if not os.environ.get("EDGED_WEB_SCREENSHOTS"):
        shutil.rmtree(shots.dir, ignore_errors=True)
