"""The labelling app, end to end: a real `align label serve` process over a real SQLite store, driven
by Debian's headless Chromium (Playwright) and by `gradio_client`."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import pytest
from conftest import REPO, free_port

from rewards.store import Label, PreferenceStore, Response

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS_PROMPT = 'Is this safe? <script>window.__xss = "script ran"</script> <img src="x" onerror="window.__xss = \'img ran\'">'
CROWD = [f"ann{i:02d}" for i in range(20)]
LABELS_EACH = 50
# gradio_client makes a fresh httpx request per call; with verification on, each builds an SSL
# context from the CA bundle (~50 ms CPU) although the app is plain HTTP on loopback.


class AppServer:
    """`align label serve` in a subprocess; `restart()` kills it hard and starts it again."""

    def __init__(self, store_url: str) -> None:
        self.store_url, self.port = store_url, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "align.cli", "label", "serve", "--store", self.store_url]
        command += ["--port", str(self.port)]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"label serve exited: {self.process.stdout.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("label serve did not come up") from None
                time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, so only what the store committed survives."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    """The session's one app server: a store with a browser annotator (admin), a second annotator,
    twenty crowd annotators with 50 assignments each (500 comparisons, overlap 2)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('label-app') / 'labels.sqlite'}"
    store = PreferenceStore(url)
    store.add_annotator("alice", "alice-pw", "admin")
    store.add_annotator("bob", "bob-pw")
    browser_ids = store.add_comparisons(
        [
            (
                [{"role": "user", "content": XSS_PROMPT}],
                [{"text": "<b>bold?</b> No, it is not.", "model": "m1"}, {"text": "Yes.", "model": "m2"}],
            ),
            ([{"role": "user", "content": "What is 2 + 3?"}], [{"text": "2 + 3 = 5."}, {"text": "It is 6."}]),
            ([{"role": "user", "content": "Say hi."}], [{"text": "Hi!"}, {"text": "No."}]),
        ]
    )
    store.assign(overlap=2, annotators=["alice", "bob"], seed=1, comparisons=browser_ids)
    for name in CROWD:
        store.add_annotator(name, f"{name}-pw")
    crowd = [
        ([{"role": "user", "content": f"What is {i} + 1?"}], [{"text": f"{i + 1}."}, {"text": f"{i + 2}."}])
        for i in range(len(CROWD) * LABELS_EACH // 2)
    ]
    store.assign(overlap=2, annotators=CROWD, seed=2, comparisons=store.add_comparisons(crowd))
    store.close()
    server = AppServer(url)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def log_in(browser, app: AppServer, name: str, password: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(app.url)
    page.locator("input[type=text]").first.fill(name)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#prompt textarea")
    page.wait_for_function("document.querySelector('#prompt textarea').value.length > 0")
    return page


def wait_done(page, done: int) -> None:
    page.wait_for_function(f"document.querySelector('#progress').innerText.includes('done: {done}')")


def test_browser_labels_by_keyboard_and_mouse_and_rewrites(app: AppServer, browser) -> None:
    page = log_in(browser, app, "alice", "alice-pw")
    first_a = page.locator("#response-a textarea").input_value()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("2")  # every criterion: B
    page.keyboard.press("Enter")
    wait_done(page, 1)

    second_a = page.locator("#response-a textarea").input_value()
    page.locator("#choice-helpful").get_by_text("A is better").click()
    page.locator("#choice-harmless").get_by_text("Tie").click()
    page.locator("#choice-honest").get_by_text("Both bad").click()
    page.locator("#choice-overall").get_by_text("A is better").click()
    page.locator("#rewrite textarea").fill("2 + 3 = 5, because 2 + 3 is five.")
    artefacts = REPO / "test-artifacts"
    artefacts.mkdir(exist_ok=True)
    shot = artefacts / "labelling-app.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    page.locator("#submit").click()
    wait_done(page, 2)

    store = PreferenceStore(app.store_url)
    try:
        labels = [r for r in store.labels() if r.annotator == "alice"]
        with store.transaction() as s:
            rewrite = s.query(Response).filter(Response.text.like("2 + 3 = 5, because%")).one()
            by_id = {label.id: label for label in s.query(Label)}
    finally:
        store.close()
    assert [r.response_a for r in labels] == [first_a, second_a]
    assert labels[0].choices == dict.fromkeys(("helpful", "harmless", "honest", "overall"), "B")
    assert labels[1].choices == {"helpful": "A", "harmless": "tie", "honest": "both_bad", "overall": "A"}
    assert labels[1].rewrite == "2 + 3 = 5, because 2 + 3 is five."
    assert rewrite.annotator_id is not None and rewrite.model is None
    assert by_id[labels[1].label_id].rewrite_response_id == rewrite.id
    assert labels[1].seconds > 0
    page.close()


def test_browser_admin_view_shows_agreement(app: AppServer, browser) -> None:
    page = log_in(browser, app, "alice", "alice-pw")
    page.get_by_role("tab", name="Admin").click()
    page.locator("#admin-refresh").click()
    page.wait_for_selector('#admin-report :text("Krippendorff\'s alpha")')
    page.close()


def test_browser_shows_html_and_script_in_a_prompt_as_text(app: AppServer, browser) -> None:
    page = log_in(browser, app, "bob", "bob-pw")
    assert XSS_PROMPT in page.locator("#prompt textarea").input_value()
    assert (
        "<b>bold?</b>"
        in page.locator("#response-a textarea").input_value()
        + page.locator("#response-b textarea").input_value()
    )
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("b:text('bold?')").count() == 0
    page.close()


def test_browser_skip_by_keyboard_moves_on_and_hides_the_admin_view_from_annotators(
    app: AppServer, browser
) -> None:
    page = log_in(browser, app, "bob", "bob-pw")
    before = page.locator("#prompt textarea").input_value()
    assert "done: 0 · remaining: 3" in page.locator("#progress").inner_text()
    assert page.get_by_role("tab", name="Admin").count() == 0
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("s")
    page.wait_for_function("document.querySelector('#progress').innerText.includes('remaining: 2')")
    page.wait_for_function(
        "(before) => document.querySelector('#prompt textarea').value !== before", arg=before
    )
    page.close()


def test_unauthenticated_requests_are_refused(app: AppServer) -> None:
    import requests
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    assert requests.get(f"{app.url}/config", timeout=10).status_code == 401
    call = requests.post(f"{app.url}/gradio_api/call/next", json={"data": []}, timeout=10)
    assert call.status_code == 401
    with pytest.raises(AuthenticationError):
        Client(app.url, verbose=False, ssl_verify=False)
    with pytest.raises((AuthenticationError, ValueError), match="Could not login"):
        Client(app.url, auth=("bob", "wrong"), verbose=False, ssl_verify=False)


def test_an_annotator_cannot_change_another_annotators_label(app: AppServer) -> None:
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    victim = Client(app.url, auth=("ann19", "ann19-pw"), verbose=False, ssl_verify=False)
    task = victim.predict(api_name="/next")
    victim.predict(task[0], task[1], "A", "A", "A", "A", "", api_name="/submit")
    attacker = Client(app.url, auth=("bob", "bob-pw"), verbose=False, ssl_verify=False)
    with pytest.raises(AppError, match="not assigned to 'bob'"):
        attacker.predict(task[0], 0, "B", "B", "B", "B", "mine now", api_name="/submit")
    with pytest.raises(AppError, match="admins"):
        attacker.predict(api_name="/admin")
    store = PreferenceStore(app.store_url)
    try:
        (label,) = [r for r in store.labels() if r.annotator == "ann19"]
    finally:
        store.close()
    assert label.choices == dict.fromkeys(("helpful", "harmless", "honest", "overall"), "A")
    assert label.rewrite is None


def test_twenty_concurrent_annotators_store_every_label_once_across_a_restart(app: AppServer) -> None:
    from gradio_client import Client

    choices = ["A", "B", "tie", "both_bad"]
    store = PreferenceStore(app.store_url)
    before = Counter(r.annotator for r in store.labels())
    store.close()

    def label(name: str, count: int, errors: list[BaseException]) -> None:
        try:
            client = Client(app.url, auth=(name, f"{name}-pw"), verbose=False, ssl_verify=False)
            task = client.predict(api_name="/next")
            for i in range(count):
                picks = [choices[(i + j) % 4] for j in range(4)]
                task = client.predict(task[0], task[1], *picks, "", api_name="/submit")
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    def run_all(count_of: dict[str, int]) -> None:
        errors: list[BaseException] = []
        threads = [threading.Thread(target=label, args=(n, c, errors)) for n, c in count_of.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]

    half = LABELS_EACH // 2
    run_all({name: half - before[name] for name in CROWD})
    app.kill()
    store = PreferenceStore(app.store_url)
    assert Counter(r.annotator for r in store.labels() if r.annotator in CROWD) == dict.fromkeys(CROWD, half)
    store.close()

    app.start()
    run_all(dict.fromkeys(CROWD, LABELS_EACH - half))
    store = PreferenceStore(app.store_url)
    try:
        crowd = [r for r in store.labels() if r.annotator in CROWD]
        progress = {name: store.progress(name) for name in CROWD}
    finally:
        store.close()
    assert len(crowd) == len(CROWD) * LABELS_EACH == 1000
    assert len({(r.annotator, r.comparison_id) for r in crowd}) == 1000
    assert Counter(r.annotator for r in crowd) == dict.fromkeys(CROWD, LABELS_EACH)
    assert Counter(r.comparison_id for r in crowd) == dict.fromkeys({r.comparison_id for r in crowd}, 2)
    assert progress == dict.fromkeys(CROWD, (LABELS_EACH, 0))
