"""The status page in a real browser (headless Chromium), served by a real server fed real heartbeats."""
from __future__ import annotations

import os
import shutil
import time

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from shoal_server.geo import Location
from shoal_server.heartbeat import Heartbeat
from shoal_server.statuspage import PageRequest, load_world_outline, render_status
from shoal_server.table import CacheEntry
from support.heartbeats import upstream_heartbeat
from support.procs import http_get

STATIC = os.path.join(os.path.dirname(os.path.abspath(__import__("shoal_server").__file__)), "static")
SITES = [  # (public_ip, hostname, load, max_load)
    ("128.141.10.1", "squid1.cern.example", 40000.0, 100000.0),
    ("188.184.20.2", "squid2.cern.example", 1000.0, 100000.0),
    ("131.225.30.3", "squid.fnal.example", 5000.0, 122000.0),
    ("142.90.40.4", "squid.triumf.example", 118000.0, 122000.0),
    ("130.87.50.5", "squid.kek.example", 25000.0, 50000.0),
    ("150.203.60.6", "squid.anu.example", 12.0, 122000.0),
]
XSS = '<img src=x onerror="window.pwned=1">'


def rows(driver):
    return driver.find_elements(By.CSS_SELECTOR, "#caches tbody tr[data-uuid]")


def load_ratios(driver):
    cells = driver.find_elements(By.CSS_SELECTOR, "#caches tbody td.load")
    return [float(c.get_attribute("data-load")) / float(c.get_attribute("data-max-load")) for c in cells]


def click_sort(driver, column):
    driver.find_element(By.CSS_SELECTOR, f'th[data-col="{column}"] a').click()
    WebDriverWait(driver, 10).until(
        lambda d: d.find_element(By.ID, "caches").get_attribute("data-sort") == column)


def assert_nothing_ran(driver):
    assert driver.execute_script("return window.pwned === undefined")
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text


@pytest.fixture
def live(server_factory, publisher):
    server = server_factory(cache={"cache_cleanse_interval": 5, "cache_inactive_time": 120})
    # Markup in a heartbeat never gets in: the validator refuses it (counted as bad_hostname).
    publisher.send(upstream_heartbeat("128.141.99.9", hostname=XSS, uuid="hostile-1"))
    publisher.send(upstream_heartbeat("128.141.99.9", hostname="ok.example.org", uuid=XSS))
    for ip, host, load, max_load in SITES:
        publisher.send(upstream_heartbeat(ip, load=load, hostname=host, uuid=f"uuid-{host}", max_load=max_load))
    server.wait_for(lambda d: len(d) == len(SITES), timeout=20, path="/all")
    server.wait_for(lambda h: sum(h["dropped"].values()) >= 2)
    return server


def test_status_page_rows_marks_sorting_and_screenshot(live, browser_factory, artifacts_dir):
    driver = browser_factory(1280, 1000).driver
    driver.get(live.url + "/")
    assert driver.title == f"Shoal: {len(SITES)} caches"
    assert len(rows(driver)) == len(SITES)
    marks = driver.find_elements(By.CSS_SELECTOR, "#map circle.mark")
    assert len(marks) == len(SITES)
    assert driver.find_element(By.ID, "cache-count").text == str(len(SITES))
    assert float(driver.find_element(By.ID, "total-load").text) == pytest.approx(sum(s[2] for s in SITES), abs=1)
    assert driver.find_element(By.ID, "consumer-state").text == "connected"
    # The marks sit where the sites are: Fermilab west of CERN, CERN west of KEK, Canberra south of all.
    titles = {m.find_element(By.TAG_NAME, "title").get_attribute("textContent").split(" — ")[0]:
              (float(m.get_attribute("cx")), float(m.get_attribute("cy"))) for m in marks}
    assert titles["squid.fnal.example"][0] < titles["squid2.cern.example"][0] < titles["squid.kek.example"][0]
    assert titles["squid.anu.example"][1] > max(y for _, y in titles.values() if _ != titles["squid.anu.example"][0])
    # The busiest cache's mark is the biggest and red.
    busiest = next(m for m in marks if "triumf" in m.find_element(By.TAG_NAME, "title").get_attribute("textContent"))
    assert "l3" in busiest.get_attribute("class")
    assert float(busiest.get_attribute("r")) == max(float(m.get_attribute("r")) for m in marks)
    # The stylesheet came from the package through /static under the page's CSP.
    header_bg = driver.execute_script("return getComputedStyle(document.querySelector('header')).backgroundColor")
    assert header_bg == "rgb(23, 50, 77)"
    assert_nothing_ran(driver)

    hosts = [r.find_element(By.CSS_SELECTOR, "td.host").text.split(":")[0] for r in rows(driver)]
    assert hosts == sorted(hosts)
    click_sort(driver, "load")            # busiest first
    ratios = load_ratios(driver)
    assert ratios == sorted(ratios, reverse=True) and len(ratios) == len(SITES)
    assert "triumf" in rows(driver)[0].text
    click_sort(driver, "load")            # the same heading again: the other way round
    assert driver.find_element(By.ID, "caches").get_attribute("data-order") == "asc"
    assert load_ratios(driver) == sorted(ratios)
    click_sort(driver, "hostname")
    assert [r.find_element(By.CSS_SELECTOR, "td.host").text.split(":")[0] for r in rows(driver)] == sorted(hosts)
    click_sort(driver, "load")
    assert driver.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]').get_attribute("content") == "30"
    driver.save_screenshot(os.path.join(artifacts_dir, "status.png"))

    # On a phone: nothing wider than the screen, every row still there.
    phone = browser_factory(500, 1200).driver
    phone.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 390, "height": 1200, "deviceScaleFactor": 1, "mobile": True})
    phone.get(live.url + "/")
    assert len(rows(phone)) == len(SITES)
    assert phone.execute_script("return window.innerWidth") == 390
    assert phone.execute_script("return document.documentElement.scrollWidth") <= 390
    phone.save_screenshot(os.path.join(artifacts_dir, "status-phone.png"))


def test_status_page_pages_through_many_caches(server_factory, publisher, browser_factory):
    server = server_factory(cache={"cache_cleanse_interval": 5, "cache_inactive_time": 120},
                            general={"status_page_size": 10})
    for i in range(23):
        publisher.send(upstream_heartbeat(f"131.225.{i}.1", load=i * 100.0, hostname=f"squid{i:02d}.fnal.example",
                                          uuid=f"page-{i:02d}"))
    server.wait_for(lambda d: len(d) == 23, timeout=20, path="/all")
    driver = browser_factory().driver
    driver.get(server.url + "/?sort=load&order=desc")
    seen = []
    for page in (1, 2, 3):
        assert driver.find_element(By.ID, "page-info").text.startswith(f"page {page} of 3")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#map circle.mark")) == 23   # the map shows them all
        seen += [r.get_attribute("data-uuid") for r in rows(driver)]
        if page < 3:
            driver.find_element(By.LINK_TEXT, "next ›").click()
            WebDriverWait(driver, 10).until(lambda d, p=page: f"page {p + 1} of" in d.find_element(By.ID, "page-info").text)
    assert seen == [f"page-{i:02d}" for i in reversed(range(23))]


def test_hostile_entry_rendered_and_opened_in_the_browser_does_not_execute(tmp_path, browser_factory):
    # Heartbeats cannot carry markup, so the renderer is fed a hostile entry directly, and the
    # page is opened from a file: no CSP header, so only escaping stands between it and the browser.
    hostile = ('"><script>window.pwned=1</script><img src=x onerror="window.pwned=2">'
               "<svg onload=\"window.pwned=3\"></svg>'\"&amp;")
    hb = Heartbeat(uuid=hostile, hostname=hostile, squid_port=3128, public_ip=hostile, private_ip=hostile,
                   external_ip=None, load=10.0, max_load=100.0, timestamp=time.time(), drift=0.0, verified=False,
                   upstream="both", cache_type="squid", agent_version=hostile, user_id=hostile)
    entry = CacheEntry(hb=hb, created=time.time() - 60, last_active=time.time(),
                       location=Location(46.2, 6.1, city=hostile, country_name=hostile, country_code="CH"))
    page = render_status([entry], time.time(), PageRequest(), 100, 60.0, True, load_world_outline())
    (tmp_path / "index.html").write_text(page, encoding="utf-8")
    shutil.copytree(STATIC, tmp_path / "static")
    driver = browser_factory().driver
    driver.get((tmp_path / "index.html").as_uri())
    time.sleep(0.5)   # let any onload/onerror handler have its chance
    assert_nothing_ran(driver)
    assert driver.find_elements(By.CSS_SELECTOR, "script, img, #caches svg[onload]") == []
    assert driver.find_element(By.CSS_SELECTOR, "td.host").text.startswith(hostile)
    assert len(rows(driver)) == 1 and len(driver.find_elements(By.CSS_SELECTOR, "#map circle.mark")) == 1


def test_live_page_forbids_scripts(live):
    status, headers, body = http_get(live.url + "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    status, headers, css = http_get(live.url + "/static/status.css")
    assert status == 200 and headers["Content-Type"].startswith("text/css") and b"--l3" in css
    assert http_get(live.url + "/static/../webapp.py")[0] == 404


def test_refused_senders_are_listed_in_the_browser_and_nothing_runs(live, browser_factory):
    # The live fixture's two hostile heartbeats were refused; their senders are on the page.
    driver = browser_factory().driver
    driver.get(live.url + "/#refused")
    time.sleep(0.5)
    assert_nothing_ran(driver)
    reasons = [r.get_attribute("data-reason") for r in
               driver.find_elements(By.CSS_SELECTOR, "#refused-senders tbody tr[data-reason]")]
    assert sorted(reasons) == ["bad_hostname", "bad_uuid"]
    text = driver.find_element(By.ID, "refused-senders").text
    assert "ok.example.org" in text and "hostile-1" in text and "unreadable" in text
    assert driver.find_element(By.ID, "refused-count").text == "2"
    assert driver.find_elements(By.CSS_SELECTOR, "#refused script, #refused img") == []
