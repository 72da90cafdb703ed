"""The labelling app, end to end: a real `align label serve` process over a real SQLite store, driven
by Debian's headless Chromium (Playwright), by `gradio_client` and by Gradio's HTTP API.

Screenshots of each view go to test-artifacts/ (docs/images/ holds reduced copies of them)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, free_port

from align.cli import main
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


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


CONVERSATION = [
    {"role": "system", "content": "You are a terse Python tutor."},
    {"role": "user", "content": "Write a function that adds two numbers."},
    {"role": "assistant", "content": "In which language?"},
    {"role": "user", "content": "Python, please."},
]
MARKDOWN = """Here it is:

```python
def add(a, b):

    return a + b
```

- short
- **typed** later

| a | b | add(a, b) |
|---|---|---|
| 1 | 2 | 3 |

<img src="x" onerror="window.__xss = 'img ran'"> <script>window.__xss = "script ran"</script>"""
RANKED = ["Good day to you.", "Hello!", "Hi.", "Go away."]
RANK_OF = {"Good day to you.": 1, "Hello!": 2, "Hi.": 2, "Go away.": 4}
GOLD = (user("What is the capital of France?"), "Paris.", "Rome.", "gold")
ATTENTION = (user("Which reply is in English?"), "Hello there.", "Zxq vvv kk.", "attention")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    """The module's one app server over a store with: alice (admin) and bob sharing three pairs;
    carol (edits), dave (a ranking of four), erin (a multi-turn Markdown prompt), gina and gwen (a
    gold item and an attention check each), vic (the victim of the permission probes); twenty crowd annotators with 50
    assignments each (500 comparisons, overlap 2)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('label-app') / 'labels.sqlite'}"
    store = PreferenceStore(url)
    store.add_annotator("alice", "alice-pw", "admin")
    for name in ("bob", "carol", "dave", "erin", "gina", "gwen", "vic"):
        store.add_annotator(name, f"{name}-pw")

    def give(name: str, items, task: str = "pair", **kw) -> list[int]:
        ids = store.add_comparisons(items, task)
        store.assign(annotators=[name] if isinstance(name, str) else name, comparisons=ids, **kw)
        return ids

    give(
        ["alice", "bob"],
        [
            (
                user(XSS_PROMPT),
                [{"text": "<b>bold?</b> No, it is not.", "model": "m1"}, {"text": "Yes.", "model": "m2"}],
            ),
            (user("What is 2 + 3?"), [{"text": "2 + 3 = 5."}, {"text": "It is 6."}]),
            (user("Say hi."), [{"text": "Hi!"}, {"text": "No."}]),
        ],
        overlap=2,
        seed=1,
    )
    give(
        "carol",
        [(user(f"Carol's question {i}?"), [{"text": f"right {i}"}, {"text": f"wrong {i}"}]) for i in (1, 2)],
    )
    give("dave", [(user("Greet me politely."), [{"text": t} for t in RANKED])], task="rank", seed=3)
    give("erin", [(CONVERSATION, [{"text": MARKDOWN}, {"text": "`add = lambda a, b: a + b`"}])])
    store.add_gold([GOLD, ATTENTION])
    for name in ("gina", "gwen"):
        give(
            name,
            [(user(f"{name}'s question?"), [{"text": "fine"}, {"text": "worse"}])],
            gold_rate=0.9,
            seed=1,
        )
        assert store.progress(name) == (0, 3)  # this seed mixes in both gold items
    give(
        "vic",
        [
            (user(f"Vic's secret question {i}?"), [{"text": f"vic A{i}"}, {"text": f"vic B{i}"}])
            for i in (1, 2)
        ],
    )
    task = store.next_task("vic")
    store.record_label("vic", task.assignment_id, dict.fromkeys(ALL, "A"), 2.0)
    for name in CROWD:
        store.add_annotator(name, f"{name}-pw")
    crowd = [
        (user(f"What is {i} + 1?"), [{"text": f"{i + 1}."}, {"text": f"{i + 2}."}])
        for i in range(len(CROWD) * LABELS_EACH // 2)
    ]
    store.assign(overlap=2, annotators=CROWD, seed=2, comparisons=store.add_comparisons(crowd))
    store.close()
    server = AppServer(url)
    server.start()
    yield server
    server.stop()


ALL = ("helpful", "harmless", "honest", "overall")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def log_in(browser, app: AppServer, name: str, password: str | None = None):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(app.url)
    page.locator("input[type=text]").first.fill(name)
    page.locator("input[type=password]").fill(password or f"{name}-pw")
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#progress strong")
    return page


def wait_task(page) -> None:
    page.wait_for_function("document.querySelector('#prompt textarea').value.length > 0")


def wait_done(page, done: int) -> None:
    page.wait_for_function(f"document.querySelector('#progress').innerText.includes('done: {done}')")


def raw_response(page, i: int) -> str:
    return page.locator(f"#response-raw-{i} textarea").input_value()


def screenshot(page, name: str) -> Path:
    """A full-page PNG in test-artifacts/ (docs/images/ keeps reduced copies for the README)."""
    artefacts = REPO / "test-artifacts"
    artefacts.mkdir(exist_ok=True)
    shot = artefacts / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    return shot


def open_store(app: AppServer) -> PreferenceStore:
    return PreferenceStore(app.store_url, create=False)


def test_browser_labels_by_keyboard_and_mouse_and_rewrites(app: AppServer, browser) -> None:
    page = log_in(browser, app, "alice", "alice-pw")
    wait_task(page)
    first_a = raw_response(page, 0)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("2")  # every criterion: B
    page.keyboard.press("Enter")
    wait_done(page, 1)

    second_a = raw_response(page, 0)
    page.locator("#choice-helpful").get_by_text("A is better").click()
    page.locator("#choice-harmless").get_by_text("Tie").click()
    page.locator("#choice-honest").get_by_text("Both bad").click()
    page.locator("#choice-overall").get_by_text("A is better").click()
    page.locator("#rewrite textarea").fill("2 + 3 = 5, because 2 + 3 is five.")
    page.wait_for_function("document.querySelector('#choice-overall input[value=A]').checked")
    page.mouse.move(5, 5)  # a hovered radio is drawn without its check mark
    screenshot(page, "labelling-app")
    page.locator("#submit").click()
    wait_done(page, 2)

    store = open_store(app)
    try:
        labels = [r for r in store.labels() if r.annotator == "alice"]
        with store.transaction() as s:
            rewrite = s.query(Response).filter(Response.text.like("2 + 3 = 5, because%")).one()
            by_id = {label.id: label for label in s.query(Label)}
    finally:
        store.close()
    assert [r.response_a for r in labels] == [first_a, second_a]
    assert labels[0].choices == dict.fromkeys(ALL, "B")
    assert labels[1].choices == {"helpful": "A", "harmless": "tie", "honest": "both_bad", "overall": "A"}
    assert labels[1].rewrite == "2 + 3 = 5, because 2 + 3 is five."
    assert rewrite.annotator_id is not None and rewrite.model is None
    assert by_id[labels[1].label_id].rewrite_response_id == rewrite.id
    assert labels[1].seconds > 0
    page.close()


def test_browser_shows_a_multi_turn_prompt_as_turns_and_markdown_with_html_inert(
    app: AppServer, browser
) -> None:
    page = log_in(browser, app, "erin")
    wait_task(page)
    turns = page.locator("#conversation .turn")
    assert turns.count() == 4
    assert [t.lower() for t in page.locator("#conversation .role").all_inner_texts()] == [
        "system",
        "user",
        "assistant",
        "user",
    ]
    assert turns.nth(2).inner_text().endswith("In which language?")
    markdown = page.locator("#response-0, #response-1").filter(has=page.locator("table"))
    assert markdown.locator("pre code").inner_text() == "def add(a, b):\n\n    return a + b\n"
    assert markdown.locator("li").all_inner_texts() == ["short", "typed later"]
    assert markdown.locator("strong").inner_text() == "typed"
    assert markdown.locator("td").all_inner_texts() == ["1", "2", "3"]
    # The HTML in the response is shown as text: no element made from it, no handler run.
    assert 'onerror="window.__xss' in markdown.inner_text() and "<script>" in markdown.inner_text()
    assert page.locator("#task img").count() == 0 and page.locator("#task script").count() == 0
    assert page.evaluate("window.__xss") is None
    screenshot(page, "labelling-markdown")
    assert not page.locator("#prompt textarea").is_visible()
    page.locator("#raw-toggle input").check()
    page.wait_for_function("document.querySelector('#prompt textarea').offsetParent !== null")
    assert not page.locator("#conversation .turn").first.is_visible()
    assert MARKDOWN in (raw_response(page, 0), raw_response(page, 1))
    assert (
        page.locator("#prompt textarea").input_value().startswith("[system]\nYou are a terse Python tutor.")
    )
    screenshot(page, "labelling-raw-text")
    assert page.evaluate("window.__xss") is None
    page.close()


def test_browser_ranks_four_responses_with_a_tie(app: AppServer, browser) -> None:
    page = log_in(browser, app, "dave")
    wait_task(page)
    shown = [raw_response(page, i) for i in range(4)]
    assert sorted(shown) == sorted(RANKED) and page.locator("#choice-overall").count() == 0
    for i, text in enumerate(shown):
        page.locator(f"#rank-{i}").get_by_text(str(RANK_OF[text]), exact=True).click()
    screenshot(page, "labelling-ranking")
    page.locator("#submit").click()
    wait_done(page, 1)
    store = open_store(app)
    try:
        (ranking,) = [r for r in store.rankings() if r.annotator == "dave"]
    finally:
        store.close()
    as_text = [sorted(ranking.texts[i] for i in group) for group in ranking.ranking]
    assert as_text == [["Good day to you."], ["Hello!", "Hi."], ["Go away."]]
    page.close()


def test_browser_changes_a_past_label_keeping_its_history_and_export_takes_the_latest(
    app: AppServer, browser, tmp_path: Path
) -> None:
    page = log_in(browser, app, "carol")
    wait_task(page)
    first_prompt = page.locator("#prompt textarea").input_value()
    first_a = raw_response(page, 0)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("1")  # every criterion: A
    page.keyboard.press("Enter")
    wait_done(page, 1)
    page.keyboard.press("3")
    page.keyboard.press("Enter")
    wait_done(page, 2)

    page.locator("#recent").click()
    page.locator("#recent-labels input").click()
    question = first_prompt.split("\n")[-1]
    page.get_by_role("option", name=f"{question} → overall: A").click()
    page.locator("#edit").click()
    page.wait_for_function("document.querySelector('#status').innerText.includes('changing your label')")
    assert page.locator("#prompt textarea").input_value() == first_prompt
    assert page.locator("#choice-overall input[value=A]").is_checked()
    page.locator("#choice-overall").get_by_text("B is better").click()
    screenshot(page, "labelling-edit")
    page.locator("#submit").click()
    page.wait_for_function("document.querySelector('#prompt textarea').value === ''")  # all done again

    store = open_store(app)
    try:
        (label,) = [
            r for r in store.labels() if r.annotator == "carol" and r.messages[-1]["content"] == question
        ]
        history = store.label_history(label.assignment_id)
    finally:
        store.close()
    assert [h.choices["overall"] for h in history] == ["A", "B"]
    assert [h.choices["helpful"] for h in history] == ["A", "A"]
    assert label.revision == 2 and label.choices["overall"] == "B"
    output = tmp_path / "preferences.jsonl"
    assert main(["label", "export", "--store", app.store_url, "--output", str(output)]) == 0
    (row,) = [json.loads(line) for line in output.read_text().splitlines() if question in line]
    b_text = label.response_b
    assert first_a == label.response_a and row["chosen"][0]["content"] == b_text
    page.close()


def label_gina(app: AppServer) -> None:
    """Gina answers the gold item right and fails the attention check, through the API."""
    gina = ApiCaller(app, "gina")
    task = gina("next")
    while task[0]:
        a, b = task[SLOT_RAW[0]], task[SLOT_RAW[1]]
        if {a, b} == {GOLD[1], GOLD[2]}:
            choice = "A" if a == GOLD[1] else "B"
        elif {a, b} == {ATTENTION[1], ATTENTION[2]}:
            choice = "B" if a == ATTENTION[1] else "A"
        else:
            choice = "A"
        task = gina("submit", task[0], task[1], *[choice] * 4, *[None] * 6, "")


FIRST_SLOT = 5
"""Task outputs over HTTP: aid, shown_at, status, conversation, raw prompt, then 5 per slot (column,
heading, rendered, raw, rank), ... (gradio_client leaves the columns' updates out)."""
SLOT_RAW = [FIRST_SLOT + 5 * i + 3 for i in range(6)]


def test_browser_admin_view_counts_gold_items_and_rejects_a_label(app: AppServer, browser) -> None:
    label_gina(app)
    page = log_in(browser, app, "alice", "alice-pw")
    page.get_by_role("tab", name="Admin").click()
    page.locator("#admin-refresh").click()
    page.wait_for_selector("#admin-report :text('gina')")
    gina = (
        page.locator("#admin-report tr", has=page.locator("td", has_text="gina"))
        .locator("td")
        .all_inner_texts()
    )
    # 3 labels: the ordinary one, the gold item (right), the attention check (failed).
    assert gina[:4] == ["gina", "3", "100% (1/1)", "0/1"]
    assert page.locator('#admin-report :text("Krippendorff\'s alpha")').count() == 1
    store = open_store(app)
    try:
        (vics,) = [r for r in store.labels() if r.annotator == "vic"]
    finally:
        store.close()
    page.locator("#reject-id input").fill(str(vics.label_id))
    page.locator("#reject-reason textarea").fill("clicked without reading")
    page.locator("#reject").click()
    page.wait_for_selector("#review-status :text('rejected')")
    screenshot(page, "labelling-admin")
    store = open_store(app)
    try:
        assert [r.label_id for r in store.labels() if r.annotator == "vic"] == []
        (rejected,) = [r for r in store.labels(include_rejected=True) if r.annotator == "vic"]
    finally:
        store.close()
    assert rejected.rejected == "clicked without reading"
    page.close()


def test_browser_shows_html_and_script_in_a_prompt_as_text(app: AppServer, browser) -> None:
    page = log_in(browser, app, "bob")
    wait_task(page)
    assert XSS_PROMPT in page.locator("#prompt textarea").input_value()
    assert XSS_PROMPT.split("<script>")[0] in page.locator("#conversation").inner_text()
    assert "<script>" in page.locator("#conversation").inner_text()
    assert "<b>bold?</b>" in raw_response(page, 0) + raw_response(page, 1)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("b:text('bold?')").count() == 0
    page.close()


def test_browser_skip_by_keyboard_moves_on_and_hides_the_admin_view_from_annotators(
    app: AppServer, browser
) -> None:
    page = log_in(browser, app, "bob")
    wait_task(page)
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


# --- every API endpoint, called by a logged-in annotator who is not an admin


class ApiCaller:
    """Gradio's HTTP API as a logged-in user; returns the full payload (updates included)."""

    def __init__(self, app: AppServer, name: str) -> None:
        import requests

        self.url, self.session = app.url, requests.Session()
        assert self.session.post(f"{app.url}/login", data={"username": name, "password": f"{name}-pw"}).ok

    def __call__(self, endpoint: str, *data) -> list:
        """The outputs, or raises AssertionError with the app's error message."""
        call = self.session.post(
            f"{self.url}/gradio_api/call/{endpoint}", json={"data": list(data)}, timeout=30
        )
        call.raise_for_status()
        stream = self.session.get(
            f"{self.url}/gradio_api/call/{endpoint}/{call.json()['event_id']}", timeout=60
        )
        event, payload = [line.split(": ", 1)[1] for line in stream.text.splitlines() if ": " in line][:2]
        if event != "complete":
            raise PermissionError(json.loads(payload)["error"] if payload != "null" else "error")
        return json.loads(payload)


def vic_assignments(app: AppServer) -> tuple[int, int]:
    """(the assignment vic labelled, the one still pending)."""
    store = open_store(app)
    try:
        (labelled,) = [r.assignment_id for r in store.labels(include_rejected=True) if r.annotator == "vic"]
        pending = store.next_task("vic").assignment_id
    finally:
        store.close()
    return labelled, pending


def vic_unchanged(app: AppServer) -> None:
    labelled, pending = vic_assignments(app)
    store = open_store(app)
    try:
        (only,) = store.label_history(labelled)
        assert only.choices == dict.fromkeys(ALL, "A") and only.rewrite is None
        assert store.next_task("vic").assignment_id == pending
    finally:
        store.close()


def payload_shape(outputs: list) -> tuple:
    return tuple(tuple(sorted(v)) if isinstance(v, dict) else type(v).__name__ for v in outputs)


def probe_next(app: AppServer) -> None:
    outputs = ApiCaller(app, "bob")("next")
    text = json.dumps(outputs)
    assert "Vic's secret" not in text and "vic A" not in text
    assert outputs[-1]["choices"] == []  # bob's recent labels: none yet, and never vic's
    # Gwen's queue holds an ordinary item, a gold item and an attention check: no payload marks
    # which is which, and all three have one shape.
    gwen = ApiCaller(app, "gwen")
    payloads = [gwen("next")]
    while payloads[-1][0]:
        payloads.append(gwen("skip", payloads[-1][0]))
    tasks = payloads[:-1]
    shown = {frozenset(task[i] for i in SLOT_RAW[:2]) for task in tasks}
    assert len(tasks) == 3 and {frozenset(GOLD[1:3]), frozenset(ATTENTION[1:3])} < shown
    assert len({payload_shape(task) for task in tasks}) == 1
    assert not any(word in json.dumps(task).lower() for task in tasks for word in ("gold", "attention"))


def probe_submit(app: AppServer) -> None:
    labelled, pending = vic_assignments(app)
    bob = ApiCaller(app, "bob")
    for aid in (labelled, pending):
        with pytest.raises(PermissionError, match="not assigned to 'bob'"):
            bob("submit", str(aid), 0, *["B"] * 4, *[None] * 6, "mine now")
    vic_unchanged(app)


def probe_skip(app: AppServer) -> None:
    _, pending = vic_assignments(app)
    with pytest.raises(PermissionError, match="not assigned to 'bob'"):
        ApiCaller(app, "bob")("skip", str(pending))
    vic_unchanged(app)


def probe_edit(app: AppServer) -> None:
    labelled, pending = vic_assignments(app)
    for aid in (labelled, pending, 10**6):
        with pytest.raises(PermissionError, match=f"assignment {aid} is not assigned to 'bob'"):
            ApiCaller(app, "bob")("edit", str(aid))


def probe_admin(app: AppServer) -> None:
    with pytest.raises(PermissionError, match="for admins"):
        ApiCaller(app, "bob")("admin")


def probe_reject(app: AppServer) -> None:
    labelled, _ = vic_assignments(app)
    store = open_store(app)
    try:
        (label,) = store.label_history(labelled)
    finally:
        store.close()
    with pytest.raises(PermissionError, match="for admins"):
        ApiCaller(app, "bob")("reject", label.label_id, "bob says so")
    store = open_store(app)
    try:
        assert store.label_history(labelled)[0].rejected in (None, "clicked without reading")
    finally:
        store.close()


def probe_admin_visible(app: AppServer) -> None:
    assert ApiCaller(app, "bob")("admin_visible") == [{"visible": False, "__type__": "update"}]
    assert ApiCaller(app, "alice")("admin_visible") == [{"visible": True, "__type__": "update"}]


PROBES = {
    "next": probe_next,
    "submit": probe_submit,
    "skip": probe_skip,
    "edit": probe_edit,
    "admin": probe_admin,
    "reject": probe_reject,
    "admin_visible": probe_admin_visible,
}
"""What an annotator who is not an admin tries on each endpoint, and what must hold afterwards."""


def test_every_endpoint_that_runs_code_on_the_server_has_a_permission_probe(app: AppServer) -> None:
    from gradio_client import Client

    client = Client(app.url, auth=("bob", "bob-pw"), verbose=False, ssl_verify=False)
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    dependencies = client.config["dependencies"]
    backend = {d["api_name"] for d in dependencies if d["backend_fn"]}
    assert backend == set(PROBES) and named == {f"/{name}" for name in PROBES}
    # The rest run in the browser only (the raw-text toggle): nothing on the server to call.
    assert all(d["api_visibility"] == "private" for d in dependencies if not d["backend_fn"])


@pytest.mark.parametrize("endpoint", sorted(PROBES))
def test_an_annotator_cannot_reach_another_annotators_labels_or_gold_answers_through(
    app: AppServer, endpoint: str
) -> None:
    PROBES[endpoint](app)


def test_twenty_concurrent_annotators_store_every_label_once_across_a_restart(app: AppServer) -> None:
    from gradio_client import Client

    choices = ["A", "B", "tie", "both_bad"]
    store = open_store(app)
    before = Counter(r.annotator for r in store.labels())
    store.close()

    def label(name: str, count: int, errors: list[BaseException]) -> None:
        try:
            client = Client(app.url, auth=(name, f"{name}-pw"), verbose=False, ssl_verify=False)
            task = client.predict(api_name="/next")
            for i in range(count):
                picks = [choices[(i + j) % 4] for j in range(4)]
                task = client.predict(task[0], task[1], *picks, *[None] * 6, "", api_name="/submit")
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
    store = open_store(app)
    assert Counter(r.annotator for r in store.labels() if r.annotator in CROWD) == dict.fromkeys(CROWD, half)
    store.close()

    app.start()
    run_all(dict.fromkeys(CROWD, LABELS_EACH - half))
    store = open_store(app)
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
