"""The experiments UI in a real browser, inside a real Airflow, on a running experiment.

One Airflow (``tests/airflow/airflow_server.py``: API server with the plugin,
scheduler, DAG processor, triggerer) runs for the module, with the DAG
``maggy_ui_watch`` (``dags/``): a search of sleep trials that report a point of
their curve every second. Headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed here when missing) is driven with Selenium:

1. sign in through Airflow's login page;
2. open the task instance's "Maggy experiment" tab;
3. see a running trial's curve grow while the page is not reloaded;
4. press stop on one running trial and see the coordinator's answer
   (``early_stopped``, "stopped from the UI by admin");
5. press stop on the experiment and see it end;
6. the same pages in the dark theme, following the Airflow UI's.

Screenshots go to the module's output folder (printed; ``MAGGY_SCREENSHOTS``
chooses another). The same Airflow then answers the API tests: a user without
edit permission gets 403 for the stop actions, a POST authenticated by the
session cookie without the CSRF token is refused, and the JSON is ``result.json``.

Run: ``./scripts/test.sh tests/browser`` (Java 17 and Redis needed; a few minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "airflow"))
from airflow_server import USERNAME, AirflowServer, wait_for  # noqa: E402

pytestmark = [
    pytest.mark.browser,
    pytest.mark.airflow,
    pytest.mark.integration,
    pytest.mark.slow,
]

HERE = Path(__file__).resolve().parent
DAG_ID = "maggy_ui_watch"
TASK_ID = "watch"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
)
VIEWER = "viewer"


def ensure_chromium() -> None:
    """Install Debian's chromium and chromium-driver when they are missing (as root)."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("chromium and chromium-driver are missing and cannot be installed here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env, timeout=900)
    subprocess.run(
        ["apt-get", "install", "-y", "chromium", "chromium-driver"],
        check=True,
        env=env,
        timeout=1800,
    )


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("MAGGY_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[AirflowServer]:
    base = tmp_path_factory.mktemp("airflow-ui")
    dags = base / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").symlink_to(HERE / "dags" / f"{DAG_ID}.py")
    server = AirflowServer(
        base / "home", dags, base / "results", redis_url, users={VIEWER: "viewer"}
    )
    try:
        with server:
            server.wait_dag(DAG_ID, timeout=180)
            server.unpause(DAG_ID)
            yield server
    finally:
        import redis

        from maggy_core.channel import key_prefix

        client = redis.Redis.from_url(redis_url)
        for path in (base / "results").glob("*"):
            keys = list(client.scan_iter(match=key_prefix(path.name) + "*", count=1000))
            if keys:
                client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def run(airflow: AirflowServer) -> dict[str, str]:
    """A triggered run of the DAG whose experiment has running trials."""
    from maggy_airflow.operators.links import experiment_id_for

    run_id = airflow.trigger(DAG_ID, {})
    experiment_id = experiment_id_for(DAG_ID, TASK_ID, run_id, -1)
    journal = airflow.results_dir / experiment_id / "journal.jsonl"

    def started() -> bool:
        airflow.check_alive()
        try:
            return '"trial_started"' in journal.read_text(encoding="utf-8")
        except OSError:
            return False

    wait_for(
        started,
        400,
        f"a trial of {experiment_id} started",
        interval=1.0,
        on_timeout=lambda: airflow.run_diagnostics(DAG_ID, run_id),
    )
    return {"run_id": run_id, "experiment_id": experiment_id}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="maggy-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def script_errors(driver: Any) -> list[str]:
    """The errors of maggy's pages and scripts since the last call (not the Airflow
    UI's own, such as its 401 for /ui/config before the login)."""
    return [
        e["message"]
        for e in driver.get_log("browser")
        if e["level"] == "SEVERE" and ("/maggy/" in e["message"] or "Uncaught" in e["message"])
    ]


def sign_in(driver: Any, server: AirflowServer) -> None:
    """Through Airflow's own login page, as a person does."""
    from selenium.webdriver.common.by import By

    driver.get(server.base_url + "/")
    password = wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, "input[type=password]"),
        120,
        "Airflow's login form",
    )[0]
    username = driver.find_element(By.CSS_SELECTOR, "input[name=username], input[type=text]")
    username.send_keys(USERNAME)
    password.send_keys(server.password)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(
        lambda: "login" not in driver.current_url and driver.get_cookie("_token"),
        60,
        "signed in",
    )


def open_task_tab(driver: Any, server: AirflowServer, run_id: str) -> None:
    """The task instance's page, its "Maggy experiment" tab, and into its frame."""
    from selenium.webdriver.common.by import By

    driver.switch_to.default_content()
    driver.get(f"{server.base_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{TASK_ID}")
    # Airflow's pages re-render while they load: elements are found and read in one
    # script call (an element found in one call can be gone by the next), and the
    # click is retried if the tab was replaced in between.
    find_tab = """
        return [...document.querySelectorAll('a, button')]
            .filter(e => e.innerText.trim() === 'Maggy experiment');"""

    def click_tab() -> bool:
        from selenium.common.exceptions import StaleElementReferenceException

        found = driver.execute_script(find_tab)
        if not found:
            return False
        try:
            found[0].click()
        except StaleElementReferenceException:
            return False
        return True

    wait_for(click_tab, 90, 'the task instance\'s "Maggy experiment" tab')
    frame = wait_for(
        lambda: driver.execute_script(
            "return [...document.querySelectorAll('iframe')]"
            ".filter(f => (f.getAttribute('src') || '').includes('/maggy/task/'));"
        ),
        60,
        "the tab's frame",
    )[0]
    # The UI fills in the placeholders; an unmapped task's {MAP_INDEX} stays as it is.
    src = frame.get_attribute("src")
    assert f"/maggy/task/{DAG_ID}/{quote(run_id, safe='')}/{TASK_ID}/" in src, src
    driver.switch_to.frame(frame)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#curves canvas"), 60, "the curves")


def points(driver: Any) -> dict[str, int]:
    """Trial id -> points of its curve now drawn."""
    raw = driver.find_element("id", "curves").get_attribute("data-points")
    return json.loads(raw or "{}")


def statuses(driver: Any) -> dict[str, str]:
    """Trial id -> status as the table shows it, read in one script call: the page
    re-renders its rows as updates arrive, so rows found one call earlier may be gone."""
    pairs = driver.execute_script(
        "return Array.from(document.querySelectorAll('#trials-table tbody tr'))"
        ".map(r => [r.getAttribute('data-trial'), r.getAttribute('data-status')]);"
    )
    return {trial: status for trial, status in pairs or []}


def page_diagnostics(driver: Any, server: AirflowServer, experiment_id: str) -> str:
    """What the page shows and what its JSON says, for a failed wait."""
    reply = httpx.get(
        f"{server.base_url}/maggy/api/experiments/{experiment_id}/live",
        headers={"Authorization": f"Bearer {server.token()}"},
        timeout=30,
    )
    live = reply.json() if reply.status_code == 200 else reply.text[:2000]
    summary = (
        {t["trial_id"]: (t["status"], len(t.get("history") or [])) for t in live["trials"]}
        if isinstance(live, dict)
        else live
    )
    note = driver.find_element("id", "live-note").text
    return (
        f"page points: {points(driver)}\npage statuses: {statuses(driver)}\nnote: {note}\n"
        f"ack: {ack(driver)}\nscript errors: {script_errors(driver)}\n/live: {summary}\n"
        f"live_error: {live.get('live_error') if isinstance(live, dict) else None}\n"
        + server.diagnostics(20)
    )


def ack(driver: Any) -> str:
    return str(driver.find_element("id", "ack").text)


def test_watch_and_steer_a_running_experiment(airflow, run, browser, shots):
    from selenium.webdriver.common.by import By

    driver = browser
    sign_in(driver, airflow)
    open_task_tab(driver, airflow, run["run_id"])
    assert driver.execute_script("return location.pathname").endswith(
        f"/maggy/experiments/{run['experiment_id']}"
    )
    assert driver.find_element("id", "status").text == "running"
    assert driver.execute_script("return document.documentElement.dataset.theme") == "light"

    # The curves grow in place: a marker set in the page survives the updates.
    driver.execute_script("window.__maggyNoReload = 'still here'")
    first = wait_for(
        lambda: {
            t: n
            for t, n in points(driver).items()
            if 0 < n < 200 and statuses(driver).get(t) == "running"
        },
        90,
        "a running trial with reported points",
    )
    trial, before = next(iter(first.items()))
    grown = wait_for(
        lambda: points(driver).get(trial, 0) >= before + 3 and points(driver)[trial],
        60,
        f"the curve of {trial} grown from {before} points",
        on_timeout=lambda: page_diagnostics(driver, airflow, run["experiment_id"]),
    )
    assert driver.execute_script("return window.__maggyNoReload") == "still here"
    assert grown >= before + 3
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "task-tab-running-light.png"))
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe[src*='/maggy/task/']"))

    # Stop one running trial.
    running = [t for t, s in statuses(driver).items() if s == "running"]
    assert running, statuses(driver)
    victim = running[0]
    driver.find_element(By.CSS_SELECTOR, f"button.stop-trial[data-trial='{victim}']").click()
    wait_for(
        lambda: statuses(driver).get(victim) == "early_stopped",
        90,
        f"trial {victim} early_stopped",
    )
    wait_for(
        lambda: f"Trial {victim} early_stopped: stopped from the UI by {USERNAME}" in ack(driver),
        30,
        "the coordinator's acknowledgement",
    )
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "task-tab-trial-stopped-light.png"))
    driver.switch_to.frame(driver.find_element(By.CSS_SELECTOR, "iframe[src*='/maggy/task/']"))

    # Stop the whole experiment.
    driver.find_element("id", "stop-experiment").click()
    wait_for(
        lambda: driver.find_element("id", "status").text != "running", 120, "the experiment ended"
    )
    assert driver.find_element("id", "status").text == "stopped"
    wait_for(
        lambda: "The experiment stopped" in ack(driver) and f"by {USERNAME}" in ack(driver),
        30,
        "the experiment's stop acknowledged",
    )
    assert driver.execute_script("return window.__maggyNoReload") == "still here"
    assert not driver.find_elements(By.CSS_SELECTOR, "button.stop-trial")
    assert not driver.find_element("id", "stop-experiment").is_displayed()
    errors = script_errors(driver)
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "task-tab-stopped-light.png"))
    assert errors == [], errors

    result_file = airflow.results_dir / run["experiment_id"] / "result.json"
    result = wait_for(
        lambda: result_file.exists() and json.loads(result_file.read_text(encoding="utf-8")),
        120,
        "result.json written",
    )
    assert result["status"] == "stopped"
    assert f"stopped from the UI by {USERNAME}" in result["reason"]
    trials = {t["trial_id"]: t for t in result["trials"]}
    assert trials[victim]["status"] == "early_stopped"
    assert trials[victim]["stop_reason"] == f"stopped from the UI by {USERNAME}"
    journal = (airflow.results_dir / run["experiment_id"] / "journal.jsonl").read_text()
    assert f"stopped from the UI by {USERNAME}" in journal

    # The dark theme: the UI's choice, followed by the framed page.
    driver.execute_script("localStorage.setItem('theme', 'dark')")
    open_task_tab(driver, airflow, run["run_id"])
    assert driver.execute_script("return document.documentElement.dataset.theme") == "dark"
    background = driver.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 24, 39)", background
    driver.switch_to.default_content()
    driver.save_screenshot(str(shots / "task-tab-stopped-dark.png"))
    driver.get(f"{airflow.base_url}/maggy/experiments")
    assert run["experiment_id"] in driver.page_source
    driver.save_screenshot(str(shots / "experiments-dark.png"))
    driver.get(f"{airflow.base_url}/maggy/experiments/{run['experiment_id']}/trials/{victim}")
    wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, "#curve canvas"), 30, "the trial's curve"
    )
    driver.save_screenshot(str(shots / "trial-dark.png"))
    driver.execute_script("localStorage.setItem('theme', 'light')")
    driver.get(f"{airflow.base_url}/maggy/experiments")
    driver.save_screenshot(str(shots / "experiments-light.png"))
    assert script_errors(driver) == []


# ---------------------------------------------------------------- the API, same Airflow


def test_a_user_without_edit_permission_may_not_stop(airflow, run):
    token = airflow.token(VIEWER)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{airflow.base_url}/maggy/api/experiments/{run['experiment_id']}"
    for path in (f"{base}/stop", f"{base}/trials/t0000/stop"):
        reply = httpx.post(path, headers=headers, timeout=30)
        assert reply.status_code == 403, (path, reply.status_code, reply.text)
        assert VIEWER in reply.json()["detail"]


def test_a_cookie_post_without_the_csrf_token_is_refused(airflow, run):
    cookies = {"_token": airflow.token()}
    page_url = f"{airflow.base_url}/maggy/experiments/{run['experiment_id']}"
    stop = f"{airflow.base_url}/maggy/api/experiments/{run['experiment_id']}/stop"
    with httpx.Client(cookies=cookies, timeout=30) as client:
        refused = client.post(stop)
        assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
        page = client.get(page_url)
        assert page.status_code == 200
        token = re.search(r'<meta name="maggy-csrf" content="([^"]+)">', page.text).group(1)
        # with the page's token (its cookie now in the jar) the POST gets past the
        # check, to the experiment's state: it has ended
        reply = client.post(stop, headers={"X-Maggy-CSRF": token})
        assert reply.status_code == 409, reply.text


def test_the_json_is_result_json(airflow, run):
    folder = airflow.results_dir / run["experiment_id"]
    wait_for(lambda: (folder / "result.json").exists(), 120, "result.json")
    headers = {"Authorization": f"Bearer {airflow.token()}"}
    reply = httpx.get(
        f"{airflow.base_url}/maggy/api/experiments/{run['experiment_id']}",
        headers=headers,
        timeout=30,
    )
    assert reply.status_code == 200
    assert reply.content == (folder / "result.json").read_bytes()
    listed = httpx.get(
        f"{airflow.base_url}/maggy/api/experiments", headers=headers, timeout=30
    ).json()
    row = next(e for e in listed["experiments"] if e["experiment_id"] == run["experiment_id"])
    assert row["status"] == "stopped" and row["kind"] == "search"
    airflow.wait_run(DAG_ID, run["run_id"], timeout=300)
