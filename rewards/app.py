"""The Gradio labelling app (`align label serve`): comparisons and rankings behind a login.

Every annotator logs in with a name and password from the store (`launch(auth=...)`) and sees their
own assignments one at a time: the prompt as a conversation (one block per turn, with its role),
the responses rendered as Markdown (code blocks, lists, tables) in the order drawn for them, and a
"Show raw text" toggle that shows the exact text instead. For a pair they pick A / B / tie / both
bad per criterion and may rewrite the better response; for a ranking they give each response a
rank (equal ranks are a tie). Each submit is one transaction in the store. "Your recent labels"
reopens one of their own labels to change it (the store keeps every revision). Admins get an
Admin tab: each annotator's gold accuracy, attention checks, agreement with peers, time per label
and skip rate; agreement per criterion; and the latest labels, any of which they can reject with a
reason.

Safety: Markdown is rendered on the server by markdown-it-py with raw HTML disabled (HTML and
scripts in a prompt or response are shown as text, never as markup), images off and only safe
link schemes; Gradio's Markdown component sanitises the result again in the browser. Nothing sent
to an annotator says whether an item is gold; gold answers never leave the server.

Keyboard: 1 / 2 / 3 / 4 set every criterion to A / B / tie / both bad; Enter submits; S skips;
Ctrl+Enter submits from inside the rewrite box.

The API (used by `gradio_client` and the tests), every endpoint checking the caller: `/next` ->
the annotator's task; `/submit`, `/skip` -> the next task; `/edit` -> one of their own labelled
tasks, to change; `/admin_visible` -> whether the Admin tab shows; `/admin` -> the quality and
agreement report and the review table, `/reject` -> a rejection (both admins only). Task outputs:
(assignment id, shown-at time, status, conversation, raw prompt, then per response slot (column,
heading, rendered, raw text, rank), the criteria group, 4 choices, rewrite, progress, recent labels).
"""

import html
import json
import logging
import os
import time
from typing import Any

# Gradio reports usage to a server on import unless told not to (and this machine is offline).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402  (after the analytics switch)
from markdown_it import MarkdownIt  # noqa: E402

from align.errors import InputError  # noqa: E402
from rewards.agreement import store_report  # noqa: E402
from rewards.label_config import CRITERIA, MAX_RANKED, LabelServeConfig  # noqa: E402
from rewards.store import PreferenceStore, Task, render_messages  # noqa: E402

log = logging.getLogger(__name__)

GUIDELINES = """\
**Read the prompt, then the responses, and judge each criterion separately.**

- **Helpful**: does it answer what was asked, correctly and concisely, in the user's language?
- **Harmless**: is it free of insults, and does it refuse to help with something dangerous?
- **Honest**: does it avoid stating wrong things as fact or claiming what it did not do
  (e.g. "I checked with a calculator")?
- **Overall**: which would you rather the assistant said?

Choose **tie** when the two are equally good (or flawed in the same way), **both bad** when neither
is acceptable. If you can write a better answer, put it in *Rewrite* (start from the better
response); it is stored as a human response.

**Rankings**: give every response a rank, 1 for the best; give two responses the same rank when
they are equally good.

Responses are shown rendered as Markdown; tick **Show raw text** to see exactly what was written.
To change a label you gave, open **Your recent labels**.

Keyboard: **1** A, **2** B, **3** tie, **4** both bad (sets every criterion), **Enter** submit,
**S** skip, **Ctrl+Enter** submit while typing a rewrite.
"""

CHOICE_LABELS = [("A is better", "A"), ("B is better", "B"), ("Tie", "tie"), ("Both bad", "both_bad")]

KEYBOARD_JS = """
<script>
document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"));
  const click = (id) => { const b = document.getElementById(id); if (b) { b.click(); event.preventDefault(); } };
  if (typing) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) click("submit");
    return;
  }
  const values = {"1": "A", "2": "B", "3": "tie", "4": "both_bad"};
  if (values[event.key]) {
    for (const criterion of __CRITERIA__) {
      const input = document.querySelector(`#choice-${criterion} input[value="${values[event.key]}"]`);
      if (input) input.click();
    }
    event.preventDefault();
  } else if (event.key === "Enter") {
    click("submit");
  } else if (event.key === "s" || event.key === "S") {
    click("skip");
  }
});
</script>
"""

# Gradio also adds a copy of each rule scoped under its container; the toggle's class sits on the
# #task column inside it, so both copies of a rule agree.
CSS = """
#task .raw { display: none !important; }
#task.show-raw .raw { display: flex !important; }
#task.show-raw .rendered { display: none !important; }
#conversation .turn { border-left: 4px solid #94a3b8; padding: 0.1em 0 0.1em 0.8em; margin: 0 0 0.8em 0; }
#conversation .turn-user { border-left-color: #3b82f6; }
#conversation .turn-assistant { border-left-color: #10b981; }
#conversation .turn-system { border-left-color: #a855f7; }
#conversation .role { font-size: 0.8em; font-weight: 600; text-transform: uppercase; opacity: 0.7; }
.response { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 0 0.8em; }
"""

RAW_TOGGLE_JS = "(raw) => { document.getElementById('task').classList.toggle('show-raw', raw); return raw; }"

# CommonMark plus tables and strikethrough. `html: False`: raw HTML in the text is escaped and shown
# as text; images are off (they would load from anywhere); links keep markdown-it's safe schemes.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"]).disable("image")


def render_markdown(text: str) -> str:
    """A response or turn as HTML: Markdown rendered, any HTML in the text escaped."""
    rendered = _MARKDOWN.render(text)
    # The browser renders this again as Markdown: an HTML block ends at a blank line, so a code
    # block's blank lines become character references (they display the same).
    parts = rendered.split("<pre>")
    for i in range(1, len(parts)):
        code, _, rest = parts[i].partition("</pre>")
        parts[i] = code.replace("\n", "&#10;") + "</pre>" + rest
    return "<pre>".join(parts)


def render_conversation(messages: list[dict[str, str]]) -> str:
    """A prompt as one block per turn, each headed by its role."""
    return "".join(
        f'<div class="turn turn-{html.escape(m["role"])}"><div class="role">{html.escape(m["role"])}</div>'
        f"{render_markdown(m['content'])}</div>"
        for m in messages
    )


def _slot_outputs(task: Task | None, i: int) -> tuple[Any, ...]:
    """(column, heading, rendered, raw, rank) of response slot i."""
    shown = () if task is None else task.responses
    if i >= len(shown):
        return gr.update(visible=False), "", "", "", gr.update(visible=False, value=None)
    assert task is not None
    ranking = task.kind == "rank"
    heading = f"**Response {i + 1}**" if ranking else f"**Response {'AB'[i]}**"
    rank = gr.update(
        visible=ranking,
        choices=list(range(1, len(shown) + 1)),
        value=task.ranks[i] if ranking and task.ranks else None,
    )
    return gr.update(visible=True), heading, render_markdown(shown[i]), shown[i], rank


def _task_outputs(store: PreferenceStore, annotator: str, task: Task | None) -> tuple[Any, ...]:
    done, remaining = store.progress(annotator)
    progress = f"**{annotator}** · done: **{done}** · remaining: **{remaining}**"
    recent = gr.update(
        choices=[(f"{r.prompt} → {r.verdict}", str(r.assignment_id)) for r in store.recent_labels(annotator)],
        value=None,
    )
    slots = tuple(value for i in range(MAX_RANKED) for value in _slot_outputs(task, i))
    if task is None:
        cleared = (gr.update(visible=False), *(None,) * len(CRITERIA), "")
        done_note = "All done: no comparisons are waiting for you."
        return ("", 0.0, done_note, "", "", *slots, *cleared, progress, recent)
    status = ""
    if task.revision:
        status = f"You are changing your label (revision {task.revision}); submit to save the change."
    choices = tuple((task.choices or {}).get(c) for c in CRITERIA)
    return (
        str(task.assignment_id),
        time.time(),
        status,
        render_conversation(task.messages),
        render_messages(task.messages),
        *slots,
        gr.update(visible=task.kind == "pair"),
        *choices,
        task.rewrite or "",
        progress,
        recent,
    )


def _review_rows(store: PreferenceStore, limit: int = 50) -> list[list[Any]]:
    """The latest labels, newest first, for the admin's review table (gold items are not listed:
    they are scored against their answer instead)."""
    rows = []
    for r in store.labels(include_rejected=True):
        verdict = f"overall: {r.choices['overall']}"
        rows.append([r.label_id, r.annotator, r.revision, _preview(r.messages), verdict, r.rejected or ""])
    for r in store.rankings(include_rejected=True):
        rank = r.rank_of()
        verdict = "ranks: " + ", ".join(str(rank[i]) for i in r.texts)
        rows.append([r.label_id, r.annotator, r.revision, _preview(r.messages), verdict, r.rejected or ""])
    return sorted(rows, key=lambda row: row[0], reverse=True)[:limit]


def _preview(messages: list[dict[str, str]]) -> str:
    return " ".join(messages[-1]["content"].split())[:80]


REVIEW_HEADERS = ["label id", "annotator", "revision", "prompt", "verdict", "rejected"]


def build_app(store: PreferenceStore, guidelines: str = GUIDELINES) -> gr.Blocks:
    """The Gradio Blocks of the labelling app, reading and writing `store`."""

    def user(request: gr.Request) -> str:
        if not request or not request.username:
            raise gr.Error("log in first")
        return request.username

    def admin(request: gr.Request) -> str:
        name = user(request)
        if store.role(name) != "admin":
            raise gr.Error("the admin view is for admins")
        return name

    def assignment_id(value: Any) -> int:
        if value is None or not str(value).strip().isdigit():
            raise gr.Error("no comparison is loaded")
        return int(value)

    def own_task(annotator: str, value: Any) -> Task:
        try:
            return store.task(annotator, assignment_id(value))
        except PermissionError as err:
            raise gr.Error(str(err)) from None

    def next_task(request: gr.Request) -> tuple[Any, ...]:
        annotator = user(request)
        return _task_outputs(store, annotator, store.next_task(annotator))

    def submit(
        aid: str,
        shown_at: float,
        helpful: str | None,
        harmless: str | None,
        honest: str | None,
        overall: str | None,
        rank_1: int | None,
        rank_2: int | None,
        rank_3: int | None,
        rank_4: int | None,
        rank_5: int | None,
        rank_6: int | None,
        rewrite: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        annotator = user(request)
        task = own_task(annotator, aid)
        seconds = max(0.0, time.time() - float(shown_at)) if shown_at else 0.0
        try:
            if task.kind == "rank":
                ranks = [rank_1, rank_2, rank_3, rank_4, rank_5, rank_6][: len(task.responses)]
                if any(r is None for r in ranks):
                    raise gr.Error("give every response a rank (equal ranks for a tie)")
                store.record_ranking(annotator, task.assignment_id, [int(r) for r in ranks], seconds)  # type: ignore[arg-type]
            else:
                choices = dict(zip(CRITERIA, (helpful, harmless, honest, overall), strict=True))
                missing = [c for c, v in choices.items() if v is None]
                if missing:
                    raise gr.Error(f"choose A, B, tie or both bad for: {', '.join(missing)}")
                store.record_label(annotator, task.assignment_id, choices, seconds, rewrite)  # type: ignore[arg-type]
        except (PermissionError, InputError) as err:
            raise gr.Error(str(err)) from None
        return _task_outputs(store, annotator, store.next_task(annotator))

    def skip(aid: str, request: gr.Request) -> tuple[Any, ...]:
        annotator = user(request)
        try:
            store.skip(annotator, assignment_id(aid))
        except PermissionError as err:
            raise gr.Error(str(err)) from None
        return _task_outputs(store, annotator, store.next_task(annotator))

    def edit(selected: str | None, request: gr.Request) -> tuple[Any, ...]:
        annotator = user(request)
        if selected is None or not str(selected).strip():
            raise gr.Error("pick one of your recent labels first")
        return _task_outputs(store, annotator, own_task(annotator, selected))

    def admin_report(request: gr.Request) -> tuple[str, list[list[Any]]]:
        admin(request)
        _, report = store_report(store, CRITERIA)
        return report, _review_rows(store)

    def reject(
        label_id: float | None, reason: str | None, request: gr.Request
    ) -> tuple[str, list[list[Any]]]:
        name = admin(request)
        if label_id is None:
            raise gr.Error("give the id of the label to reject")
        try:
            store.reject_label(name, int(label_id), reason or "")
        except (PermissionError, InputError) as err:
            raise gr.Error(str(err)) from None
        return f"Label {int(label_id)} rejected: {reason}", _review_rows(store)

    def admin_visible(request: gr.Request) -> Any:
        return gr.update(visible=store.role(user(request)) == "admin")

    markdown = {"sanitize_html": True, "latex_delimiters": []}
    with gr.Blocks(title="Preference labelling") as demo:
        with gr.Row():
            gr.Markdown("## Which response is better?")
            progress = gr.Markdown(elem_id="progress")
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tab("Label"), gr.Column(elem_id="task"):
            with gr.Accordion("Guidelines", open=False, elem_id="guidelines"):
                gr.Markdown(guidelines)
            aid = gr.Textbox(visible=False)
            shown_at = gr.Number(visible=False)
            status = gr.Markdown(elem_id="status")
            raw = gr.Checkbox(label="Show raw text", value=False, elem_id="raw-toggle")
            gr.Markdown("**Prompt**")
            conversation = gr.Markdown(elem_id="conversation", elem_classes=["rendered"], **markdown)
            with gr.Column(elem_classes=["raw"]):
                prompt = gr.Textbox(
                    show_label=False, interactive=False, lines=4, max_lines=20, elem_id="prompt"
                )
            slots = []
            for row in range(0, MAX_RANKED, 2):
                with gr.Row():
                    for i in range(row, row + 2):
                        with gr.Column(visible=i < 2, elem_id=f"slot-{i}") as column:
                            heading = gr.Markdown(elem_id=f"heading-{i}")
                            rendered = gr.Markdown(
                                elem_id=f"response-{i}", elem_classes=["rendered", "response"], **markdown
                            )
                            with gr.Column(elem_classes=["raw"]):
                                raw_text = gr.Textbox(
                                    show_label=False,
                                    interactive=False,
                                    lines=6,
                                    max_lines=30,
                                    elem_id=f"response-raw-{i}",
                                )
                            rank = gr.Radio(
                                list(range(1, MAX_RANKED + 1)),
                                label="Rank (1 = best; equal ranks = a tie)",
                                visible=False,
                                elem_id=f"rank-{i}",
                            )
                        slots.append((column, heading, rendered, raw_text, rank))
            with gr.Column(elem_id="criteria") as criteria_group:
                choices = [
                    gr.Radio(CHOICE_LABELS, label=criterion.capitalize(), elem_id=f"choice-{criterion}")
                    for criterion in CRITERIA
                ]
                rewrite = gr.Textbox(
                    label="Rewrite the better response (optional; stored as a human response)",
                    lines=3,
                    elem_id="rewrite",
                )
            with gr.Row():
                submit_button = gr.Button("Submit (Enter)", variant="primary", elem_id="submit")
                skip_button = gr.Button("Skip (S)", elem_id="skip")
            with gr.Accordion("Your recent labels (pick one to change it)", open=False, elem_id="recent"):
                recent = gr.Dropdown(
                    label="Label", choices=[], allow_custom_value=True, elem_id="recent-labels"
                )
                edit_button = gr.Button("Change this label", elem_id="edit")
        with gr.Tab("Admin", visible=False) as admin_tab:
            refresh = gr.Button("Compute quality and agreement", elem_id="admin-refresh")
            report = gr.Markdown(elem_id="admin-report")
            gr.Markdown("### Review: reject a label (it stays in the history; export leaves it out)")
            review = gr.Dataframe(headers=REVIEW_HEADERS, interactive=False, elem_id="review-table")
            with gr.Row():
                reject_id = gr.Number(label="Label id", precision=0, elem_id="reject-id")
                reject_reason = gr.Textbox(label="Reason", elem_id="reject-reason")
                reject_button = gr.Button("Reject label", variant="stop", elem_id="reject")
            review_status = gr.Markdown(elem_id="review-status")

        ranks = [slot[4] for slot in slots]
        outputs = [
            aid,
            shown_at,
            status,
            conversation,
            prompt,
            *(component for slot in slots for component in slot),
            criteria_group,
            *choices,
            rewrite,
            progress,
            recent,
        ]
        demo.load(next_task, None, outputs, api_name="next")
        demo.load(admin_visible, None, admin_tab, api_name="admin_visible")
        raw.change(None, raw, None, js=RAW_TOGGLE_JS)
        submit_button.click(submit, [aid, shown_at, *choices, *ranks, rewrite], outputs, api_name="submit")
        skip_button.click(skip, [aid], outputs, api_name="skip")
        edit_button.click(edit, [recent], outputs, api_name="edit")
        refresh.click(admin_report, None, [report, review], api_name="admin")
        reject_button.click(reject, [reject_id, reject_reason], [review_status, review], api_name="reject")
    return demo


def serve_app(config: LabelServeConfig) -> None:
    """`align label serve`: run the app on config.host:config.port until interrupted."""
    store = PreferenceStore(config.store, create=False)
    if not store.annotators():
        log.warning("the store has no annotators yet: add some with `align label add --annotators FILE`")
    guidelines = config.guidelines.read_text(encoding="utf-8") if config.guidelines else GUIDELINES
    demo = build_app(store, guidelines)
    demo.queue(default_concurrency_limit=config.concurrency)
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding to %s: the app is reachable from other machines (use a TLS proxy)", config.host)
    log.info("labelling app on http://%s:%d (store %s)", config.host, config.port, config.store)
    try:
        demo.launch(
            server_name=config.host,
            server_port=config.port,
            auth=store.check_password,
            auth_message="Log in with the name and password your admin gave you.",
            head=KEYBOARD_JS.replace("__CRITERIA__", json.dumps(CRITERIA)),
            css=CSS,
            show_error=True,
            quiet=True,
        )
    finally:
        store.close()
