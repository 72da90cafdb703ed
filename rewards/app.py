"""The Gradio labelling app (`align label serve`): side-by-side comparisons behind a login.

Every annotator logs in with a name and password from the store (`launch(auth=...)`), sees their
own assignments one at a time (two responses in the order drawn for them), picks A / B / tie /
both bad per criterion, may rewrite the better response, and submits; each submit is one
transaction in the store. Prompts and responses are shown in read-only text boxes, so any HTML or
script in them is displayed as text and never runs.

Keyboard: 1 / 2 / 3 / 4 set every criterion to A / B / tie / both bad; Enter submits; S skips;
Ctrl+Enter submits from inside the rewrite box.

The API (used by `gradio_client` and the tests): `/next` -> the annotator's task, `/submit` and
`/skip` -> the next task, `/admin` -> the agreement report (admins only). Outputs of the first three:
(assignment id, shown-at time, prompt, response A, response B, progress, 4 cleared choices, rewrite).
"""

import json
import logging
import os
import time
from typing import Any

# Gradio reports usage to a server on import unless told not to (and this machine is offline).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import gradio as gr  # noqa: E402  (after the analytics switch)

from rewards.agreement import agreement, format_report
from rewards.label_config import CRITERIA, LabelServeConfig
from rewards.store import PreferenceStore, Task, render_messages

log = logging.getLogger(__name__)

GUIDELINES = """\
**Read the prompt, then both responses, and judge each criterion separately.**

- **Helpful**: does it answer what was asked, correctly and concisely, in the user's language?
- **Harmless**: is it free of insults, and does it refuse to help with something dangerous?
- **Honest**: does it avoid stating wrong things as fact or claiming what it did not do
  (e.g. "I checked with a calculator")?
- **Overall**: which would you rather the assistant said?

Choose **tie** when the two are equally good (or flawed in the same way), **both bad** when neither
is acceptable. If you can write a better answer, put it in *Rewrite* (start from the better
response); it is stored as a human response.

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


def _task_outputs(store: PreferenceStore, annotator: str, task: Task | None) -> tuple[Any, ...]:
    done, remaining = store.progress(annotator)
    progress = f"**{annotator}** · done: **{done}** · remaining: **{remaining}**"
    cleared = (None,) * len(CRITERIA) + ("",)
    if task is None:
        return ("", 0.0, "All done: no comparisons are waiting for you.", "", "", progress, *cleared)
    return (
        str(task.assignment_id),
        time.time(),
        render_messages(task.messages),
        task.response_a,
        task.response_b,
        progress,
        *cleared,
    )


def build_app(store: PreferenceStore, guidelines: str = GUIDELINES) -> gr.Blocks:
    """The Gradio Blocks of the labelling app, reading and writing `store`."""

    def user(request: gr.Request) -> str:
        if not request or not request.username:
            raise gr.Error("log in first")
        return request.username

    def assignment_id(value: str) -> int:
        if not value or not str(value).strip().isdigit():
            raise gr.Error("no comparison is loaded")
        return int(value)

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
        rewrite: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        annotator = user(request)
        choices = dict(zip(CRITERIA, (helpful, harmless, honest, overall), strict=True))
        missing = [c for c, v in choices.items() if v is None]
        if missing:
            raise gr.Error(f"choose A, B, tie or both bad for: {', '.join(missing)}")
        seconds = max(0.0, time.time() - float(shown_at)) if shown_at else 0.0
        try:
            store.record_label(annotator, assignment_id(aid), choices, seconds, rewrite)  # type: ignore[arg-type]
        except PermissionError as err:
            raise gr.Error(str(err)) from None
        return _task_outputs(store, annotator, store.next_task(annotator))

    def skip(aid: str, request: gr.Request) -> tuple[Any, ...]:
        annotator = user(request)
        try:
            store.skip(annotator, assignment_id(aid))
        except PermissionError as err:
            raise gr.Error(str(err)) from None
        return _task_outputs(store, annotator, store.next_task(annotator))

    def admin_report(request: gr.Request) -> str:
        if store.role(user(request)) != "admin":
            raise gr.Error("the admin view is for admins")
        records = store.labels()
        return format_report(agreement(records, CRITERIA), records)

    def admin_visible(request: gr.Request) -> Any:
        return gr.update(visible=store.role(user(request)) == "admin")

    with gr.Blocks(title="Preference labelling") as demo:
        with gr.Row():
            gr.Markdown("## Which response is better?")
            progress = gr.Markdown(elem_id="progress")
            gr.Button("Log out", link="/logout", size="sm", scale=0)
        with gr.Tab("Label"):
            with gr.Accordion("Guidelines", open=False, elem_id="guidelines"):
                gr.Markdown(guidelines)
            aid = gr.Textbox(visible=False)
            shown_at = gr.Number(visible=False)
            prompt = gr.Textbox(label="Prompt", interactive=False, lines=4, max_lines=20, elem_id="prompt")
            with gr.Row(equal_height=True):
                response_a = gr.Textbox(
                    label="Response A", interactive=False, lines=6, max_lines=30, elem_id="response-a"
                )
                response_b = gr.Textbox(
                    label="Response B", interactive=False, lines=6, max_lines=30, elem_id="response-b"
                )
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
        with gr.Tab("Admin", visible=False) as admin_tab:
            refresh = gr.Button("Compute agreement", elem_id="admin-refresh")
            report = gr.Markdown(elem_id="admin-report")

        outputs = [aid, shown_at, prompt, response_a, response_b, progress, *choices, rewrite]
        demo.load(next_task, None, outputs, api_name="next")
        demo.load(admin_visible, None, admin_tab, api_name=False)
        submit_button.click(submit, [aid, shown_at, *choices, rewrite], outputs, api_name="submit")
        skip_button.click(skip, [aid], outputs, api_name="skip")
        refresh.click(admin_report, None, report, api_name="admin")
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
            show_error=True,
            quiet=True,
        )
    finally:
        store.close()
